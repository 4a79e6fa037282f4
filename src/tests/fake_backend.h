/* A fake fp_backend for C tests: a thread-safe in-memory message source with gets in flight, as
 * the backend interface (src/backends/backend.h) describes. Header-only (everything static).
 *
 * Messages get ids 1, 2, 3, ... in push order; id k's payload is fake_payload_byte(k, j) for byte
 * j, except that its first 8 bytes hold k itself (little-endian) when the payload has room. A
 * message goes to the OLDEST posted get (or, with fake_set_order(f, FAKE_NEWEST_GET), to the
 * newest: out of slot order), copied into its slot with a FILTER_MESSAGE_HEADER, and becomes a
 * completion. Reaps return completions FIFO, or (FAKE_SHUFFLE) each reap's set in reverse.
 * Every reply is checked against the kernel's rules and recorded per id:
 *   - unknown id, not delivered, ReplyLength 0, already answered, or expired (fake_expire: the
 *     "kernel" gave up): FP_E_FLT_NO_WAITER_FOR_REPLY
 *   - size > ReplyLength: FP_E_INSUFFICIENT_BUFFER (the message counts as answered)
 *   - else S_OK: status and the first 8 payload bytes are stored.
 * Cancel completes every posted get with FP_E_OPERATION_ABORTED; disconnect completes them with
 * FP_E_INVALID_HANDLE and fails later posts and replies.
 */
#ifndef FP_FAKE_BACKEND_H
#define FP_FAKE_BACKEND_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/backend.h"
#include "common/fp_os.h"
#include "common/fp_wire.h"

enum { FAKE_UNSENT = 0, FAKE_QUEUED, FAKE_DELIVERED, FAKE_REPLIED, FAKE_EXPIRED };
enum { FAKE_OLDEST_GET = 0, FAKE_NEWEST_GET = 1, FAKE_SHUFFLE = 2 };

typedef struct fake_rec {
    uint32_t len;          /* payload bytes */
    uint32_t reply_length; /* header ReplyLength */
    uint8_t state;
    uint32_t attempts;     /* reply entries naming this id */
    uint32_t accepted;     /* S_OK or INSUFFICIENT_BUFFER answers */
    int32_t status;
    uint32_t reply_size;
    uint64_t reply_word;   /* first 8 payload bytes of the accepted reply */
    uint64_t delivered_ns, replied_ns;
    uint32_t slot;         /* the slot it was delivered into */
} fake_rec;

typedef struct fake_get {
    uint32_t slot, size;
    uint8_t *buffer;
} fake_get;

typedef struct fake_backend {
    fp_backend base;
    fp_mutex mu;
    fp_cond cv;     /* reapers wait for completions; test waiters for state */
    uint64_t *ring;        /* queued ids */
    size_t cap, head, tail;
    fake_rec *rec;         /* index = id, 1..cap */
    uint64_t next_id;
    uint32_t nslots;
    fake_get *gets;        /* posted, not yet completed, in post order */
    uint32_t ngets;
    uint8_t *slot_busy;    /* per slot: a get is posted and not reaped (double-post check) */
    fp_completion *done;   /* completions not yet reaped (FIFO ring of nslots + 1) */
    uint32_t d_head, d_tail, d_cap;
    uint32_t wakes;
    int order;
    bool disconnected, attached;
    uint64_t delivered, answered, reply_entries, nowaiter, toolong, double_posts, cancels;
    _Atomic uint64_t posts, reaps, reply_calls;
    fp_thread_id last_reply_thread; /* who made the last reply call (under mu) */
} fake_backend;

static uint64_t fake_now(void)
{
    return fp_now_ns();
}

static inline uint8_t fake_payload_byte(uint64_t id, uint32_t j)
{
    return (uint8_t)(id * 131u + j * 7u + 1u);
}

static void fake_complete_locked(fake_backend *f, fp_completion c)
{
    f->done[f->d_tail++ % f->d_cap] = c;
    fp_cond_broadcast(&f->cv);
}

/* Delivers queued messages to posted gets (mu held). */
static void fake_pump_locked(fake_backend *f)
{
    uint64_t now = fake_now();
    while (f->head != f->tail && f->ngets) {
        uint64_t id = f->ring[f->head++ % f->cap];
        fake_get g;
        if (f->order == FAKE_NEWEST_GET) {
            g = f->gets[--f->ngets];
        } else {
            g = f->gets[0];
            memmove(f->gets, f->gets + 1, sizeof *f->gets * --f->ngets);
        }
        fake_rec *r = &f->rec[id];
        FP_MESSAGE_HEADER h = {r->reply_length, 0, id};
        memcpy(g.buffer, &h, sizeof h);
        uint32_t room = g.size - 16u, m = r->len < room ? r->len : room;
        for (uint32_t j = 0; j < m; j++)
            g.buffer[16 + j] = fake_payload_byte(id, j);
        if (m >= 8)
            memcpy(g.buffer + 16, &id, 8);
        r->state = FAKE_DELIVERED;
        r->delivered_ns = now;
        r->slot = g.slot;
        f->delivered++;
        if (r->reply_length == 0) /* nothing to wait for */
            f->answered++;
        fake_complete_locked(f, (fp_completion){g.slot, 16u + m,
                                                m < r->len ? FP_E_INSUFFICIENT_BUFFER : FP_S_OK,
                                                r->reply_length, id});
    }
}

