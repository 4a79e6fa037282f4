/* The Win32 face (win32/windows.h, win32/fltuser.h) over the emulated Filter Manager: I/O
 * completion ports, events, threads and the FltLib calls, as fsimw_* functions. HANDLEs are
 * handle-table handles (handles.c) of typed objects. See the two headers for what is emulated. */
#define _GNU_SOURCE
#define FLTSIM_EXT_REPLY_MESSAGES
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include "internal.h"
#include "win32/windows.h"
#include "win32/fltuser.h"

/* NTSTATUS of completions (ntstatus.h, which the face does not carry) */
#define ST_SUCCESS 0x00000000u
#define ST_INVALID_HANDLE 0xC0000008u
#define ST_INVALID_PARAMETER 0xC000000Du
#define ST_BUFFER_TOO_SMALL 0xC0000023u
#define ST_CANCELLED 0xC0000120u

_Static_assert(sizeof(FLTSIM_REPLY) == sizeof(SIM_REPLY_ENTRY) &&
                   offsetof(FLTSIM_REPLY, Size) == offsetof(SIM_REPLY_ENTRY, size) &&
                   offsetof(FLTSIM_REPLY, Result) == offsetof(SIM_REPLY_ENTRY, hr),
               "FLTSIM_REPLY is SIM_REPLY_ENTRY");

static __thread DWORD last_error;

DWORD WINAPI GetLastError(void) { return last_error; }
void WINAPI SetLastError(DWORD e) { last_error = e; }

static BOOL fail(DWORD e)
{
    last_error = e;
    return FALSE;
}

static SIM_HANDLE H(HANDLE h) { return (SIM_HANDLE)(uintptr_t)h; }
static HANDLE W(SIM_HANDLE h) { return (HANDLE)(uintptr_t)h; }

static uint32_t ntstatus_of(fp_hresult hr)
{
    switch (hr) {
    case FP_S_OK: return ST_SUCCESS;
    case FP_E_INSUFFICIENT_BUFFER: return ST_BUFFER_TOO_SMALL;
    case FP_E_OPERATION_ABORTED: return ST_CANCELLED;
    case FP_E_INVALIDARG: return ST_INVALID_PARAMETER; /* a refused submission */
    default: return ST_INVALID_HANDLE; /* the connection ended */
    }
}

static DWORD win32_error_of(uint32_t status)
{
    switch (status) {
    case ST_BUFFER_TOO_SMALL: return ERROR_INSUFFICIENT_BUFFER;
    case ST_CANCELLED: return ERROR_OPERATION_ABORTED;
    case ST_INVALID_HANDLE: return ERROR_INVALID_HANDLE;
    case ST_INVALID_PARAMETER: return ERROR_INVALID_PARAMETER;
    default: return ERROR_GEN_FAILURE;
    }
}

static int nt_error(uint32_t status) { return (int32_t)status < 0; }

/* ms from now as a CLOCK_MONOTONIC deadline in ns (0 = INFINITE) */
static uint64_t deadline_of(DWORD ms)
{
    return ms == INFINITE ? 0 : fp_now_ns() + ms * FP_NS_PER_MS;
}

static int cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline)
{
    if (!deadline)
        return pthread_cond_wait(cv, mu);
    struct timespec ts = fp_timespec_at(deadline);
    return pthread_cond_timedwait(cv, mu, &ts);
}

/* ---- completion ports ---- */

typedef struct packet {
    struct packet *next;
    ULONG_PTR key;
    LPOVERLAPPED ov;
    DWORD bytes;
    uint32_t status;
} packet;

typedef struct iocp_waiter { /* a thread in GetQueuedCompletionStatus(Ex), on its stack */
    struct iocp_waiter *next;
    sem_t *sem;
    packet *got;   /* handed over by a poster */
    int linked;    /* still on the stack of waiters */
    int abandoned; /* the port was closed */
} iocp_waiter;

typedef struct iocp {
    atomic_int refs; /* the handle, each port handle bound to it, each pending get bound to it */
    pthread_mutex_t lock;
    packet *head, *tail;  /* FIFO */
    iocp_waiter *waiters; /* LIFO */
    int closed;
} iocp;

static void iocp_get_ref(iocp *q) { atomic_fetch_add(&q->refs, 1); }

