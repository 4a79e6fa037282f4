/* The two GCC builtins the C core uses, for MSVC, which has neither: setup.py force-includes
 * this header (/FI) when it builds the extension with MSVC; gcc, clang and mingw-w64 never see
 * it. Each is used once, on size_t (src/pump/plan.c) and on a nonzero uint64_t
 * (src/common/histogram.c). */
#ifndef FP_MSVC_BUILTINS_H
#define FP_MSVC_BUILTINS_H
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#include <stddef.h>
#include <stdint.h>

static __inline int fp_msvc_mul_overflow(size_t a, size_t b, size_t *out)
{
    *out = a * b;
    return a != 0 && *out / a != b;
}

static __inline int fp_msvc_clzll(uint64_t v) /* v != 0, as for __builtin_clzll */
{
    unsigned long at;
    _BitScanReverse64(&at, v);
    return 63 - (int)at;
}

#define __builtin_mul_overflow(a, b, out) fp_msvc_mul_overflow((a), (b), (out))
#define __builtin_clzll(v) fp_msvc_clzll(v)
#endif
#endif
