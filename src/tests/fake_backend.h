/* A fake fp_backend for C tests: a thread-safe in-memory message source. Header-only (everything
 * static), so any test can include it without clashing with the real backends.
 *
 * Messages get ids 1, 2, 3, ... in push order; id k's payload is fake_payload_byte(k, j) for byte
 * j, except that its first 8 bytes hold k itself (little-endian) when the payload has room. Every
 * reply is checked against the kernel's rules (FLTMGR.md) and recorded per id:
 *   - unknown id, not delivered, ReplyLength 0, already answered, or expired (fake_expire: the
 *     "kernel" gave up): FP_E_FLT_NO_WAITER_FOR_REPLY
 *   - size > ReplyLength: FP_E_INSUFFICIENT_BUFFER (the message counts as answered)
 *   - else S_OK: status and the first 8 payload bytes are stored.
 * Cancel wakes only gets pending at that moment (CancelIoEx); disconnect fails every call with
 * FP_E_INVALID_HANDLE (reply_batch: call-level, entries untouched).
 */
#ifndef FP_FAKE_BACKEND_H
#define FP_FAKE_BACKEND_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/backend.h"
#include "fltsim/fltsim.h"

enum { FAKE_UNSENT = 0, FAKE_QUEUED, FAKE_DELIVERED, FAKE_REPLIED, FAKE_EXPIRED };

typedef struct fake_rec {
    uint32_t len;          /* payload bytes */
    uint32_t reply_length; /* header ReplyLength */
    uint8_t state;
    uint32_t attempts;     /* reply_batch entries naming this id */
    uint32_t accepted;     /* S_OK or INSUFFICIENT_BUFFER answers */
    int32_t status;
    uint32_t reply_size;
    uint64_t reply_word;   /* first 8 payload bytes of the accepted reply */
    uint64_t delivered_ns, replied_ns;
} fake_rec;

typedef struct fake_backend {
    fp_backend base;
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* gets wait for messages; waiters for replies */
    uint64_t *ring;      /* queued ids */
    size_t cap, head, tail;
    fake_rec *rec;       /* index = id, 1..cap */
    uint64_t next_id;
    uint64_t cancel_gen;
    bool disconnected;
    uint64_t delivered, answered, reply_entries, nowaiter, toolong;
    _Atomic uint64_t get_calls, reply_calls, thread_inits, thread_finis;
    _Atomic int pending_gets;
    pthread_t last_reply_thread; /* who made the last reply_batch call (under mu) */
} fake_backend;

static uint64_t fake_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint8_t fake_payload_byte(uint64_t id, uint32_t j)
{
    return (uint8_t)(id * 131u + j * 7u + 1u);
}

static void *fake_thread_init(fp_backend *b)
{
    fake_backend *f = (fake_backend *)b;
    atomic_fetch_add(&f->thread_inits, 1);
    return f; /* any non-NULL */
}

static void fake_thread_fini(fp_backend *b, void *ts)
{
    (void)ts;
    atomic_fetch_add(&((fake_backend *)b)->thread_finis, 1);
}

static fp_hresult fake_get_batch(fp_backend *b, void *ts, fp_recv *e, uint32_t n,
                                 uint32_t timeout_ms, uint32_t *filled)
{
    fake_backend *f = (fake_backend *)b;
    (void)ts;
    *filled = 0;
    atomic_fetch_add(&f->get_calls, 1);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000u;
    until.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&f->mu);
    uint64_t gen = f->cancel_gen;
    atomic_fetch_add(&f->pending_gets, 1);
    while (f->head == f->tail && !f->disconnected && gen == f->cancel_gen) {
        if (timeout_ms == 0 || pthread_cond_timedwait(&f->cv, &f->mu, &until) == ETIMEDOUT) {
            if (f->head == f->tail && !f->disconnected && gen == f->cancel_gen) {
                atomic_fetch_sub(&f->pending_gets, 1);
                pthread_mutex_unlock(&f->mu);
                return FP_E_TIMEOUT;
            }
        }
    }
    atomic_fetch_sub(&f->pending_gets, 1);
    if (f->disconnected) {
        pthread_mutex_unlock(&f->mu);
        return FP_E_INVALID_HANDLE;
    }
    if (gen != f->cancel_gen) {
        pthread_mutex_unlock(&f->mu);
        return FP_E_OPERATION_ABORTED;
    }
    uint32_t k = 0;
    uint64_t now = fake_now();
    while (k < n && f->head != f->tail) {
        uint64_t id = f->ring[f->head++ % f->cap];
        fake_rec *r = &f->rec[id];
        uint8_t *buf = e[k].buffer;
        FP_MESSAGE_HEADER h = {r->reply_length, 0, id};
        memcpy(buf, &h, sizeof h);
        uint32_t room = e[k].size - 16u, m = r->len < room ? r->len : room;
        for (uint32_t j = 0; j < m; j++)
            buf[16 + j] = fake_payload_byte(id, j);
        if (m >= 8)
            memcpy(buf + 16, &id, 8);
        e[k].length = 16u + m;
        e[k].hr = m < r->len ? FP_E_INSUFFICIENT_BUFFER : FP_S_OK;
        r->state = FAKE_DELIVERED;
        r->delivered_ns = now;
        f->delivered++;
        if (r->reply_length == 0) /* nothing to wait for */
            f->answered++;
        k++;
    }
    *filled = k;
    pthread_mutex_unlock(&f->mu);
    return FP_S_OK;
}