void fsim_iocp_put(void *p)
{
    iocp *q = p;
    if (atomic_fetch_sub(&q->refs, 1) != 1)
        return;
    for (packet *k = q->head, *n; k; k = n) {
        n = k->next;
        free(k);
    }
    pthread_mutex_destroy(&q->lock);
    free(q);
}

/* Queues the malloc'd packet p (freed by whoever dequeues it), or hands it straight to the most
 * recent waiter, whose semaphore is posted after unlocking. 0, or -1 when the port is closed
 * (p is freed). */
static int iocp_post(iocp *q, packet *p)
{
    p->next = NULL;
    sem_t *wake = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->closed) {
        pthread_mutex_unlock(&q->lock);
        free(p);
        return -1;
    }
    iocp_waiter *w = q->waiters;
    if (w) {
        q->waiters = w->next;
        w->linked = 0;
        w->got = p;
        wake = w->sem;
    } else {
        if (q->tail)
            q->tail->next = p;
        else
            q->head = p;
        q->tail = p;
    }
    pthread_mutex_unlock(&q->lock);
    if (wake)
        sem_post(wake);
    return 0;
}

static uint32_t take_queued(iocp *q, packet *out, uint32_t n)
{
    uint32_t k = 0;
    while (k < n && q->head) {
        packet *p = q->head;
        q->head = p->next;
        if (!q->head)
            q->tail = NULL;
        out[k++] = *p;
        free(p);
    }
    return k;
}

/* Up to n packets. Returns how many (>= 1), or 0 with *err WAIT_TIMEOUT / ERROR_ABANDONED_WAIT_0. */
static uint32_t iocp_wait(iocp *q, packet *out, uint32_t n, DWORD ms, DWORD *err)
{
    uint64_t deadline = deadline_of(ms);
    pthread_mutex_lock(&q->lock);
    uint32_t k = take_queued(q, out, n);
    if (k || q->closed || ms == 0) {
        pthread_mutex_unlock(&q->lock);
        *err = k ? 0 : q->closed ? ERROR_ABANDONED_WAIT_0 : WAIT_TIMEOUT;
        return k;
    }
    iocp_waiter w = {q->waiters, fsim_thread_sem(), NULL, 1, 0};
    q->waiters = &w;
    pthread_mutex_unlock(&q->lock);
    if (fsim_sem_take(w.sem, deadline) == ETIMEDOUT) {
        pthread_mutex_lock(&q->lock);
        int still = w.linked;
        if (still)
            for (iocp_waiter **pp = &q->waiters; *pp; pp = &(*pp)->next)
                if (*pp == &w) {
                    *pp = w.next;
                    break;
                }
        pthread_mutex_unlock(&q->lock);
        if (still) {
            *err = WAIT_TIMEOUT;
            return 0;
        }
        fsim_sem_take(w.sem, 0); /* handed a packet (or abandoned) as the time ran out */
    }
    if (w.abandoned) {
        *err = ERROR_ABANDONED_WAIT_0;
        return 0;
    }
    out[0] = *w.got;
    free(w.got);
    k = 1;
    if (n > 1) {
        pthread_mutex_lock(&q->lock);
        k += take_queued(q, out + 1, n - 1);
        pthread_mutex_unlock(&q->lock);
    }
    *err = 0;
    return k;
}

uint32_t fsim_iocp_waiting(SIM_HANDLE h)
{
    fsim_hobj *qo = fsim_handle_ref_type(h, FSIM_H_IOCP);
    if (!qo)
        return 0;
    iocp *q = qo->impl;
    uint32_t n = 0;
    pthread_mutex_lock(&q->lock);
    for (iocp_waiter *w = q->waiters; w; w = w->next)
        n++;
    pthread_mutex_unlock(&q->lock);
    fsim_handle_unref(qo);
    return n;
}

static void iocp_close(fsim_hobj *o)
{
    iocp *q = o->impl;
    pthread_mutex_lock(&q->lock);
    q->closed = 1;
    iocp_waiter *w = q->waiters;
    q->waiters = NULL;
    for (iocp_waiter *x = w; x; x = x->next) {
        x->linked = 0;
        x->abandoned = 1;
    }
    pthread_mutex_unlock(&q->lock);
    while (w) {
        iocp_waiter *next = w->next; /* read before the post: w lives on its thread's stack */
        sem_post(w->sem);
        w = next;
    }
}

