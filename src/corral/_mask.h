/* mask_copy: RFC 6455 5.3 masking, shared by corral's C extensions (_speedups.c, _hotpath.c).
 * Included, not linked: each extension gets its own static copy. */
#ifndef CORRAL_MASK_H
#define CORRAL_MASK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* dst[i] = src[i] ^ key[(i + shift) % 4] for i in [0, n). dst and src may be equal.
 *
 * The key is rotated by `shift` and repeated into 8 bytes, then applied one uint64_t at a
 * time. Loads and stores go through memcpy, which is safe at any alignment and compiles to
 * plain (unaligned) moves; XOR works byte by byte, so the host byte order does not matter.
 * Four words per iteration give the compiler room to use vector registers. */
static inline void
mask_copy(unsigned char *dst, const unsigned char *src, size_t n, const unsigned char *key,
          size_t shift)
{
    unsigned char k8[8];
    uint64_t k;
    size_t i = 0;

    for (size_t j = 0; j < 8; j++)
        k8[j] = key[(j + shift) & 3];
    memcpy(&k, k8, 8);

    for (; i + 32 <= n; i += 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, src + i, 8);
        memcpy(&w1, src + i + 8, 8);
        memcpy(&w2, src + i + 16, 8);
        memcpy(&w3, src + i + 24, 8);
        w0 ^= k;
        w1 ^= k;
        w2 ^= k;
        w3 ^= k;
        memcpy(dst + i, &w0, 8);
        memcpy(dst + i + 8, &w1, 8);
        memcpy(dst + i + 16, &w2, 8);
        memcpy(dst + i + 24, &w3, 8);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= k;
        memcpy(dst + i, &w, 8);
    }
    /* i is a multiple of 8 here, so k8[i & 7] continues the same rotation. */
    for (; i < n; i++)
        dst[i] = src[i] ^ k8[i & 7];
}

#endif /* CORRAL_MASK_H */
