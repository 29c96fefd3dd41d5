/* Frame helpers shared by corral's C extensions (_speedups.c, _hotpath.c): masking (RFC 6455
 * 5.3) and the frame header (5.2). Included, not linked: each extension gets its own static
 * copy. */
#ifndef CORRAL_FRAME_H
#define CORRAL_FRAME_H

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

/* Size of the header of a frame with an n-byte payload (with the 4-byte masking key when
 * masked). */
static inline size_t
frame_header_size(size_t n, int masked)
{
    return 2u + (n < 126 ? 0u : n < 65536 ? 2u : 8u) + (masked ? 4u : 0u);
}

/* Write the header of a frame: first byte b0 (FIN, RSV, opcode), the mask bit and the
 * minimal length encoding of n; the masking key, if any, is the caller's to append. Returns
 * where the header ends. */
static inline unsigned char *
write_frame_header(unsigned char *out, unsigned b0, size_t n, int masked)
{
    unsigned char mbit = masked ? 0x80 : 0;

    *out++ = (unsigned char)b0;
    if (n < 126) {
        *out++ = (unsigned char)(mbit | n);
    } else if (n < 65536) {
        *out++ = mbit | 126;
        *out++ = (unsigned char)(n >> 8);
        *out++ = (unsigned char)n;
    } else {
        uint64_t len = (uint64_t)n;
        *out++ = mbit | 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            *out++ = (unsigned char)(len >> shift);
    }
    return out;
}

#endif /* CORRAL_FRAME_H */