static void iocp_release(fsim_hobj *o) { fsim_iocp_put(o->impl); }

static const fsim_handle_ops iocp_ops = {
    .type = FSIM_H_IOCP, .close = iocp_close, .release = iocp_release,
};

static pthread_mutex_t bind_lock = PTHREAD_MUTEX_INITIALIZER; /* a handle joins one port */

HANDLE WINAPI CreateIoCompletionPort(HANDLE file, HANDLE existing, ULONG_PTR key, DWORD threads)
{
    (void)threads;
    fsim_hobj *port = NULL, *qo = NULL;
    if (file != INVALID_HANDLE_VALUE) {
        port = fsim_handle_ref_type(H(file), FSIM_H_PORT);
        if (!port) {
            fail(ERROR_INVALID_HANDLE);
            return NULL;
        }
    } else if (existing) {
        fail(ERROR_INVALID_PARAMETER);
        return NULL;
    }
    SIM_HANDLE qh = H(existing);
    if (existing) {
        qo = fsim_handle_ref_type(qh, FSIM_H_IOCP);
        if (!qo) {
            fsim_handle_unref(port);
            fail(ERROR_INVALID_HANDLE);
            return NULL;
        }
    } else {
        iocp *q = calloc(1, sizeof *q);
        if (q) {
            atomic_init(&q->refs, 1);
            pthread_mutex_init(&q->lock, NULL);
            qh = fsim_handle_new(&iocp_ops, q);
            if (!qh)
                fsim_iocp_put(q);
        }
        qo = qh ? fsim_handle_ref(qh) : NULL;
        if (!qo) {
            if (port)
                fsim_handle_unref(port);
            fail(ERROR_NOT_ENOUGH_MEMORY);
            return NULL;
        }
    }
    if (port) {
        pthread_mutex_lock(&bind_lock);
        int bound = atomic_load(&port->iocp) != NULL;
        if (!bound) {
            iocp_get_ref(qo->impl);
            port->iocp_key = key;
            atomic_store(&port->iocp, qo->impl);
        }
        pthread_mutex_unlock(&bind_lock);
        fsim_handle_unref(port);
        if (bound) {
            fsim_handle_unref(qo);
            if (!existing)
                fsim_handle_close(qh);
            fail(ERROR_INVALID_PARAMETER);
            return NULL;
        }
    }
    fsim_handle_unref(qo);
    return W(qh);
}

BOOL WINAPI GetQueuedCompletionStatus(HANDLE port, LPDWORD bytes, PULONG_PTR key,
                                      LPOVERLAPPED *ov, DWORD ms)
{
    if (!bytes || !key || !ov)
        return fail(ERROR_INVALID_PARAMETER);
    *ov = NULL;
    fsim_hobj *qo = fsim_handle_ref_type(H(port), FSIM_H_IOCP);
    if (!qo)
        return fail(ERROR_INVALID_HANDLE);
    packet p;
    DWORD err;
    uint32_t k = iocp_wait(qo->impl, &p, 1, ms, &err);
    fsim_handle_unref(qo);
    if (!k)
        return fail(err);
    *bytes = p.bytes;
    *key = p.key;
    *ov = p.ov;
    if (nt_error(p.status))
        return fail(win32_error_of(p.status));
    return TRUE;
}

#define GQCS_STACK 64u

BOOL WINAPI GetQueuedCompletionStatusEx(HANDLE port, LPOVERLAPPED_ENTRY entries, ULONG count,
                                        PULONG removed, DWORD ms, BOOL alertable)
{
    (void)alertable;
    if (!entries || !count || !removed)
        return fail(ERROR_INVALID_PARAMETER);
    *removed = 0;
    fsim_hobj *qo = fsim_handle_ref_type(H(port), FSIM_H_IOCP);
    if (!qo)
        return fail(ERROR_INVALID_HANDLE);
    packet stack[GQCS_STACK], *p = count <= GQCS_STACK ? stack : malloc(count * sizeof *p);
    if (!p) {
        fsim_handle_unref(qo);
        return fail(ERROR_NOT_ENOUGH_MEMORY);
    }
    DWORD err;
    uint32_t k = iocp_wait(qo->impl, p, count, ms, &err);
    fsim_handle_unref(qo);
    for (uint32_t i = 0; i < k; i++)
        entries[i] = (OVERLAPPED_ENTRY){p[i].key, p[i].ov, p[i].status, p[i].bytes};
    if (p != stack)
        free(p);
    *removed = k;
    return k ? TRUE : fail(err);
}

