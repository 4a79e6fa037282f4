/* The operating system under the C core, in one small header: Win32 on _WIN32, POSIX (Linux)
 * elsewhere. No pthreads-win32: on Windows the primitives are the system's own.
 *
 *   fp_mutex     pthread_mutex_t          | SRWLOCK (exclusive)
 *   fp_cond      pthread_cond_t on        | CONDITION_VARIABLE (SleepConditionVariableSRW; the
 *                CLOCK_MONOTONIC          |   absolute deadline becomes a relative ms timeout)
 *   fp_thread    pthread_t                | HANDLE (CreateThread)
 *   fp_event     eventfd (EFD_NONBLOCK)   | manual-reset event HANDLE
 *   memory       posix_memalign / free    | _aligned_malloc / _aligned_free
 *   thread names prctl(PR_SET_NAME)       | SetThreadDescription (where the system has it)
 *
 * Thin inline wrappers: on Linux every call is the pthread call it replaces. A condition wait may
 * wake early or spuriously on either system: callers wait in a loop on their own condition.
 * Thread functions are written `fp_thread_ret FP_THREAD_API fn(void *arg)` and `return 0`.
 */
#ifndef FP_COMMON_OS_H
#define FP_COMMON_OS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fp_time.h"

#ifdef _WIN32
#include <malloc.h>
#include <windows.h>

typedef SRWLOCK fp_mutex;
typedef CONDITION_VARIABLE fp_cond;
typedef HANDLE fp_thread;
typedef DWORD fp_thread_ret;
#define FP_THREAD_API WINAPI
typedef HANDLE fp_event;
#define FP_EVENT_NONE NULL
#define FP_MUTEX_INIT SRWLOCK_INIT      /* static initialisers */
#define FP_COND_INIT CONDITION_VARIABLE_INIT

static inline int fp_mutex_init(fp_mutex *m)
{
    InitializeSRWLock(m);
    return 0;
}
static inline void fp_mutex_destroy(fp_mutex *m)
{
    (void)m; /* an SRWLOCK holds no resources */
}
static inline void fp_mutex_lock(fp_mutex *m)
{
    AcquireSRWLockExclusive(m);
}
static inline void fp_mutex_unlock(fp_mutex *m)
{
    ReleaseSRWLockExclusive(m);
}

static inline int fp_cond_init(fp_cond *c)
{
    InitializeConditionVariable(c);
    return 0;
}
static inline void fp_cond_destroy(fp_cond *c)
{
    (void)c;
}
static inline void fp_cond_wait(fp_cond *c, fp_mutex *m)
{
    SleepConditionVariableSRW(c, m, INFINITE, 0);
}
/* Waits until signalled or until fp_now_ns() reaches deadline_ns (rounded up to whole ms). */
static inline void fp_cond_wait_until(fp_cond *c, fp_mutex *m, uint64_t deadline_ns)
{
    uint64_t now = fp_now_ns(), ms = 0;
    if (deadline_ns > now)
        ms = (deadline_ns - now + FP_NS_PER_MS - 1) / FP_NS_PER_MS;
    SleepConditionVariableSRW(c, m, ms >= INFINITE ? INFINITE - 1 : (DWORD)ms, 0);
}
static inline void fp_cond_signal(fp_cond *c)
{
    WakeConditionVariable(c);
}
static inline void fp_cond_broadcast(fp_cond *c)
{
    WakeAllConditionVariable(c);
}

typedef fp_thread_ret(FP_THREAD_API *fp_thread_fn)(void *arg);
/* 0 on success. */
static inline int fp_thread_start(fp_thread *t, fp_thread_fn fn, void *arg)
{
    *t = CreateThread(NULL, 0, fn, arg, 0, NULL);
    return *t ? 0 : -1;
}
static inline void fp_thread_join(fp_thread t)
{
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}

typedef DWORD fp_thread_id; /* who a thread is, to compare with the calling thread */
static inline fp_thread_id fp_thread_self(void)
{
    return GetCurrentThreadId();
}
static inline bool fp_thread_is_self(fp_thread_id id)
{
    return id == GetCurrentThreadId();
}

typedef HRESULT(WINAPI *fp_set_thread_description_fn)(HANDLE, PCWSTR);
/* Names the calling thread (debuggers, Process Explorer, ETW) on Windows 10 1607 and later; a
 * no-op on older systems (looked up at run time, so the program loads everywhere). */
static inline void fp_thread_name(const char *prefix, unsigned index)
{
    char name[32];
    WCHAR wide[32];
    snprintf(name, sizeof name, "%s%u", prefix, index);
    size_t i = 0;
    for (; name[i] && i + 1 < sizeof wide / sizeof *wide; i++)
        wide[i] = (WCHAR)(unsigned char)name[i];
    wide[i] = 0;
    HMODULE k = GetModuleHandleW(L"kernel32.dll");
    FARPROC f = k ? GetProcAddress(k, "SetThreadDescription") : NULL;
    if (f) {
        fp_set_thread_description_fn set;
        memcpy(&set, &f, sizeof set); /* a function pointer cast without -Wcast-function-type */
        set(GetCurrentThread(), wide);
    }
}