static fp_hresult fake_reply_batch(fp_backend *b, fp_send *e, uint32_t n)
{
    fake_backend *f = (fake_backend *)b;
    atomic_fetch_add(&f->reply_calls, 1);
    pthread_mutex_lock(&f->mu);
    if (f->disconnected) {
        pthread_mutex_unlock(&f->mu);
        return FP_E_INVALID_HANDLE;
    }
    uint64_t now = fake_now();
    f->last_reply_thread = pthread_self();
    for (uint32_t k = 0; k < n; k++) {
        FP_REPLY_HEADER h;
        memcpy(&h, e[k].buffer, sizeof h);
        f->reply_entries++;
        if (h.MessageId == 0 || h.MessageId >= f->next_id) {
            e[k].hr = FP_E_FLT_NO_WAITER_FOR_REPLY;
            f->nowaiter++;
            continue;
        }
        fake_rec *r = &f->rec[h.MessageId];
        r->attempts++;
        if (r->state != FAKE_DELIVERED || r->reply_length == 0) {
            e[k].hr = FP_E_FLT_NO_WAITER_FOR_REPLY;
            f->nowaiter++;
            continue;
        }
        r->state = FAKE_REPLIED;
        r->accepted++;
        r->replied_ns = now;
        f->answered++;
        if (e[k].size > r->reply_length) {
            e[k].hr = FP_E_INSUFFICIENT_BUFFER;
            f->toolong++;
            continue;
        }
        r->status = h.Status;
        r->reply_size = e[k].size;
        r->reply_word = 0;
        memcpy(&r->reply_word, (const uint8_t *)e[k].buffer + 16,
               e[k].size - 16u < 8u ? e[k].size - 16u : 8u);
        e[k].hr = FP_S_OK;
    }
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return FP_S_OK;
}

static fp_hresult fake_cancel(fp_backend *b)
{
    fake_backend *f = (fake_backend *)b;
    pthread_mutex_lock(&f->mu);
    f->cancel_gen++;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return FP_S_OK;
}

static void fake_destroy(fp_backend *b)
{
    fake_backend *f = (fake_backend *)b;
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f->ring);
    free(f->rec);
    free(f);
}

static const fp_backend_ops fake_ops = {
    "fake", fake_thread_init, fake_thread_fini, fake_get_batch, fake_reply_batch, fake_cancel,
    fake_destroy,
};

/* capacity: the most messages the fake will ever be sent */
static fake_backend *fake_new(size_t capacity)
{
    fake_backend *f = calloc(1, sizeof *f);
    f->base.ops = &fake_ops;
    f->cap = capacity;
    f->ring = calloc(capacity, sizeof *f->ring);
    f->rec = calloc(capacity + 1, sizeof *f->rec);
    f->next_id = 1;
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &a);
    pthread_condattr_destroy(&a);
    return f;
}

/* Queues one message; returns its id (0 if the fake is full). */
static uint64_t fake_push(fake_backend *f, uint32_t len, uint32_t reply_length)
{
    pthread_mutex_lock(&f->mu);
    if (f->next_id > f->cap) {
        pthread_mutex_unlock(&f->mu);
        return 0;
    }
    uint64_t id = f->next_id++;
    f->rec[id].len = len;
    f->rec[id].reply_length = reply_length;
    f->rec[id].state = FAKE_QUEUED;
    f->ring[f->tail++ % f->cap] = id;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return id;
}

static void fake_disconnect(fake_backend *f)
{
    pthread_mutex_lock(&f->mu);
    f->disconnected = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* The "kernel" stops waiting for id's reply (FltSendMessage timed out). */
static void fake_expire(fake_backend *f, uint64_t id)
{
    pthread_mutex_lock(&f->mu);
    if (f->rec[id].state == FAKE_DELIVERED) {
        f->rec[id].state = FAKE_EXPIRED;
        if (f->rec[id].reply_length)
            f->answered++;
    }
    pthread_mutex_unlock(&f->mu);
}

/* Waits until `answered` (deliveries needing no reply + accepted replies + expiries) reaches n. */
static bool fake_wait_answered(fake_backend *f, uint64_t n, uint32_t timeout_ms)
{
    uint64_t until = fake_now() + (uint64_t)timeout_ms * 1000000u;
    pthread_mutex_lock(&f->mu);
    while (f->answered < n) {
        uint64_t now = fake_now();
        if (now >= until)
            break;
        struct timespec ts = {(time_t)((now + 10000000u) / 1000000000u),
                              (long)((now + 10000000u) % 1000000000u)};
        pthread_cond_timedwait(&f->cv, &f->mu, &ts);
    }
    bool ok = f->answered >= n;
    pthread_mutex_unlock(&f->mu);
    return ok;
}

static uint64_t fake_delivered(fake_backend *f)
{
    pthread_mutex_lock(&f->mu);
    uint64_t d = f->delivered;
    pthread_mutex_unlock(&f->mu);
    return d;
}

/* Copy of id's record, under the lock. */
static fake_rec fake_record(fake_backend *f, uint64_t id)
{
    pthread_mutex_lock(&f->mu);
    fake_rec r = f->rec[id];
    pthread_mutex_unlock(&f->mu);
    return r;
}

#endif