BOOL WINAPI PostQueuedCompletionStatus(HANDLE port, DWORD bytes, ULONG_PTR key, LPOVERLAPPED ov)
{
    fsim_hobj *qo = fsim_handle_ref_type(H(port), FSIM_H_IOCP);
    if (!qo)
        return fail(ERROR_INVALID_HANDLE);
    packet *p = malloc(sizeof *p);
    int rc = -1;
    if (p) {
        *p = (packet){NULL, key, ov, bytes, ST_SUCCESS};
        rc = iocp_post(qo->impl, p);
    }
    fsim_handle_unref(qo);
    return rc == 0 ? TRUE : fail(p ? ERROR_INVALID_HANDLE : ERROR_NOT_ENOUGH_MEMORY);
}

/* ---- overlapped results ---- */

/* GetOverlappedResult(wait) sleeps here; completions broadcast only while someone does. A
 * completion stores Internal then loads result_waiters; a waiter increments result_waiters then
 * loads Internal: all four are seq_cst, so at least one of them sees the other's store (no lost
 * wake-up; seq_cst operations rather than fences, which ThreadSanitizer cannot check). */
static pthread_mutex_t result_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t result_cv = PTHREAD_COND_INITIALIZER;
static atomic_int result_waiters;

static void result_published(void)
{
    if (atomic_load(&result_waiters) == 0) /* seq_cst: after the seq_cst store of Internal */
        return;
    pthread_mutex_lock(&result_lock);
    pthread_mutex_unlock(&result_lock);
    pthread_cond_broadcast(&result_cv);
}

static DWORD ov_status(LPOVERLAPPED ov)
{
    return (DWORD)__atomic_load_n(&ov->Internal, __ATOMIC_SEQ_CST);
}

BOOL WINAPI GetOverlappedResult(HANDLE h, LPOVERLAPPED ov, LPDWORD bytes, BOOL wait)
{
    (void)h;
    if (!ov || !bytes)
        return fail(ERROR_INVALID_PARAMETER);
    if (ov_status(ov) == STATUS_PENDING) {
        if (!wait)
            return fail(ERROR_IO_INCOMPLETE);
        atomic_fetch_add(&result_waiters, 1); /* before the check: a completion then broadcasts */
        pthread_mutex_lock(&result_lock);
        while (ov_status(ov) == STATUS_PENDING)
            pthread_cond_wait(&result_cv, &result_lock);
        pthread_mutex_unlock(&result_lock);
        atomic_fetch_sub(&result_waiters, 1);
    }
    *bytes = (DWORD)ov->InternalHigh;
    uint32_t st = ov_status(ov);
    return nt_error(st) ? fail(win32_error_of(st)) : TRUE;
}

/* ---- events ---- */

typedef struct wevent {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int manual, state;
} wevent;

static void event_close(fsim_hobj *o) { (void)o; }

static void event_release(fsim_hobj *o)
{
    wevent *e = o->impl;
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->cv);
    free(e);
}

static const fsim_handle_ops event_ops = {
    .type = FSIM_H_EVENT, .close = event_close, .release = event_release,
};

static HANDLE create_event(LPSECURITY_ATTRIBUTES sa, BOOL manual, BOOL initial, int named)
{
    (void)sa;
    if (named) {
        fail(ERROR_INVALID_PARAMETER);
        return NULL;
    }
    wevent *e = calloc(1, sizeof *e);
    SIM_HANDLE h = 0;
    if (e) {
        pthread_mutex_init(&e->lock, NULL);
        fsim_cond_init_mono(&e->cv);
        e->manual = manual != 0;
        e->state = initial != 0;
        h = fsim_handle_new(&event_ops, e);
        if (!h) {
            fsim_hobj tmp = {.impl = e};
            event_release(&tmp);
        }
    }
    if (!h)
        fail(ERROR_NOT_ENOUGH_MEMORY);
    return W(h);
}

