/* Monotonic time in nanoseconds (Windows: QueryPerformanceCounter; elsewhere CLOCK_MONOTONIC),
 * and, on POSIX, absolute deadlines for timed waits on CLOCK_MONOTONIC. */
#ifndef FP_TIME_H
#define FP_TIME_H
#include <stdint.h>

#define FP_NS_PER_S 1000000000ull
#define FP_NS_PER_MS 1000000ull

#ifdef _WIN32
#include <windows.h>

static inline uint64_t fp_now_ns(void)
{
    static uint64_t freq; /* counts per second; fixed at boot (a racy first store is harmless) */
    LARGE_INTEGER c;
    if (!freq) {
        LARGE_INTEGER f;
        QueryPerformanceFrequency(&f);
        freq = (uint64_t)f.QuadPart;
    }
    QueryPerformanceCounter(&c);
    uint64_t t = (uint64_t)c.QuadPart;
    return t / freq * FP_NS_PER_S + t % freq * FP_NS_PER_S / freq; /* no overflow */
}
#else
#include <time.h>

static inline uint64_t fp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * FP_NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* The CLOCK_MONOTONIC time `ns` as a timespec (for pthread_cond_timedwait on a monotonic cv). */
static inline struct timespec fp_timespec_at(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / FP_NS_PER_S), (long)(ns % FP_NS_PER_S)};
    return ts;
}
#endif

#endif