static inline bool fp_event_open(fp_event *e)
{
    *e = CreateEventW(NULL, TRUE, FALSE, NULL);
    return *e != NULL;
}
static inline void fp_event_set(fp_event e)
{
    SetEvent(e);
}
static inline void fp_event_clear(fp_event e)
{
    ResetEvent(e);
}
static inline void fp_event_close(fp_event e)
{
    CloseHandle(e);
}

static inline void *fp_aligned_alloc(size_t align, size_t size)
{
    return _aligned_malloc(size ? size : 1, align);
}
static inline void fp_aligned_free(void *p)
{
    _aligned_free(p);
}

/* Bytes of physical memory, 0 if unknown. */
static inline uint64_t fp_phys_memory(void)
{
    MEMORYSTATUSEX m;
    m.dwLength = sizeof m;
    return GlobalMemoryStatusEx(&m) ? (uint64_t)m.ullTotalPhys : 0;
}

static inline void fp_sleep_ms(unsigned ms)
{
    Sleep(ms);
}

static inline void fp_yield(void)
{
    SwitchToThread();
}

#else /* POSIX */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

typedef pthread_mutex_t fp_mutex;
typedef pthread_cond_t fp_cond;
typedef pthread_t fp_thread;
typedef void *fp_thread_ret;
#define FP_THREAD_API
typedef int fp_event;
#define FP_EVENT_NONE (-1)
#define FP_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER /* static initialisers (a static condition */
#define FP_COND_INIT PTHREAD_COND_INITIALIZER   /* variable's timed waits use CLOCK_REALTIME) */

static inline int fp_mutex_init(fp_mutex *m)
{
    return pthread_mutex_init(m, NULL);
}
static inline void fp_mutex_destroy(fp_mutex *m)
{
    pthread_mutex_destroy(m);
}
static inline void fp_mutex_lock(fp_mutex *m)
{
    pthread_mutex_lock(m);
}
static inline void fp_mutex_unlock(fp_mutex *m)
{
    pthread_mutex_unlock(m);
}

/* A condition variable whose timed waits use CLOCK_MONOTONIC (fp_now_ns's clock). */
static inline int fp_cond_init(fp_cond *c)
{
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc)
        return rc;
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (!rc)
        rc = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return rc;
}
static inline void fp_cond_destroy(fp_cond *c)
{
    pthread_cond_destroy(c);
}
static inline void fp_cond_wait(fp_cond *c, fp_mutex *m)
{
    pthread_cond_wait(c, m);
}
/* Waits until signalled or until fp_now_ns() reaches deadline_ns. */
static inline void fp_cond_wait_until(fp_cond *c, fp_mutex *m, uint64_t deadline_ns)
{
    struct timespec ts = fp_timespec_at(deadline_ns);
    pthread_cond_timedwait(c, m, &ts);
}
static inline void fp_cond_signal(fp_cond *c)
{
    pthread_cond_signal(c);
}
static inline void fp_cond_broadcast(fp_cond *c)
{
    pthread_cond_broadcast(c);
}

typedef fp_thread_ret (*fp_thread_fn)(void *arg);
/* 0 on success. */
static inline int fp_thread_start(fp_thread *t, fp_thread_fn fn, void *arg)
{
    return pthread_create(t, NULL, fn, arg);
}
static inline void fp_thread_join(fp_thread t)
{
    pthread_join(t, NULL);
}

typedef pthread_t fp_thread_id; /* who a thread is, to compare with the calling thread */
static inline fp_thread_id fp_thread_self(void)
{
    return pthread_self();
}
static inline bool fp_thread_is_self(fp_thread_id id)
{
    return pthread_equal(id, pthread_self()) != 0;
}

/* Names the calling thread (top -H, perf, gdb) on Linux, cut to 15 characters; a no-op on other
 * POSIX systems. */
static inline void fp_thread_name(const char *prefix, unsigned index)
{
#if defined(__linux__)
    char name[16];
    snprintf(name, sizeof name, "%s%u", prefix, index);
    prctl(PR_SET_NAME, name, 0, 0, 0);
#else
    (void)prefix;
    (void)index;
#endif
}

static inline bool fp_event_open(fp_event *e)
{
    *e = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return *e >= 0;
}
/* Set and clear are only called on a change of state (the caller tracks it): the counter then
 * moves between 0 and 1. */
static inline void fp_event_set(fp_event e)
{
    uint64_t one = 1;
    ssize_t r;
    do
        r = write(e, &one, sizeof one);
    while (r < 0 && errno == EINTR);
}
static inline void fp_event_clear(fp_event e)
{
    uint64_t v;
    ssize_t r;
    do
        r = read(e, &v, sizeof v);
    while (r < 0 && errno == EINTR);
}
static inline void fp_event_close(fp_event e)
{
    close(e);
}

static inline void *fp_aligned_alloc(size_t align, size_t size)
{
    void *p = NULL;
    return posix_memalign(&p, align, size ? size : 1) ? NULL : p;
}
static inline void fp_aligned_free(void *p)
{
    free(p);
}

/* Bytes of physical memory, 0 if unknown. */
static inline uint64_t fp_phys_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    return pages > 0 && page_size > 0 ? (uint64_t)pages * (uint64_t)page_size : 0;
}

static inline void fp_sleep_ms(unsigned ms)
{
    usleep(ms * 1000u);
}

static inline void fp_yield(void)
{
    sched_yield();
}
#endif

#endif
