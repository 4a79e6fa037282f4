/* The pump consumer's wake-up object in the C tests: the eventfd (fp_pump_fd, polled) on POSIX,
 * the event HANDLE (fp_pump_wait_handle) on Windows. */
#ifndef FP_TESTS_WAKEUP_H
#define FP_TESTS_WAKEUP_H

#include <stdbool.h>

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

#endif