HANDLE WINAPI CreateEventW(LPSECURITY_ATTRIBUTES sa, BOOL manual, BOOL initial, LPCWSTR name)
{
    return create_event(sa, manual, initial, name != NULL);
}

HANDLE WINAPI CreateEventA(LPSECURITY_ATTRIBUTES sa, BOOL manual, BOOL initial, LPCSTR name)
{
    return create_event(sa, manual, initial, name != NULL);
}

static BOOL event_set(HANDLE h, int state)
{
    fsim_hobj *o = fsim_handle_ref_type(H(h), FSIM_H_EVENT);
    if (!o)
        return fail(ERROR_INVALID_HANDLE);
    wevent *e = o->impl;
    pthread_mutex_lock(&e->lock);
    e->state = state;
    pthread_mutex_unlock(&e->lock);
    if (state) {
        if (e->manual)
            pthread_cond_broadcast(&e->cv);
        else
            pthread_cond_signal(&e->cv);
    }
    fsim_handle_unref(o);
    return TRUE;
}

BOOL WINAPI SetEvent(HANDLE h) { return event_set(h, 1); }
BOOL WINAPI ResetEvent(HANDLE h) { return event_set(h, 0); }

/* ---- threads ---- */

typedef struct wthread {
    atomic_int refs; /* the handle and the running thread */
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int done;
    DWORD code;
    LPTHREAD_START_ROUTINE fn;
    LPVOID arg;
    DWORD id;
} wthread;

static void thread_put(wthread *t)
{
    if (atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cv);
    free(t);
}

static void thread_close(fsim_hobj *o) { (void)o; }
static void thread_release(fsim_hobj *o) { thread_put(o->impl); }

static const fsim_handle_ops thread_ops = {
    .type = FSIM_H_THREAD, .close = thread_close, .release = thread_release,
};

static atomic_uint next_thread_id = 1;
static __thread DWORD my_thread_id;

DWORD WINAPI GetCurrentThreadId(void)
{
    if (!my_thread_id)
        my_thread_id = atomic_fetch_add(&next_thread_id, 1);
    return my_thread_id;
}

static void *thread_main(void *p)
{
    wthread *t = p;
    my_thread_id = t->id;
    DWORD code = t->fn(t->arg);
    pthread_mutex_lock(&t->lock);
    t->done = 1;
    t->code = code;
    pthread_mutex_unlock(&t->lock);
    pthread_cond_broadcast(&t->cv);
    thread_put(t);
    return NULL;
}

HANDLE WINAPI CreateThread(LPSECURITY_ATTRIBUTES sa, SIZE_T stack, LPTHREAD_START_ROUTINE fn,
                           LPVOID arg, DWORD flags, LPDWORD tid)
{
    (void)sa;
    if (!fn || flags) {
        fail(ERROR_INVALID_PARAMETER);
        return NULL;
    }
    wthread *t = calloc(1, sizeof *t);
    if (!t) {
        fail(ERROR_NOT_ENOUGH_MEMORY);
        return NULL;
    }
    atomic_init(&t->refs, 2);
    pthread_mutex_init(&t->lock, NULL);
    fsim_cond_init_mono(&t->cv);
    t->fn = fn;
    t->arg = arg;
    t->id = atomic_fetch_add(&next_thread_id, 1);
    SIM_HANDLE h = fsim_handle_new(&thread_ops, t);
    if (!h) {
        free(t);
        fail(ERROR_NOT_ENOUGH_MEMORY);
        return NULL;
    }
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (stack)
        pthread_attr_setstacksize(&a, stack);
    pthread_t pt;
    int r = pthread_create(&pt, &a, thread_main, t);
    pthread_attr_destroy(&a);
    if (r != 0) {
        atomic_fetch_sub(&t->refs, 1); /* the thread's, which never ran */
        fsim_handle_close(h);
        fail(ERROR_NOT_ENOUGH_MEMORY);
        return NULL;
    }
    if (tid)
        *tid = t->id;
    return W(h);
}

BOOL WINAPI GetExitCodeThread(HANDLE h, LPDWORD code)
{
    if (!code)
        return fail(ERROR_INVALID_PARAMETER);
    fsim_hobj *o = fsim_handle_ref_type(H(h), FSIM_H_THREAD);
    if (!o)
        return fail(ERROR_INVALID_HANDLE);
    wthread *t = o->impl;
    pthread_mutex_lock(&t->lock);
    *code = t->done ? t->code : STILL_ACTIVE;
    pthread_mutex_unlock(&t->lock);
    fsim_handle_unref(o);
    return TRUE;
}

