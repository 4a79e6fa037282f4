/* Monotonic time in nanoseconds, and absolute deadlines for timed waits on CLOCK_MONOTONIC. */
#ifndef FP_TIME_H
#define FP_TIME_H
#include <stdint.h>
#include <time.h>

#define FP_NS_PER_S 1000000000ull
#define FP_NS_PER_MS 1000000ull

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
