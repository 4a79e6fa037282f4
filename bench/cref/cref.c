/* The C reference client (see cref.h). */
#include "cref.h"
#include "common/fp_thread.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define RLX memory_order_relaxed

typedef struct cref_thread {
    fp_cref *c;
    pthread_t thread;
    int created;
    SIM_GET_ENTRY *entries;
    SIM_REPLY_ENTRY *replies;
    uint8_t *msgs;   /* outstanding x msg_stride */
    uint8_t *rbufs;  /* outstanding x reply_stride */
    _Atomic uint64_t received, replied, no_reply, late, truncated, errors, batches;
    _Atomic int32_t last_error;
    _Atomic int running;
} __attribute__((aligned(64))) cref_thread;

struct fp_cref {
    SIM_HANDLE h;
    uint32_t nthreads, outstanding;
    int protocol;
    uint32_t reply_size;
    size_t msg_stride, reply_stride;
    _Atomic int stop;
    pthread_mutex_t join_lock;
    int joined;
    cref_thread *threads;
};

static inline void bump(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, RLX) + n, RLX);
}

static void count_error(cref_thread *t, fp_hresult hr)
{
    bump(&t->errors, 1);
    atomic_store_explicit(&t->last_error, hr, RLX);
}

/* Writes the reply payload for one received message (payload = plen bytes after the header). */
static void answer(int protocol, const uint8_t *payload, uint32_t plen, uint8_t *out)
{
    if (protocol == FP_PROTO_BENCH) {
        BENCH_REPLY r = {0, 0};
        if (plen >= BENCH_HEADER_BYTES) {
            uint32_t len = bench_load_le32(payload + offsetof(BENCH_MESSAGE, length));
            if (len > plen)
                len = plen; /* truncated or malformed: what we have */
            r.checksum = bench_checksum(payload, len);
            r.verdict = bench_verdict(bench_load_le32(payload + offsetof(BENCH_MESSAGE, marker)));
        } else {
            r.checksum = bench_checksum(payload, plen);
        }
        memcpy(out, &r, sizeof r);
    } else {
        SCANNER_REPLY r = {1};
        size_t head = offsetof(SCANNER_NOTIFICATION, Contents);
        if (plen > head) {
            uint32_t n;
            memcpy(&n, payload, sizeof n); /* BytesToScan */
            if (n > SCANNER_READ_BUFFER_SIZE)
                n = SCANNER_READ_BUFFER_SIZE;
            if (n > plen - head)
                n = (uint32_t)(plen - head);
            r.SafeToOpen = scanner_find_foul(payload + head, n) < 0 ? 1u : 0u;
        }
        memcpy(out, &r, sizeof r);
    }
}

static void *cref_main(void *arg)
{
    cref_thread *t = arg;
    fp_cref *c = t->c;
    fp_thread_name("fp-cref-", (unsigned)(t - c->threads));
    for (uint32_t i = 0; i < c->outstanding; i++) {
        t->entries[i].buffer = (FP_MESSAGE_HEADER *)(void *)(t->msgs + i * c->msg_stride);
        t->entries[i].size = (uint32_t)c->msg_stride;
    }
    while (!atomic_load_explicit(&c->stop, RLX)) {
        uint32_t n = 0;
        fp_hresult hr = SimFilterGetMessages(c->h, t->entries, c->outstanding,
                                             FP_CREF_GET_TIMEOUT_MS, &n);
        if (hr == FP_E_TIMEOUT || hr == FP_E_OPERATION_ABORTED)
            continue; /* a cancel that is not ours: go on; ours: the loop test ends it */
        if (hr == FP_E_INVALID_HANDLE)
            break;    /* the port is gone */
        if (!FP_SUCCEEDED(hr)) {
            count_error(t, hr);
            break;
        }
        bump(&t->batches, 1);
        bump(&t->received, n);
        uint32_t k = 0, truncated = 0, no_reply = 0;
        for (uint32_t i = 0; i < n; i++) {
            SIM_GET_ENTRY *e = &t->entries[i];
            if (e->hr == FP_E_INSUFFICIENT_BUFFER)
                truncated++;
            FP_MESSAGE_HEADER *mh = e->buffer;
            if (mh->ReplyLength == 0) {
                no_reply++;
                continue;
            }
            uint8_t *rb = t->rbufs + k * c->reply_stride;
            FP_REPLY_HEADER rh = {0, 0, mh->MessageId};
            memcpy(rb, &rh, sizeof rh);
            uint32_t plen = e->length > sizeof *mh ? e->length - (uint32_t)sizeof *mh : 0;
            answer(c->protocol, (const uint8_t *)mh + sizeof *mh, plen, rb + sizeof rh);
            t->replies[k].buffer = (const FP_REPLY_HEADER *)(const void *)rb;
            t->replies[k].size = (uint32_t)sizeof rh + c->reply_size; /* the padding rule */
            k++;
        }
        if (truncated)
            bump(&t->truncated, truncated);
        if (no_reply)
            bump(&t->no_reply, no_reply);
        if (!k)
            continue;
        hr = SimFilterReplyMessages(c->h, t->replies, k);
        if (hr == FP_E_INVALID_HANDLE)
            break;
        if (!FP_SUCCEEDED(hr)) {
            count_error(t, hr);
            break;
        }
        uint32_t ok = 0, late = 0;
        for (uint32_t i = 0; i < k; i++) {
            if (t->replies[i].hr == FP_S_OK)
                ok++;
            else if (t->replies[i].hr == FP_E_FLT_NO_WAITER_FOR_REPLY)
                late++;
            else
                count_error(t, t->replies[i].hr);
        }
        bump(&t->replied, ok);
        if (late)
            bump(&t->late, late);
    }
    atomic_store(&t->running, 0);
    return NULL;
}