static fp_hresult fake_attach(fp_backend *b, uint32_t nslots)
{
    fake_backend *f = (fake_backend *)b;
    fp_mutex_lock(&f->mu);
    free(f->gets);
    free(f->slot_busy);
    free(f->done);
    f->nslots = nslots;
    f->gets = calloc(nslots, sizeof *f->gets);
    f->slot_busy = calloc(nslots, 1);
    f->d_cap = nslots + 1;
    f->done = calloc(f->d_cap, sizeof *f->done);
    f->d_head = f->d_tail = 0;
    f->ngets = 0;
    f->attached = true;
    fp_mutex_unlock(&f->mu);
    return f->gets && f->slot_busy && f->done ? FP_S_OK : FP_E_OUTOFMEMORY;
}

static fp_hresult fake_post(fp_backend *b, uint32_t slot, void *buffer, uint32_t size)
{
    fake_backend *f = (fake_backend *)b;
    atomic_fetch_add(&f->posts, 1);
    fp_mutex_lock(&f->mu);
    if (f->disconnected) {
        fp_mutex_unlock(&f->mu);
        return FP_E_INVALID_HANDLE;
    }
    if (slot >= f->nslots || f->slot_busy[slot]) {
        f->double_posts++;
        fp_mutex_unlock(&f->mu);
        return FP_E_INVALIDARG;
    }
    f->slot_busy[slot] = 1;
    f->gets[f->ngets++] = (fake_get){slot, size, buffer};
    fake_pump_locked(f);
    fp_mutex_unlock(&f->mu);
    return FP_S_OK;
}

static fp_hresult fake_reap(fp_backend *b, fp_completion *out, uint32_t max, uint32_t timeout_ms,
                            uint32_t *n)
{
    fake_backend *f = (fake_backend *)b;
    *n = 0;
    uint64_t until = timeout_ms == FP_INFINITE_MS ? UINT64_MAX
                                                  : fake_now() + (uint64_t)timeout_ms * 1000000u;
    fp_mutex_lock(&f->mu);
    while (f->d_head == f->d_tail && !f->wakes) {
        if (until == UINT64_MAX) {
            fp_cond_wait(&f->cv, &f->mu);
        } else {
            uint64_t now = fake_now();
            if (now >= until)
                break;
            fp_cond_wait_until(&f->cv, &f->mu, until);
        }
    }
    uint32_t k = 0;
    while (k < max && f->d_head != f->d_tail) {
        fp_completion c = f->done[f->d_head++ % f->d_cap];
        f->slot_busy[c.slot] = 0;
        out[k++] = c;
    }
    if (f->order == FAKE_SHUFFLE)
        for (uint32_t i = 0; i < k / 2; i++) {
            fp_completion t = out[i];
            out[i] = out[k - 1 - i];
            out[k - 1 - i] = t;
        }
    bool woken = false;
    if (!k && f->wakes) {
        f->wakes--;
        woken = true;
    }
    *n = k;
    if (k)
        atomic_fetch_add(&f->reaps, 1);
    fp_mutex_unlock(&f->mu);
    return k || woken ? FP_S_OK : FP_E_TIMEOUT;
}

static void fake_wake(fp_backend *b)
{
    fake_backend *f = (fake_backend *)b;
    fp_mutex_lock(&f->mu);
    f->wakes++;
    fp_cond_broadcast(&f->cv);
    fp_mutex_unlock(&f->mu);
}

/* Completes the posted gets in `slot` (FP_SLOT_ALL: all) with hr, no message (mu held). */
static void fake_fail_gets_locked(fake_backend *f, uint32_t slot, fp_hresult hr)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < f->ngets; i++) {
        if (slot == FP_SLOT_ALL || f->gets[i].slot == slot)
            fake_complete_locked(f, (fp_completion){f->gets[i].slot, 0, hr, 0, 0});
        else
            f->gets[k++] = f->gets[i];
    }
    f->ngets = k;
}

static fp_hresult fake_cancel(fp_backend *b, uint32_t slot)
{
    fake_backend *f = (fake_backend *)b;
    fp_mutex_lock(&f->mu);
    f->cancels++;
    fake_fail_gets_locked(f, slot, FP_E_OPERATION_ABORTED);
    fp_mutex_unlock(&f->mu);
    return FP_S_OK;
}