/* ---- waiting ---- */

DWORD WINAPI WaitForSingleObjectEx(HANDLE h, DWORD ms, BOOL alertable)
{
    (void)alertable;
    fsim_hobj *o = fsim_handle_ref(H(h));
    if (!o || (o->ops->type != FSIM_H_EVENT && o->ops->type != FSIM_H_THREAD)) {
        if (o)
            fsim_handle_unref(o);
        fail(ERROR_INVALID_HANDLE);
        return WAIT_FAILED;
    }
    uint64_t deadline = ms == 0 ? 0 : deadline_of(ms);
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int *signalled, consume = 0;
    if (o->ops->type == FSIM_H_EVENT) {
        wevent *e = o->impl;
        mu = &e->lock;
        cv = &e->cv;
        signalled = &e->state;
        consume = !e->manual;
    } else {
        wthread *t = o->impl;
        mu = &t->lock;
        cv = &t->cv;
        signalled = &t->done;
    }
    DWORD r = WAIT_OBJECT_0;
    pthread_mutex_lock(mu);
    while (!*signalled) {
        if (ms == 0 || cond_wait_until(cv, mu, deadline) == ETIMEDOUT) {
            if (!*signalled)
                r = WAIT_TIMEOUT;
            break;
        }
    }
    if (r == WAIT_OBJECT_0 && consume)
        *signalled = 0;
    pthread_mutex_unlock(mu);
    fsim_handle_unref(o);
    return r;
}

DWORD WINAPI WaitForSingleObject(HANDLE h, DWORD ms) { return WaitForSingleObjectEx(h, ms, FALSE); }

