/* The two compiler built-ins the core uses, behind one name each: GCC and clang (mingw-w64
 * included) have them; MSVC gets the equivalent from <intrin.h>. */
#ifndef FP_COMMON_BITS_H
#define FP_COMMON_BITS_H
#include <stddef.h>
#include <stdint.h>

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>

/* a * b into *out; nonzero when it overflowed */
static __inline int fp_mul_overflow(size_t a, size_t b, size_t *out)
{
    *out = a * b;
    return a != 0 && *out / a != b;
}

/* leading zero bits of v; v != 0 */
static __inline int fp_clz64(uint64_t v)
{
    unsigned long at;
    _BitScanReverse64(&at, v);
    return 63 - (int)at;
}
#else
static inline int fp_mul_overflow(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

static inline int fp_clz64(uint64_t v)
{
    return __builtin_clzll(v);
}
#endif

#endif
