/*
 * CRC-32C (Castagnoli) for tfformats' native hot paths.
 *
 * Conventions: the public entry point tff_crc32c_extend(crc, data, n) takes
 * and returns *finished* CRC values (the pre/post inversion is done inside),
 * so tff_crc32c_extend(0, d, n) is the CRC-32C of d and extending a CRC with
 * more data continues it, exactly like the `crc32c` PyPI package.
 *
 * Implementations, chosen once at run time by tff_crc32c_init():
 *   - x86-64 with SSE4.2: the CRC32 instruction on 8-byte words, in three
 *     independent streams (the instruction has a latency of ~3 cycles but a
 *     throughput of 1/cycle); the three partial CRCs are joined with a table
 *     that multiplies a CRC register by x^(8*block) modulo the polynomial.
 *   - 32-bit x86 with SSE4.2: the CRC32 instruction on 4-byte words.
 *   - aarch64 built with the CRC extension: __crc32cd on 8-byte words.
 *   - everything else: a portable slicing-by-8 table walk.
 *
 * Everything below works on the raw (inverted) CRC register. The register
 * update is linear over GF(2), which is what lets independent streams be
 * combined: reg(s, A||B) = reg(s, A) * x^(8|B|) xor reg(0, B).
 */
#ifndef TFFORMATS_CRC32C_H
#define TFFORMATS_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define TFF_CRC_X86 1
#include <nmmintrin.h>
#else
#define TFF_CRC_X86 0
#endif

#if defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#define TFF_CRC_ARM 1
#include <arm_acle.h>
#else
#define TFF_CRC_ARM 0
#endif

#define TFF_CRC_POLY 0x82F63B78u /* reflected Castagnoli polynomial */
/* Bytes per stream in the three tiers of the 3-stream loop. Long streams
   matter for buffers that come from RAM: the hardware prefetchers stop at
   4 KiB pages, and restarting them for three streams every few KiB cost 30%
   of the throughput on a 450 MiB buffer. Shorter tiers keep the combining
   overhead small for the rest. */
#define TFF_CRC_LONG 32768
#define TFF_CRC_MID 4096
#define TFF_CRC_SHORT 256

static uint32_t tff_crc_table[8][256];
static uint32_t tff_crc_shift_long[4][256];  /* register * x^(8*TFF_CRC_LONG) */
static uint32_t tff_crc_shift_mid[4][256];   /* register * x^(8*TFF_CRC_MID) */
static uint32_t tff_crc_shift_short[4][256]; /* register * x^(8*TFF_CRC_SHORT) */
static int tff_crc_hw = 0;

/* Product of two polynomials modulo P, both in reflected bit order
 * (bit 31 holds the coefficient of x^0). */
static uint32_t tff_gf2_mulmod(uint32_t a, uint32_t b)
{
    uint32_t product = 0;
    int i;
    for (i = 0; i < 32; i++) {
        if (a & (0x80000000u >> i))
            product ^= b;
        b = (b & 1) ? (b >> 1) ^ TFF_CRC_POLY : b >> 1; /* b *= x */
    }
    return product;
}

/* x^(8*nbytes) mod P: what running nbytes zero bytes does to a register. */
static uint32_t tff_gf2_x8n(uint64_t nbytes)
{
    uint32_t result = 0x80000000u; /* x^0 */
    uint32_t power = 0x00800000u;  /* x^8 */
    while (nbytes) {
        if (nbytes & 1)
            result = tff_gf2_mulmod(result, power);
        power = tff_gf2_mulmod(power, power);
        nbytes >>= 1;
    }
    return result;
}

static void tff_crc_build_shift(uint32_t table[4][256], uint64_t nbytes)
{
    uint32_t op = tff_gf2_x8n(nbytes);
    int k, b;
    for (k = 0; k < 4; k++)
        for (b = 0; b < 256; b++)
            table[k][b] = tff_gf2_mulmod(op, (uint32_t)b << (8 * k));
}

static inline uint32_t tff_crc_shift(const uint32_t table[4][256], uint32_t reg)
{
    return table[0][reg & 0xff] ^ table[1][(reg >> 8) & 0xff] ^
           table[2][(reg >> 16) & 0xff] ^ table[3][reg >> 24];
}

/* ---- portable: slicing by 8 ---------------------------------------------- */