void WINAPI Sleep(DWORD ms)
{
    struct timespec ts = {(time_t)(ms / 1000u), (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

BOOL WINAPI CloseHandle(HANDLE h)
{
    return fsim_handle_close(H(h)) == 0 ? TRUE : fail(ERROR_INVALID_HANDLE);
}

/* ---- FltLib ---- */

/* wchar_t (UTF-32 here) to UTF-8; NULL on a bad code point or no memory */
static char *utf8_of(LPCWSTR w)
{
    size_t n = wcslen(w);
    char *s = malloc(4 * n + 1), *o = s;
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = (uint32_t)w[i];
        if (c < 0x80) {
            *o++ = (char)c;
        } else if (c < 0x800) {
            *o++ = (char)(0xC0 | (c >> 6));
            *o++ = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000 && (c < 0xD800 || c > 0xDFFF)) {
            *o++ = (char)(0xE0 | (c >> 12));
            *o++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *o++ = (char)(0x80 | (c & 0x3F));
        } else if (c >= 0x10000 && c < 0x110000) {
            *o++ = (char)(0xF0 | (c >> 18));
            *o++ = (char)(0x80 | ((c >> 12) & 0x3F));
            *o++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *o++ = (char)(0x80 | (c & 0x3F));
        } else {
            free(s);
            return NULL;
        }
    }
    *o = 0;
    return s;
}

HRESULT WINAPI FilterConnectCommunicationPort(LPCWSTR name, DWORD options, LPCVOID context,
                                              WORD context_size, LPSECURITY_ATTRIBUTES sa,
                                              HANDLE *port)
{
    (void)sa;
    if (!port)
        return E_INVALIDARG;
    *port = NULL;
    if (!name)
        return E_INVALIDARG;
    char *u8 = utf8_of(name);
    if (!u8)
        return E_INVALIDARG;
    SIM_HANDLE h = 0;
    HRESULT hr = SimFilterConnectCommunicationPort(u8, options, context, context_size, NULL, &h);
    free(u8);
    if (SUCCEEDED(hr))
        *port = W(h);
    return hr;
}

HRESULT WINAPI FilterSendMessage(HANDLE port, LPVOID in, DWORD in_size, LPVOID out,
                                 DWORD out_size, LPDWORD returned)
{
    return SimFilterSendMessage(H(port), in, in_size, out, out_size, returned);
}

HRESULT WINAPI FilterReplyMessage(HANDLE port, PFILTER_REPLY_HEADER reply, DWORD size)
{
    return SimFilterReplyMessage(H(port), reply, size);
}

HRESULT WINAPI FltSimReplyMessages(HANDLE port, FLTSIM_REPLY *r, DWORD n)
{
    return SimFilterReplyMessages(H(port), (SIM_REPLY_ENTRY *)(void *)r, n);
}

/* One overlapped get: the emulator's request, and where its outcome goes. Its memory becomes
 * the completion packet (pkt first: the dequeuer frees it), one allocation per get. */
typedef struct wget {
    packet pkt;
    fsim_io io;
    LPOVERLAPPED ov;
    HANDLE event;
    iocp *q; /* retained; NULL when the handle joined no port */
    ULONG_PTR key;
} wget;

static void wget_done(fsim_io *io, fp_hresult hr, uint32_t bytes)
{
    wget *g = (wget *)(void *)((char *)io - offsetof(wget, io));
    uint32_t st = ntstatus_of(hr);
    LPOVERLAPPED ov = g->ov;
    ov->InternalHigh = bytes;
    __atomic_store_n(&ov->Internal, (ULONG_PTR)st, __ATOMIC_SEQ_CST);
    result_published();
    /* From the packet on, neither the OVERLAPPED nor g is ours: only local copies are used. */
    HANDLE event = (HANDLE)((uintptr_t)g->event & ~(uintptr_t)1);
    iocp *q = g->q;
    if (q && !((uintptr_t)g->event & 1)) {
        g->pkt = (packet){NULL, g->key, ov, bytes, st};
        (void)iocp_post(q, &g->pkt); /* a closed port drops it */
    } else {
        free(g);
    }
    if (q)
        fsim_iocp_put(q);
    if (event)
        (void)SetEvent(event);
}

HRESULT WINAPI FilterGetMessage(HANDLE port, PFILTER_MESSAGE_HEADER buf, DWORD size,
                                LPOVERLAPPED ov)
{
    if (!ov)
        return SimFilterGetMessage(H(port), buf, size, FSIM_INFINITE, NULL);
    if (!buf || size < sizeof(FILTER_MESSAGE_HEADER))
        return E_INVALIDARG;
    fsim_hobj *o = fsim_handle_ref_type(H(port), FSIM_H_PORT);
    if (!o)
        return HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    wget *g = malloc(sizeof *g);
    if (!g) {
        fsim_handle_unref(o);
        return E_OUTOFMEMORY;
    }
    g->io = (fsim_io){.buffer = buf, .size = size, .key = ov, .done = wget_done};
    g->ov = ov;
    g->event = ov->hEvent;
    g->key = 0;
    g->q = atomic_load(&o->iocp);
    if (g->q) {
        iocp_get_ref(g->q);
        g->key = o->iocp_key;
    }
    ov->InternalHigh = 0;
    __atomic_store_n(&ov->Internal, (ULONG_PTR)STATUS_PENDING, __ATOMIC_RELEASE);
    HANDLE event = (HANDLE)((uintptr_t)g->event & ~(uintptr_t)1);
    if (event)
        (void)ResetEvent(event);
    HRESULT hr = fsim_port_get_async(o, &g->io);
    fsim_handle_unref(o);
    if (hr != FP_E_IO_PENDING) { /* never submitted: done will not run */
        __atomic_store_n(&ov->Internal, (ULONG_PTR)ntstatus_of(hr), __ATOMIC_RELEASE);
        if (g->q)
            fsim_iocp_put(g->q);
        free(g);
    }
    return hr;
}

BOOL WINAPI CancelIoEx(HANDLE h, LPOVERLAPPED ov)
{
    HRESULT hr = SimFilterCancelIo(H(h), ov);
    if (hr == FP_S_OK)
        return TRUE;
    return fail(hr == FP_E_NOT_FOUND ? ERROR_NOT_FOUND : ERROR_INVALID_HANDLE);
}

BOOL WINAPI CancelIo(HANDLE h)
{
    HRESULT hr = SimFilterCancelIo(H(h), NULL);
    return hr == FP_S_OK || hr == FP_E_NOT_FOUND ? TRUE : fail(ERROR_INVALID_HANDLE);
}