static void cref_free(fp_cref *c)
{
    if (c->threads) {
        for (uint32_t i = 0; i < c->nthreads; i++) {
            cref_thread *t = &c->threads[i];
            free(t->entries);
            free(t->replies);
            free(t->msgs);
            free(t->rbufs);
        }
        free(c->threads);
    }
    pthread_mutex_destroy(&c->join_lock);
    free(c);
}

fp_hresult fp_cref_start(SIM_HANDLE h, uint32_t threads, uint32_t outstanding, int protocol,
                         uint32_t max_payload, fp_cref **out)
{
    if (!out)
        return FP_E_INVALIDARG;
    *out = NULL;
    if (!h || threads < 1 || threads > FP_CREF_MAX_THREADS || outstanding < 1 ||
        outstanding > FP_CREF_MAX_OUTSTANDING || max_payload < 1 ||
        max_payload > FSIM_MAX_MESSAGE ||
        (protocol != FP_PROTO_BENCH && protocol != FP_PROTO_SCANNER))
        return FP_E_INVALIDARG;
    fp_cref *c = calloc(1, sizeof *c);
    if (!c)
        return FP_E_OUTOFMEMORY;
    pthread_mutex_init(&c->join_lock, NULL);
    c->h = h;
    c->nthreads = threads;
    c->outstanding = outstanding;
    c->protocol = protocol;
    c->reply_size = fp_protocol_reply_size(protocol);
    c->msg_stride = ((size_t)sizeof(FP_MESSAGE_HEADER) + max_payload + 63u) & ~(size_t)63u;
    c->reply_stride = ((size_t)sizeof(FP_REPLY_HEADER) + c->reply_size + 15u) & ~(size_t)15u;
    c->threads = aligned_alloc(64, sizeof(cref_thread) * threads);
    if (!c->threads) {
        cref_free(c);
        return FP_E_OUTOFMEMORY;
    }
    memset(c->threads, 0, sizeof(cref_thread) * threads);
    for (uint32_t i = 0; i < threads; i++) {
        cref_thread *t = &c->threads[i];
        t->c = c;
        t->entries = calloc(outstanding, sizeof *t->entries);
        t->replies = calloc(outstanding, sizeof *t->replies);
        t->msgs = aligned_alloc(64, c->msg_stride * outstanding);
        t->rbufs = aligned_alloc(64, ((c->reply_stride * outstanding + 63u) & ~(size_t)63u));
        if (!t->entries || !t->replies || !t->msgs || !t->rbufs) {
            cref_free(c);
            return FP_E_OUTOFMEMORY;
        }
    }
    for (uint32_t i = 0; i < threads; i++) {
        cref_thread *t = &c->threads[i];
        atomic_store(&t->running, 1);
        if (pthread_create(&t->thread, NULL, cref_main, t) != 0) {
            atomic_store(&t->running, 0);
            fp_cref_destroy(c);
            return FP_E_OUTOFMEMORY;
        }
        t->created = 1;
    }
    *out = c;
    return FP_S_OK;
}

void fp_cref_stop(fp_cref *c)
{
    if (!c)
        return;
    atomic_store(&c->stop, 1);
    SimFilterCancel(c->h); /* FP_E_INVALID_HANDLE if already closed: nothing to wake then */
}

void fp_cref_join(fp_cref *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->join_lock);
    if (!c->joined) {
        for (uint32_t i = 0; i < c->nthreads; i++)
            if (c->threads[i].created) {
                pthread_join(c->threads[i].thread, NULL);
                c->threads[i].created = 0;
            }
        c->joined = 1;
    }
    pthread_mutex_unlock(&c->join_lock);
}

void fp_cref_stats_get(fp_cref *c, fp_cref_stats *out)
{
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < c->nthreads; i++) {
        cref_thread *t = &c->threads[i];
        out->received += atomic_load_explicit(&t->received, RLX);
        out->replied += atomic_load_explicit(&t->replied, RLX);
        out->no_reply += atomic_load_explicit(&t->no_reply, RLX);
        out->late += atomic_load_explicit(&t->late, RLX);
        out->truncated += atomic_load_explicit(&t->truncated, RLX);
        out->errors += atomic_load_explicit(&t->errors, RLX);
        out->batches += atomic_load_explicit(&t->batches, RLX);
        int32_t le = atomic_load_explicit(&t->last_error, RLX);
        if (le)
            out->last_error = le;
        out->threads_running += (uint32_t)atomic_load(&t->running);
    }
}

void fp_cref_destroy(fp_cref *c)
{
    if (!c)
        return;
    fp_cref_stop(c);
    fp_cref_join(c);
    cref_free(c);
}
