/* Names the calling thread (shows in top -H, perf, gdb) on Linux; a no-op elsewhere. Names are
 * cut to 15 characters. */
#ifndef FP_COMMON_THREAD_H
#define FP_COMMON_THREAD_H

#if defined(__linux__)
#include <stdio.h>
#include <sys/prctl.h>

static inline void fp_thread_name(const char *prefix, unsigned index)
{
    char name[16];
    snprintf(name, sizeof name, "%s%u", prefix, index);
    prctl(PR_SET_NAME, name, 0, 0, 0);
}
#else
static inline void fp_thread_name(const char *prefix, unsigned index)
{
    (void)prefix;
    (void)index;
}
#endif

#endif