static uint32_t tff_crc_sw(uint32_t reg, const unsigned char *p, size_t n)
{
    const uint32_t (*t)[256] = (const uint32_t (*)[256])tff_crc_table;
    while (n && ((uintptr_t)p & 7)) {
        reg = (reg >> 8) ^ t[0][(reg ^ *p++) & 0xff];
        n--;
    }
    while (n >= 8) {
        /* Byte-wise assembly is endian-independent; compilers fuse it into
           one load on little-endian machines. */
        uint32_t lo = reg ^ ((uint32_t)p[0] | ((uint32_t)p[1] << 8) |
                             ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
        reg = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^
              t[4][lo >> 24] ^ t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        reg = (reg >> 8) ^ t[0][(reg ^ *p++) & 0xff];
    return reg;
}

/* ---- x86: SSE4.2 CRC32 instruction ---------------------------------------- */

#if TFF_CRC_X86
#if defined(__x86_64__)
static inline uint64_t tff_load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Three streams of `stride` bytes each, while at least 3*stride bytes are
   left; the partial CRCs are joined with `shift` (multiply by x^(8*stride)). */
__attribute__((target("sse4.2")))
static inline uint64_t tff_crc_hw_tier(uint64_t reg, const unsigned char **pp, size_t *np,
                                       size_t stride, const uint32_t (*shift)[256])
{
    const unsigned char *p = *pp;
    size_t n = *np;
    while (n >= 3 * stride) {
        uint64_t r1 = 0, r2 = 0;
        const unsigned char *stop = p + stride;
        do {
            reg = _mm_crc32_u64(reg, tff_load64(p));
            r1 = _mm_crc32_u64(r1, tff_load64(p + stride));
            r2 = _mm_crc32_u64(r2, tff_load64(p + 2 * stride));
            reg = _mm_crc32_u64(reg, tff_load64(p + 8));
            r1 = _mm_crc32_u64(r1, tff_load64(p + stride + 8));
            r2 = _mm_crc32_u64(r2, tff_load64(p + 2 * stride + 8));
            p += 16;
        } while (p < stop);
        reg = tff_crc_shift(shift, (uint32_t)reg) ^ (uint32_t)r1;
        reg = tff_crc_shift(shift, (uint32_t)reg) ^ (uint32_t)r2;
        p += 2 * stride;
        n -= 3 * stride;
    }
    *pp = p;
    *np = n;
    return reg;
}

__attribute__((target("sse4.2")))
static uint32_t tff_crc_hw3(uint32_t reg32, const unsigned char *p, size_t n)
{
    uint64_t reg = reg32;
    while (n && ((uintptr_t)p & 7)) {
        reg = _mm_crc32_u8((uint32_t)reg, *p++);
        n--;
    }
    reg = tff_crc_hw_tier(reg, &p, &n, TFF_CRC_LONG, (const uint32_t (*)[256])tff_crc_shift_long);
    reg = tff_crc_hw_tier(reg, &p, &n, TFF_CRC_MID, (const uint32_t (*)[256])tff_crc_shift_mid);
    reg = tff_crc_hw_tier(reg, &p, &n, TFF_CRC_SHORT, (const uint32_t (*)[256])tff_crc_shift_short);
    while (n >= 8) {
        reg = _mm_crc32_u64(reg, tff_load64(p));
        p += 8;
        n -= 8;
    }
    while (n--)
        reg = _mm_crc32_u8((uint32_t)reg, *p++);
    return (uint32_t)reg;
}
#else /* 32-bit x86 */
__attribute__((target("sse4.2")))
static uint32_t tff_crc_hw3(uint32_t reg, const unsigned char *p, size_t n)
{
    while (n && ((uintptr_t)p & 3)) {
        reg = _mm_crc32_u8(reg, *p++);
        n--;
    }
    while (n >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        reg = _mm_crc32_u32(reg, w);
        p += 4;
        n -= 4;
    }
    while (n--)
        reg = _mm_crc32_u8(reg, *p++);
    return reg;
}
#endif
#endif /* TFF_CRC_X86 */

/* ---- aarch64 with the CRC extension ------------------------------------- */

#if TFF_CRC_ARM
static uint32_t tff_crc_arm(uint32_t reg, const unsigned char *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        reg = __crc32cb(reg, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        reg = __crc32cd(reg, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        reg = __crc32cb(reg, *p++);
    return reg;
}
#endif

/* ---- public ---------------------------------------------------------------- */

/* Fills the tables and picks the implementation; call once before use. */
static void tff_crc32c_init(void)
{
    uint32_t b, reg;
    int k, j;
    for (b = 0; b < 256; b++) {
        reg = b;
        for (j = 0; j < 8; j++)
            reg = (reg & 1) ? (reg >> 1) ^ TFF_CRC_POLY : reg >> 1;
        tff_crc_table[0][b] = reg;
    }
    for (b = 0; b < 256; b++)
        for (k = 1; k < 8; k++)
            tff_crc_table[k][b] = (tff_crc_table[k - 1][b] >> 8) ^
                                  tff_crc_table[0][tff_crc_table[k - 1][b] & 0xff];
    tff_crc_build_shift(tff_crc_shift_long, TFF_CRC_LONG);
    tff_crc_build_shift(tff_crc_shift_mid, TFF_CRC_MID);
    tff_crc_build_shift(tff_crc_shift_short, TFF_CRC_SHORT);
#if TFF_CRC_X86
    __builtin_cpu_init();
    tff_crc_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#elif TFF_CRC_ARM
    tff_crc_hw = 1;
#else
    tff_crc_hw = 0;
#endif
}

/* 1 when a hardware CRC instruction is in use. */
static int tff_crc32c_hardware(void)
{
    return tff_crc_hw;
}

/* Force the portable implementation (on=0) or the best available (on=1);
   only for tests. Returns whether hardware is now in use. */
static int tff_crc32c_use_hardware(int on)
{
#if TFF_CRC_X86
    tff_crc_hw = on && __builtin_cpu_supports("sse4.2");
#elif TFF_CRC_ARM
    tff_crc_hw = on ? 1 : 0;
#else
    (void)on;
    tff_crc_hw = 0;
#endif
    return tff_crc_hw;
}

/* CRC-32C of data[0:n] continuing the finished CRC `crc` (0 to start). */
static uint32_t tff_crc32c_extend(uint32_t crc, const unsigned char *data, size_t n)
{
    uint32_t reg = ~crc;
#if TFF_CRC_X86
    if (tff_crc_hw)
        return ~tff_crc_hw3(reg, data, n);
#elif TFF_CRC_ARM
    if (tff_crc_hw)
        return ~tff_crc_arm(reg, data, n);
#endif
    return ~tff_crc_sw(reg, data, n);
}

/* TensorFlow's masked form of a CRC (rotate right 15, add a constant). */
static inline uint32_t tff_crc32c_mask(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

static inline uint32_t tff_crc32c_unmask(uint32_t masked)
{
    uint32_t rot = masked - 0xA282EAD8u;
    return (rot >> 17) | (rot << 15);
}

#endif /* TFFORMATS_CRC32C_H */