static fp_hresult fake_reply(fp_backend *b, fp_reply *e, uint32_t n)
{
    fake_backend *f = (fake_backend *)b;
    atomic_fetch_add(&f->reply_calls, 1);
    fp_mutex_lock(&f->mu);
    if (f->disconnected) {
        fp_mutex_unlock(&f->mu);
        return FP_E_INVALID_HANDLE;
    }
    uint64_t now = fake_now();
    f->last_reply_thread = fp_thread_self();
    for (uint32_t k = 0; k < n; k++) {
        f->reply_entries++;
        uint64_t id = e[k].id;
        if (id == 0 || id >= f->next_id) {
            e[k].hr = FP_E_FLT_NO_WAITER_FOR_REPLY;
            f->nowaiter++;
            continue;
        }
        fake_rec *r = &f->rec[id];
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
        r->status = e[k].status;
        r->reply_size = e[k].size;
        r->reply_word = 0;
        memcpy(&r->reply_word, e[k].buffer + FP_REPLY_HEADER_AREA,
               e[k].size - 16u < 8u ? e[k].size - 16u : 8u);
        e[k].hr = FP_S_OK;
    }
    fp_cond_broadcast(&f->cv);
    fp_mutex_unlock(&f->mu);
    return FP_S_OK;
}

static void fake_destroy(fp_backend *b)
{
    fake_backend *f = (fake_backend *)b;
    fp_mutex_destroy(&f->mu);
    fp_cond_destroy(&f->cv);
    free(f->ring);
    free(f->rec);
    free(f->gets);
    free(f->slot_busy);
    free(f->done);
    free(f);
}

static const fp_backend_ops fake_ops = {
    "fake", fake_attach, fake_post, fake_reap, fake_wake, fake_cancel, fake_reply, fake_destroy,
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
    fp_mutex_init(&f->mu);
    fp_cond_init(&f->cv);
    return f;
}

static void fake_set_order(fake_backend *f, int order)
{
    fp_mutex_lock(&f->mu);
    f->order = order;
    fp_mutex_unlock(&f->mu);
}

/* Queues one message; returns its id (0 if the fake is full). */
static uint64_t fake_push(fake_backend *f, uint32_t len, uint32_t reply_length)
{
    fp_mutex_lock(&f->mu);
    if (f->next_id > f->cap) {
        fp_mutex_unlock(&f->mu);
        return 0;
    }
    uint64_t id = f->next_id++;
    f->rec[id].len = len;
    f->rec[id].reply_length = reply_length;
    f->rec[id].state = FAKE_QUEUED;
    f->ring[f->tail++ % f->cap] = id;
    fake_pump_locked(f);
    fp_cond_broadcast(&f->cv);
    fp_mutex_unlock(&f->mu);
    return id;
}

static void fake_disconnect(fake_backend *f)
{
    fp_mutex_lock(&f->mu);
    f->disconnected = true;
    fake_fail_gets_locked(f, FP_SLOT_ALL, FP_E_INVALID_HANDLE);
    fp_cond_broadcast(&f->cv);
    fp_mutex_unlock(&f->mu);
}

/* The "kernel" stops waiting for id's reply (FltSendMessage timed out). */
static void fake_expire(fake_backend *f, uint64_t id)
{
    fp_mutex_lock(&f->mu);
    if (f->rec[id].state == FAKE_DELIVERED) {
        f->rec[id].state = FAKE_EXPIRED;
        if (f->rec[id].reply_length)
            f->answered++;
    }
    fp_mutex_unlock(&f->mu);
}

/* Waits until cond (an expression over f, evaluated under f->mu) holds, or timeout_ms passed. */
#define FAKE_WAIT(f, cond, timeout_ms)                                                            \
    ({                                                                                            \
        uint64_t until_ = fake_now() + (uint64_t)(timeout_ms) * 1000000u;                         \
        fp_mutex_lock(&(f)->mu);                                                             \
        while (!(cond) && fake_now() < until_) {                                                  \
            fp_cond_wait_until(&(f)->cv, &(f)->mu, fake_now() + 10000000u);                       \
        }                                                                                         \
        bool ok_ = (cond);                                                                        \
        fp_mutex_unlock(&(f)->mu);                                                           \
        ok_;                                                                                      \
    })

/* Waits until `answered` (deliveries needing no reply + accepted replies + expiries) reaches n. */
static bool fake_wait_answered(fake_backend *f, uint64_t n, uint32_t timeout_ms)
{
    return FAKE_WAIT(f, f->answered >= n, timeout_ms);
}

/* Waits until at least n gets are posted and waiting for a message. */
static bool fake_wait_gets(fake_backend *f, uint32_t n, uint32_t timeout_ms)
{
    return FAKE_WAIT(f, f->ngets >= n, timeout_ms);
}

static uint64_t fake_delivered(fake_backend *f)
{
    fp_mutex_lock(&f->mu);
    uint64_t d = f->delivered;
    fp_mutex_unlock(&f->mu);
    return d;
}

static uint32_t fake_pending_gets(fake_backend *f)
{
    fp_mutex_lock(&f->mu);
    uint32_t n = f->ngets;
    fp_mutex_unlock(&f->mu);
    return n;
}

/* Copy of id's record, under the lock. */
static fake_rec fake_record(fake_backend *f, uint64_t id)
{
    fp_mutex_lock(&f->mu);
    fake_rec r = f->rec[id];
    fp_mutex_unlock(&f->mu);
    return r;
}

#endif
