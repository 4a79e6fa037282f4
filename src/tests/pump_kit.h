/* What the pump's C test programs share: the consumer's wake-up object (the eventfd, polled, on
 * POSIX; the event HANDLE on Windows) and the leak check at exit. */
#ifndef FP_TESTS_PUMP_KIT_H
#define FP_TESTS_PUMP_KIT_H

#include <stdbool.h>
#include <stdio.h>

#include "common/fp_os.h"
#include "pump/pump.h"

#ifdef _WIN32
typedef HANDLE wakeup_t;
static inline wakeup_t wakeup_of(fp_pump *p)
{
    return fp_pump_wait_handle(p);
}
static inline bool wakeup_valid(wakeup_t w)
{
    return w != NULL;
}
/* Whether it is set within ms milliseconds. */
static inline bool readable(wakeup_t w, int ms)
{
    return WaitForSingleObject(w, (DWORD)ms) == WAIT_OBJECT_0;
}
#else
#include <poll.h>

typedef int wakeup_t;
static inline wakeup_t wakeup_of(fp_pump *p)
{
    return fp_pump_fd(p);
}
static inline bool wakeup_valid(wakeup_t w)
{
    return w >= 0;
}
/* Whether it is set within ms milliseconds. */
static inline bool readable(wakeup_t fd, int ms)
{
    struct pollfd pf = {fd, POLLIN, 0};
    return poll(&pf, 1, ms) == 1 && (pf.revents & POLLIN);
}
#endif

/* After every test: no pump alive, every slab and chunk freed. Says what leaked; 1 if anything. */
static inline int pump_leaks(void)
{
    fp_pump_debug d;
    fp_pump_debug_counters(&d);
    if (d.pumps_live == 0 && d.slabs_allocated == d.slabs_freed &&
        d.chunks_allocated == d.chunks_freed)
        return 0;
    printf("   FAILED: debug counters: pumps %lld slabs %lld/%lld chunks %lld/%lld\n",
           (long long)d.pumps_live, (long long)d.slabs_allocated, (long long)d.slabs_freed,
           (long long)d.chunks_allocated, (long long)d.chunks_freed);
    return 1;
}

#endif
