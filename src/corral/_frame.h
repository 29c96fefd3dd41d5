/* Frame helpers shared by corral's C extensions (_speedups.c, _hotpath.c): masking (RFC 6455
 * 5.3), and reading and writing the frame header (5.2). Every header rule of 5.2 is checked
 * in parse_frame_header and nowhere else in C (its pure twin: corral._pure.parse_frames).
 * Included, not linked: each extension gets its own static copy. */
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

/* A frame header as parse_frame_header read it. */
typedef struct {
    unsigned b0;              /* the first byte: FIN, RSV bits, opcode */
    unsigned opcode;
    uint64_t length;          /* the payload length */
    const unsigned char *key; /* the masking key, inside the parsed buffer, or NULL */
    size_t size;              /* the header's size, masking key included */
} FrameHeader;

/* What parse_frame_header found: a whole header, too few bytes for one, or the first rule
 * the header breaks (each one fails the connection: 1002, or 1009 for FH_TOO_BIG). */
enum {
    FH_OK = 0,
    FH_INCOMPLETE,
    FH_RESERVED_OPCODE,
    FH_CONTROL_TOO_LONG,
    FH_CONTROL_FRAGMENTED,
    FH_LENGTH_HIGH_BIT,
    FH_UNMASKED,
    FH_MASKED,
    FH_TOO_BIG,
};

/* Read the header of the frame at p (avail bytes there) into *h and check it: the rules of
 * 5.2 and 5.5 that hold whatever the extensions, the masking the side requires (5.1:
 * require_mask on a server) and max_frame (< 0: no limit). The header is read whole before
 * any rule is checked, and the rules in this order, so that a stream cut anywhere fails
 * the same way. */
static inline int
parse_frame_header(const unsigned char *p, size_t avail, int require_mask, long long max_frame,
                   FrameHeader *h)
{
    unsigned b1, opcode;
    uint64_t length;
    size_t size;
    const unsigned char *q = p + 2;

    if (avail < 2)
        return FH_INCOMPLETE;
    b1 = p[1];
    length = b1 & 0x7F;
    size = 2u + ((b1 & 0x80) ? 4u : 0u) + (length == 126 ? 2u : length == 127 ? 8u : 0u);
    if (avail < size)
        return FH_INCOMPLETE;
    h->b0 = p[0];
    h->opcode = opcode = p[0] & 0x0F;
    h->size = size;
    /* 5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail_". */
    if ((opcode >= 3 && opcode <= 7) || opcode >= 11)
        return FH_RESERVED_OPCODE;
    /* 5.5: "All control frames MUST have a payload length of 125 bytes or less and MUST NOT
     * be fragmented." */
    if (opcode >= 8) {
        if (length > 125)
            return FH_CONTROL_TOO_LONG;
        if (!(p[0] & 0x80))
            return FH_CONTROL_FRAGMENTED;
    }
    if (length == 126) {
        length = ((uint64_t)q[0] << 8) | q[1];
        q += 2;
    } else if (length == 127) {
        length = 0;
        for (int j = 0; j < 8; j++)
            length = (length << 8) | q[j];
        q += 8;
    }
    h->length = length;
    /* 5.2: "the most significant bit MUST be 0" in the 64-bit form. */
    if (length >> 63)
        return FH_LENGTH_HIGH_BIT;
    /* 5.1: a server MUST close on an unmasked client frame; a client on a masked one. */
    if (!(b1 & 0x80) != !require_mask)
        return require_mask ? FH_UNMASKED : FH_MASKED;
    h->key = (b1 & 0x80) ? q : NULL;
    if (max_frame >= 0 && length > (uint64_t)max_frame)
        return FH_TOO_BIG;
    return FH_OK;
}

#endif /* CORRAL_FRAME_H */
