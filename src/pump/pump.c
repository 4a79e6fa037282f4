/* The pump's C core. See pump.h for the contract.
 *
 * Locks (never more than one held at a time except where noted; order: join_mu -> q_mu,
 * join_mu -> chunk mu; r_mu alone):
 *   q_mu      the free list, the ready queue, chunk states and their counts, workers_live,
 *             user_stop/ended, the eventfd. Taken once per chunk transition (per batch).
 *   chunk mu  count/pending/holds/finished and the answered flags of one chunk; held across
 *             that chunk's reply_batch calls so a message is answered exactly once and the chunk's
 *             send array is used by one thread at a time.
 *   r_mu      the reaper's sleep (kick/stop flags).
 *   join_mu   serialises fp_pump_join.
 * Hot path per get: backend call, one clock read, one chunk-mutex round (uncontended unless the
 * reaper is scanning that chunk). Per batch: two q_mu rounds (take free, publish) for the worker,
 * two for the consumer (next, release). Statistics are per-worker (own cache line) or one relaxed
 * atomic add per reply call.
 */
#include "pump.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../common/fp_thread.h"
#include "../fltsim/fltsim.h" /* FP_MESSAGE_HEADER, FP_REPLY_HEADER (wire structs only) */

_Static_assert(sizeof(FP_MESSAGE_HEADER) == FP_PUMP_MESSAGE_HEADER, "message header size");
_Static_assert(sizeof(FP_REPLY_HEADER) == FP_PUMP_REPLY_HEADER, "reply header size");

#define CACHELINE 64u
#define PAGE 4096u
#define RLX memory_order_relaxed

/* answered[] values */
enum { ANS_PENDING = 0, ANS_CONSUMER = 1, ANS_DEFAULT = 2, ANS_NOREPLY = 3 };
/* chunk states (under q_mu) */
enum { CH_FREE = 0, CH_FILLING = 1, CH_READY = 2, CH_HELD = 3 };
/* default reasons: index into pump->defaulted[] */
enum { DEF_DEADLINE = 0, DEF_ERROR = 1, DEF_RELEASE = 2, DEF_STOP = 3, DEF_N = 4 };

struct fp_chunk {
    _Alignas(CACHELINE) pthread_mutex_t mu;
    fp_pump *pump;
    uint32_t index;
    uint8_t state;      /* q_mu */
    /* under mu: */
    uint8_t finished;
    uint32_t count;     /* messages in slots 0..count-1 (grows while filling) */
    uint32_t pending;   /* of those, how many still expect an answer */
    uint32_t first_pending; /* no pending message below this index */
    uint32_t holds;
    /* fixed at create: */
    uint8_t *slots;
    uint8_t *replies;   /* consumer reply slots */
    uint8_t *defaults;  /* default reply slots: payload prefilled once, header written per send */
    uint8_t *outbox;    /* consumer replies copied at fp_chunk_reply, sent from here */
    /* per slot, written by the filling worker before `count` covers the slot: */
    uint64_t *recv_ns;
    uint64_t *msgid;    /* copied from the header: the consumer cannot change what C answers */
    uint32_t *length;
    int32_t *status;    /* consumer's */
    uint8_t *answered;  /* under mu once count covers the slot */
    /* under mu: */
    fp_send *send;
    uint32_t *send_idx;
    uint32_t *out_idx;  /* outbox slots waiting for a reply thread */
    uint32_t out_n;
    bool out_queued;    /* on the pump's outbox queue (holding one hold) */
    fp_chunk *next;     /* q_mu: free list / ready queue link */
    fp_chunk *out_next; /* o_mu: outbox queue link */
};

typedef struct replier {
    fp_pump *pump;
    fp_send *send; /* batch entries, this thread's own */
    uint32_t *idx;
} replier;

typedef struct worker {
    _Alignas(CACHELINE) fp_pump *pump;
    pthread_t tid;
    bool started;
    fp_recv *recv;
    _Atomic uint64_t received, truncated, no_reply, batches, gets, errors;
} worker;

struct fp_pump {
    fp_backend *b;
    fp_pump_config cfg;
    uint8_t *default_reply;
    uint32_t nrecv; /* min(outstanding, batch) */
    uint64_t spin_ns;
    size_t slot_size, message_bytes, reply_stride, reply_bytes, chunk_bytes, chunk_reply_bytes;
    uint8_t *slab;
    size_t slab_bytes;
    uint8_t *reply_area; /* consumer replies, then the defaults */
    size_t reply_area_bytes;
    uint8_t *meta;
    fp_chunk *chunks;
    worker *workers;
    fp_recv *recv_area;

    _Alignas(CACHELINE) pthread_mutex_t q_mu;
    pthread_cond_t free_cv, ready_cv, exit_cv;
    fp_chunk *free_head, *ready_head, *ready_tail;
    uint32_t n_state[4];
    uint32_t workers_live;
    uint32_t next_waiters;
    _Atomic uint32_t ready_count; /* = n_state[CH_READY], readable without q_mu (consumer spin) */
    bool started, user_stop, ended;
    int efd;
    bool efd_armed;

    _Alignas(CACHELINE) _Atomic int stopping; /* workers poll it */
    _Atomic fp_hresult terminal;

    _Alignas(CACHELINE) pthread_mutex_t r_mu;
    pthread_cond_t r_cv;
    bool r_kick, r_stop, r_started;
    pthread_t r_tid;
    _Atomic int reaper_idle;

    pthread_mutex_t join_mu;
    bool joined;

    _Alignas(CACHELINE) pthread_mutex_t o_mu; /* the outbox queue and its reply threads */
    pthread_cond_t o_cv;
    fp_chunk *o_head, *o_tail;
    bool o_stop;
    uint32_t o_started;
    pthread_t *o_tids;
    replier *o_args;

    _Alignas(CACHELINE) _Atomic uint64_t replied, late_replies, late_python, errors, reply_calls;
    _Atomic uint64_t defaulted[DEF_N];

    _Alignas(CACHELINE) fp_hist lat;
};

/* Allocation counters (always on: touched only at create/destroy), for leak checks. */
static _Atomic int64_t dbg_slabs_alloc, dbg_slabs_freed, dbg_chunks_alloc, dbg_chunks_freed,
    dbg_pumps_live;
#define DBG_ADD(c, n) atomic_fetch_add_explicit(&(c), (n), RLX)
void fp_pump_debug_counters(fp_pump_debug *out)
{
    out->slabs_allocated = atomic_load(&dbg_slabs_alloc);
    out->slabs_freed = atomic_load(&dbg_slabs_freed);
    out->chunks_allocated = atomic_load(&dbg_chunks_alloc);
    out->chunks_freed = atomic_load(&dbg_chunks_freed);
    out->pumps_live = atomic_load(&dbg_pumps_live);
}

/* ---------------------------------------------------------------- helpers */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct timespec abs_ts(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    return ts;
}

static size_t round_up(size_t v, size_t a)
{
    return (v + a - 1) / a * a;
}

static int cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc)
        return rc;
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (!rc)
        rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

static inline uint8_t *slot_at(const fp_pump *p, const fp_chunk *c, uint32_t i)
{
    return c->slots + (size_t)i * p->slot_size;
}

/* eventfd level: readable iff a chunk is ready or next() would return stopped/failed. q_mu held. */
static void efd_update(fp_pump *p)
{
    if (p->efd < 0)
        return;
    bool want = p->ready_head || p->user_stop || p->ended;
    if (want && !p->efd_armed) {
        uint64_t one = 1;
        ssize_t r;
        do
            r = write(p->efd, &one, sizeof one);
        while (r < 0 && errno == EINTR);
        p->efd_armed = true;
    } else if (!want && p->efd_armed) {
        uint64_t v;
        ssize_t r;
        do
            r = read(p->efd, &v, sizeof v);
        while (r < 0 && errno == EINTR);
        p->efd_armed = false;
    }
}

/* ---------------------------------------------------------------- config */

void fp_pump_config_init(fp_pump_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->threads = 2;
    cfg->outstanding = 16;
    cfg->batch = 64;
    cfg->linger_us = 0;
    cfg->deadline_ns = -1;
}

static bool mul_ok(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

/* ---------------------------------------------------------------- create / destroy */

static void free_all(fp_pump *p)
{
    if (p->chunks) {
        for (uint32_t i = 0; i < p->cfg.nchunks; i++)
            pthread_mutex_destroy(&p->chunks[i].mu);
        DBG_ADD(dbg_chunks_freed, p->cfg.nchunks);
    }
    if (p->slab)
        DBG_ADD(dbg_slabs_freed, 1);
    free(p->slab);
    free(p->reply_area);
    free(p->meta);
    free(p->chunks);
    free(p->workers);
    free(p->recv_area);
    free(p->o_tids);
    if (p->o_args)
        for (uint32_t t = 0; t < p->cfg.reply_threads; t++) {
            free(p->o_args[t].send);
            free(p->o_args[t].idx);
        }
    free(p->o_args);
    free(p->default_reply);
    if (p->efd >= 0)
        close(p->efd);
    pthread_mutex_destroy(&p->q_mu);
    pthread_cond_destroy(&p->free_cv);
    pthread_cond_destroy(&p->ready_cv);
    pthread_cond_destroy(&p->exit_cv);
    pthread_mutex_destroy(&p->r_mu);
    pthread_cond_destroy(&p->r_cv);
    pthread_mutex_destroy(&p->join_mu);
    pthread_mutex_destroy(&p->o_mu);
    pthread_cond_destroy(&p->o_cv);
    free(p);
}

fp_hresult fp_pump_create(fp_backend *backend, const fp_pump_config *cfg_in, fp_pump **out)
{
    if (!out)
        return FP_E_INVALIDARG;
    *out = NULL;
    if (!backend || !backend->ops || !backend->ops->get_batch || !backend->ops->reply_batch ||
        !backend->ops->cancel || !cfg_in)
        return FP_E_INVALIDARG;
    fp_pump_config cfg = *cfg_in;
    if (cfg.threads < 1 || cfg.threads > FP_PUMP_MAX_THREADS || cfg.outstanding < 1 ||
        cfg.outstanding > FP_PUMP_MAX_OUTSTANDING || cfg.batch < 1 ||
        cfg.batch > FP_PUMP_MAX_BATCH || cfg.nchunks > FP_PUMP_MAX_CHUNKS ||
        cfg.message_size > FP_PUMP_MAX_MESSAGE || cfg.reply_size > FP_PUMP_MAX_MESSAGE ||
        cfg.spin_us > FP_PUMP_MAX_SPIN_US || cfg.reply_threads > FP_PUMP_MAX_THREADS ||
        cfg._reserved)
        return FP_E_INVALIDARG;
    if (cfg.nchunks == 0)
        cfg.nchunks = cfg.threads * 2u + 4u;

    size_t slot_size = round_up(FP_PUMP_MESSAGE_HEADER + (size_t)cfg.message_size, FP_PUMP_SLOT_ALIGN);
    size_t reply_stride = round_up(FP_PUMP_REPLY_HEADER + (size_t)cfg.reply_size, FP_PUMP_REPLY_ALIGN);
    size_t chunk_bytes, chunk_reply_bytes, slab_bytes, replies_bytes, area_bytes;
    if (!mul_ok(slot_size, cfg.batch, &chunk_bytes) ||
        !mul_ok(reply_stride, cfg.batch, &chunk_reply_bytes))
        return FP_E_OUTOFMEMORY;
    chunk_reply_bytes = round_up(chunk_reply_bytes, CACHELINE);
    if (!mul_ok(chunk_bytes, cfg.nchunks, &slab_bytes) ||
        !mul_ok(chunk_reply_bytes, cfg.nchunks, &replies_bytes) ||
        !mul_ok(replies_bytes, 3, &area_bytes))
        return FP_E_OUTOFMEMORY;
    slab_bytes = round_up(slab_bytes, PAGE);

    /* per-chunk metadata block, each array 64-aligned so chunks never share a line */
    size_t B = cfg.batch;
    size_t off_recv = 0;
    size_t off_msgid = round_up(off_recv + 8 * B, CACHELINE);
    size_t off_len = round_up(off_msgid + 8 * B, CACHELINE);
    size_t off_status = round_up(off_len + 4 * B, CACHELINE);
    size_t off_send = round_up(off_status + 4 * B, CACHELINE);
    size_t off_sidx = round_up(off_send + sizeof(fp_send) * B, CACHELINE);
    size_t off_oidx = round_up(off_sidx + 4 * B, CACHELINE);
    size_t off_ans = round_up(off_oidx + 4 * B, CACHELINE);
    size_t meta_chunk = round_up(off_ans + B, CACHELINE), meta_bytes;
    if (!mul_ok(meta_chunk, cfg.nchunks, &meta_bytes))
        return FP_E_OUTOFMEMORY;
    if (slab_bytes > FP_PUMP_MAX_BYTES || area_bytes > FP_PUMP_MAX_BYTES ||
        meta_bytes > FP_PUMP_MAX_BYTES)
        return FP_E_OUTOFMEMORY;
    /* Every page is touched at create: refuse more than half the machine's memory rather than
     * invite the OOM killer. */
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page_size > 0 &&
        slab_bytes / 2 + area_bytes / 2 + meta_bytes / 2 > (size_t)pages / 2 * (size_t)page_size / 2)
        return FP_E_OUTOFMEMORY;

    fp_pump *p = NULL;
    if (posix_memalign((void **)&p, CACHELINE, sizeof *p))
        return FP_E_OUTOFMEMORY;
    memset(p, 0, sizeof *p);
    p->efd = -1;
    if (pthread_mutex_init(&p->q_mu, NULL) || cond_init_mono(&p->free_cv) ||
        cond_init_mono(&p->ready_cv) || cond_init_mono(&p->exit_cv) ||
        pthread_mutex_init(&p->r_mu, NULL) || cond_init_mono(&p->r_cv) ||
        pthread_mutex_init(&p->join_mu, NULL) || pthread_mutex_init(&p->o_mu, NULL) ||
        cond_init_mono(&p->o_cv)) {
        free(p); /* init failures on Linux only happen for bad attributes; nothing to destroy */
        return FP_E_OUTOFMEMORY;
    }
    p->b = backend;
    p->cfg = cfg;
    p->nrecv = cfg.outstanding < cfg.batch ? cfg.outstanding : cfg.batch;
    p->spin_ns = (uint64_t)cfg.spin_us * 1000u;
    p->slot_size = slot_size;
    p->message_bytes = FP_PUMP_MESSAGE_HEADER + (size_t)cfg.message_size;
    p->reply_stride = reply_stride;
    p->reply_bytes = FP_PUMP_REPLY_HEADER + (size_t)cfg.reply_size;
    p->chunk_bytes = chunk_bytes;
    p->chunk_reply_bytes = chunk_reply_bytes;
    p->slab_bytes = slab_bytes;
    p->reply_area_bytes = round_up(area_bytes, PAGE);
    fp_hist_init(&p->lat);

    void *mem;
    if (posix_memalign(&mem, PAGE, slab_bytes))
        goto oom;
    p->slab = mem;
    DBG_ADD(dbg_slabs_alloc, 1);
    if (posix_memalign(&mem, PAGE, p->reply_area_bytes))
        goto oom;
    p->reply_area = mem;
    if (posix_memalign(&mem, CACHELINE, meta_bytes))
        goto oom;
    p->meta = mem;
    if (posix_memalign(&mem, CACHELINE, sizeof(fp_chunk) * cfg.nchunks))
        goto oom;
    p->chunks = mem;
    if (posix_memalign(&mem, CACHELINE, sizeof(worker) * cfg.threads))
        goto oom;
    p->workers = mem;
    memset(p->workers, 0, sizeof(worker) * cfg.threads);
    size_t recv_per_worker = round_up(sizeof(fp_recv) * p->nrecv, CACHELINE);
    if (posix_memalign(&mem, CACHELINE, recv_per_worker * cfg.threads))
        goto oom;
    p->recv_area = mem;
    if (cfg.reply_threads) {
        if (!(p->o_tids = calloc(cfg.reply_threads, sizeof(pthread_t))) ||
            !(p->o_args = calloc(cfg.reply_threads, sizeof(replier))))
            goto oom;
        for (uint32_t t = 0; t < cfg.reply_threads; t++) {
            replier *r = &p->o_args[t];
            r->pump = p;
            if (!(r->send = calloc(cfg.batch, sizeof(fp_send))) ||
                !(r->idx = calloc(cfg.batch, sizeof(uint32_t))))
                goto oom;
        }
    }
    p->default_reply = calloc(1, cfg.reply_size ? cfg.reply_size : 1);
    if (!p->default_reply)
        goto oom;
    if (cfg.default_reply && cfg.reply_size)
        memcpy(p->default_reply, cfg.default_reply, cfg.reply_size);
    p->cfg.default_reply = p->default_reply;

    memset(p->slab, 0, slab_bytes); /* touch the pages now, not on the hot path */
    memset(p->reply_area, 0, p->reply_area_bytes);
    memset(p->meta, 0, meta_bytes);

    for (uint32_t i = 0; i < cfg.nchunks; i++) {
        fp_chunk *c = &p->chunks[i];
        memset(c, 0, sizeof *c);
        pthread_mutex_init(&c->mu, NULL);
        c->pump = p;
        c->index = i;
        c->state = CH_FREE;
        c->slots = p->slab + (size_t)i * chunk_bytes;
        c->replies = p->reply_area + (size_t)i * chunk_reply_bytes;
        c->defaults = p->reply_area + replies_bytes + (size_t)i * chunk_reply_bytes;
        c->outbox = p->reply_area + 2 * replies_bytes + (size_t)i * chunk_reply_bytes;
        uint8_t *m = p->meta + (size_t)i * meta_chunk;
        c->recv_ns = (uint64_t *)(void *)(m + off_recv);
        c->msgid = (uint64_t *)(void *)(m + off_msgid);
        c->length = (uint32_t *)(void *)(m + off_len);
        c->status = (int32_t *)(void *)(m + off_status);
        c->send = (fp_send *)(void *)(m + off_send);
        c->send_idx = (uint32_t *)(void *)(m + off_sidx);
        c->out_idx = (uint32_t *)(void *)(m + off_oidx);
        c->answered = m + off_ans;
        for (uint32_t s = 0; s < cfg.batch; s++)
            memcpy(c->defaults + (size_t)s * reply_stride + FP_PUMP_REPLY_HEADER, p->default_reply,
                   cfg.reply_size);
    }
    DBG_ADD(dbg_chunks_alloc, cfg.nchunks);
    /* free list in index order (LIFO afterwards: a recycled chunk is cache-warm) */
    for (uint32_t i = cfg.nchunks; i-- > 0;) {
        p->chunks[i].next = p->free_head;
        p->free_head = &p->chunks[i];
    }
    p->n_state[CH_FREE] = cfg.nchunks;
    for (uint32_t t = 0; t < cfg.threads; t++) {
        p->workers[t].pump = p;
        p->workers[t].recv = (fp_recv *)(void *)((uint8_t *)p->recv_area + t * recv_per_worker);
    }
    DBG_ADD(dbg_pumps_live, 1);
    *out = p;
    return FP_S_OK;
oom:
    if (p->chunks) { /* mutexes not initialised yet on this path */
        free(p->chunks);
        p->chunks = NULL;
    }
    free_all(p);
    return FP_E_OUTOFMEMORY;
}

/* ---------------------------------------------------------------- answering */

/* Sends n replies, records their latency and outcome counts. Returns the backend call's result. */
static fp_hresult send_entries(fp_pump *p, fp_chunk *c, fp_send *send, const uint32_t *idx,
                               uint32_t n, uint32_t *late, uint32_t *errs)
{
    fp_hresult hr = p->b->ops->reply_batch(p->b, send, n);
    uint64_t now = now_ns();
    atomic_fetch_add_explicit(&p->reply_calls, 1, RLX);
    if (!FP_SUCCEEDED(hr)) {
        *errs += n;
        return hr;
    }
    /* receive times come in runs (one clock read per get): one histogram add per run */
    uint64_t run_v = 0, run_n = 0;
    for (uint32_t k = 0; k < n; k++) {
        fp_hresult e = send[k].hr;
        if (e == FP_E_FLT_NO_WAITER_FOR_REPLY)
            (*late)++;
        else if (!FP_SUCCEEDED(e))
            (*errs)++;
        uint64_t r = c->recv_ns[idx[k]];
        uint64_t v = now > r ? now - r : 0;
        if (run_n && v == run_v) {
            run_n++;
        } else {
            fp_hist_record_n(&p->lat, run_v, run_n);
            run_v = v;
            run_n = 1;
        }
    }
    fp_hist_record_n(&p->lat, run_v, run_n);
    return hr;
}

/* Sends c->send[0..n-1] with the chunk's lock held (defaults, synchronous replies). */
static fp_hresult send_locked(fp_pump *p, fp_chunk *c, uint32_t n, uint32_t *late, uint32_t *errs)
{
    return send_entries(p, c, c->send, c->send_idx, n, late, errs);
}

static void add_outcomes(fp_pump *p, uint32_t late, uint32_t errs)
{
    if (late)
        atomic_fetch_add_explicit(&p->late_replies, late, RLX);
    if (errs)
        atomic_fetch_add_explicit(&p->errors, errs, RLX);
}

/* Default-answers every pending message of c received at or before `cutoff` (chunk mu held).
 * Returns the receive time of the first message still pending after that, or UINT64_MAX. */
static uint64_t default_locked(fp_pump *p, fp_chunk *c, uint64_t cutoff, int reason)
{
    uint32_t n = 0, late = 0, errs = 0;
    uint64_t next = UINT64_MAX;
    uint32_t i = c->first_pending;
    while (i < c->count && c->answered[i] != ANS_PENDING)
        i++;
    c->first_pending = i;
    for (; i < c->count && c->pending; i++) {
        if (c->answered[i] != ANS_PENDING)
            continue;
        if (c->recv_ns[i] > cutoff) { /* slots fill in receive order: the rest are younger */
            next = c->recv_ns[i];
            break;
        }
        c->answered[i] = ANS_DEFAULT;
        c->pending--;
        uint8_t *r = c->defaults + (size_t)i * p->reply_stride;
        FP_REPLY_HEADER *h = (FP_REPLY_HEADER *)(void *)r;
        h->Status = 0;
        h->_pad = 0;
        h->MessageId = c->msgid[i];
        c->send[n].buffer = r;
        c->send[n].size = (uint32_t)p->reply_bytes;
        c->send[n].hr = FP_S_OK;
        c->send_idx[n] = i;
        n++;
    }
    if (n) {
        send_locked(p, c, n, &late, &errs);
        atomic_fetch_add_explicit(&p->defaulted[reason], n, RLX);
        add_outcomes(p, late, errs);
    }
    return next;
}

/* Sends the chunk's outbox (chunk mu held). Returns the backend call's result. */
static fp_hresult flush_outbox_locked(fp_pump *p, fp_chunk *c, uint32_t *late, uint32_t *errs)
{
    uint32_t n = c->out_n;
    const uint32_t size = (uint32_t)p->reply_bytes;
    for (uint32_t k = 0; k < n; k++) {
        c->send[k].buffer = c->outbox + (size_t)c->out_idx[k] * p->reply_stride;
        c->send[k].size = size;
        c->send[k].hr = FP_S_OK;
        c->send_idx[k] = c->out_idx[k];
    }
    c->out_n = 0;
    if (!n)
        return FP_S_OK;
    fp_hresult hr = send_locked(p, c, n, late, errs);
    atomic_fetch_add_explicit(&p->replied, n, RLX);
    return hr;
}

fp_hresult fp_chunk_reply(fp_pump *p, fp_chunk *c, const uint8_t *mask, fp_reply_result *res)
{
    fp_reply_result r = {0};
    if (res)
        *res = r;
    if (!p || !c || c->pump != p)
        return FP_E_INVALIDARG;
    fp_hresult hr = FP_S_OK;
    uint32_t n = 0;
    const size_t stride = p->reply_stride;
    const size_t payload = p->reply_bytes - FP_PUMP_REPLY_HEADER;
    bool queue = false, kick = false;
    pthread_mutex_lock(&c->mu);
    for (uint32_t i = 0; i < c->count; i++) {
        if (mask && !mask[i])
            continue;
        switch (c->answered[i]) {
        case ANS_PENDING: {
            c->answered[i] = ANS_CONSUMER;
            c->pending--;
            uint8_t *out = c->outbox + (size_t)i * stride;
            FP_REPLY_HEADER *h = (FP_REPLY_HEADER *)(void *)out;
            h->Status = c->status[i];
            h->_pad = 0;
            h->MessageId = c->msgid[i];
            memcpy(out + FP_PUMP_REPLY_HEADER, c->replies + (size_t)i * stride + FP_PUMP_REPLY_HEADER,
                   payload);
            c->out_idx[c->out_n++] = i;
            n++;
            break;
        }
        case ANS_NOREPLY:
            r.no_reply++;
            break;
        default:
            r.already++;
            break;
        }
    }
    if (n) {
        pthread_mutex_lock(&p->o_mu);
        bool here = (p->b->flags & FP_BACKEND_LOCAL_REPLY) && n <= FP_PUMP_INLINE_REPLIES &&
                    !p->o_head && !c->out_queued; /* (the outbox then holds only these n) */
        if (p->o_started && !p->o_stop && !here) {
            queue = true;
            if (!c->out_queued) {
                c->out_queued = true;
                c->holds++; /* the reply thread's, dropped after it sent */
                c->out_next = NULL;
                if (p->o_tail)
                    p->o_tail->out_next = c;
                else
                    p->o_head = c;
                p->o_tail = c;
                kick = true;
            }
        }
        pthread_mutex_unlock(&p->o_mu);
        if (!queue)
            hr = flush_outbox_locked(p, c, &r.late, &r.errors);
    }
    pthread_mutex_unlock(&c->mu);
    /* Signalled with no lock held: the reply thread then never wakes into a lock we hold. */
    if (kick)
        pthread_cond_signal(&p->o_cv);
    r.sent = n;
    if (r.already)
        atomic_fetch_add_explicit(&p->late_python, r.already, RLX);
    add_outcomes(p, r.late, r.errors);
    if (res)
        *res = r;
    return hr;
}

/* A reply thread: takes a chunk's queued replies under its lock, then sends them without it, so
 * the consumer's release of the batch never waits for the port. The chunk stays held (and its
 * outbox slots untouched: every message is answered once) until the send is done. */
static void *replier_main(void *arg)
{
    replier *r = arg;
    fp_pump *p = r->pump;
    fp_thread_name("fp-reply-", (unsigned)(r - p->o_args));
    for (;;) {
        pthread_mutex_lock(&p->o_mu);
        while (!p->o_head && !p->o_stop)
            pthread_cond_wait(&p->o_cv, &p->o_mu);
        fp_chunk *c = p->o_head;
        if (!c) { /* stopping and drained */
            pthread_mutex_unlock(&p->o_mu);
            return NULL;
        }
        p->o_head = c->out_next;
        if (!p->o_head)
            p->o_tail = NULL;
        c->out_next = NULL;
        pthread_mutex_unlock(&p->o_mu);

        pthread_mutex_lock(&c->mu);
        c->out_queued = false;
        uint32_t n = c->out_n;
        for (uint32_t k = 0; k < n; k++) {
            r->idx[k] = c->out_idx[k];
            r->send[k].buffer = c->outbox + (size_t)c->out_idx[k] * p->reply_stride;
            r->send[k].size = (uint32_t)p->reply_bytes;
            r->send[k].hr = FP_S_OK;
        }
        c->out_n = 0;
        pthread_mutex_unlock(&c->mu);
        if (n) {
            uint32_t late = 0, errs = 0;
            send_entries(p, c, r->send, r->idx, n, &late, &errs);
            atomic_fetch_add_explicit(&p->replied, n, RLX);
            add_outcomes(p, late, errs);
        }
        fp_chunk_unref(p, c);
    }
}

fp_hresult fp_chunk_finish(fp_pump *p, fp_chunk *c, int reason)
{
    if (!p || !c || c->pump != p || (reason != FP_FINISH_RELEASE && reason != FP_FINISH_ERROR))
        return FP_E_INVALIDARG;
    pthread_mutex_lock(&c->mu);
    if (!c->finished) {
        c->finished = 1;
        if (c->pending)
            default_locked(p, c, UINT64_MAX, reason == FP_FINISH_ERROR ? DEF_ERROR : DEF_RELEASE);
    }
    pthread_mutex_unlock(&c->mu);
    return FP_S_OK;
}

/* ---------------------------------------------------------------- chunk transitions */

/* Back to the free list. No one else may reach c: its holds are gone and it is in no queue. */
static void chunk_release(fp_pump *p, fp_chunk *c)
{
#ifdef FASTPORT_DEBUG
    /* Poison recycled slots: a view used past its life reads 0xDB, not a stranger's message. */
    memset(slot_at(p, c, 0), 0xDB, (size_t)p->cfg.batch * p->slot_size);
#endif
    pthread_mutex_lock(&c->mu);
    c->count = 0;
    c->pending = 0;
    c->first_pending = 0;
    c->finished = 0;
    c->holds = 0;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&p->q_mu);
    p->n_state[c->state]--;
    c->state = CH_FREE;
    p->n_state[CH_FREE]++;
    atomic_store_explicit(&p->ready_count, p->n_state[CH_READY], RLX);
    c->next = p->free_head;
    p->free_head = c;
    /* signalled under the lock: once it is released, fp_pump_destroy may free p */
    pthread_cond_signal(&p->free_cv);
    pthread_mutex_unlock(&p->q_mu);
}

void fp_chunk_ref(fp_pump *p, fp_chunk *c)
{
    (void)p;
    pthread_mutex_lock(&c->mu);
    c->holds++;
    pthread_mutex_unlock(&c->mu);
}

void fp_chunk_unref(fp_pump *p, fp_chunk *c)
{
    bool release = false;
    pthread_mutex_lock(&c->mu);
    if (c->holds && --c->holds == 0) {
        if (!c->finished) {
            c->finished = 1;
            if (c->pending)
                default_locked(p, c, UINT64_MAX, DEF_RELEASE);
        }
        release = true;
    }
    pthread_mutex_unlock(&c->mu);
    if (release)
        chunk_release(p, c);
}

uint32_t fp_chunk_count(const fp_chunk *c)
{
    return c->count;
}

uint8_t *fp_chunk_slots(const fp_chunk *c)
{
    return c->slots;
}

void fp_chunk_get_info(const fp_pump *p, const fp_chunk *c, fp_chunk_info *out)
{
    out->index = c->index;
    out->count = c->count;
    out->slots = c->slots;
    out->slot_size = p->slot_size;
    out->replies = c->replies;
    out->reply_payload = c->replies + FP_PUMP_REPLY_HEADER;
    out->reply_stride = p->reply_stride;
    out->status = c->status;
    out->recv_ns = c->recv_ns;
    out->length = c->length;
}

/* ---------------------------------------------------------------- consumer */

int fp_pump_next(fp_pump *p, int64_t timeout_ns, fp_chunk **out)
{
    *out = NULL;
    uint64_t until = timeout_ns > 0 ? now_ns() + (uint64_t)timeout_ns : 0;
    fp_chunk *c = NULL;
    int rc;
    bool spin = p->spin_ns > 0;
    pthread_mutex_lock(&p->q_mu);
    for (;;) {
        bool failed = atomic_load_explicit(&p->terminal, RLX) != FP_S_OK;
        if (!failed && p->user_stop) {
            rc = FP_PUMP_STOPPED;
            break;
        }
        if (p->ready_head) {
            c = p->ready_head;
            p->ready_head = c->next;
            if (!p->ready_head)
                p->ready_tail = NULL;
            c->next = NULL;
            p->n_state[CH_READY]--;
            p->n_state[CH_HELD]++;
            atomic_store_explicit(&p->ready_count, p->n_state[CH_READY], RLX);
            c->state = CH_HELD;
            efd_update(p);
            rc = FP_PUMP_CHUNK;
            break;
        }
        if (p->ended) {
            rc = failed ? FP_PUMP_FAILED : FP_PUMP_STOPPED;
            break;
        }
        if (timeout_ns == 0) {
            rc = FP_PUMP_TIMEOUT;
            break;
        }
        if (spin) { /* once per call: a short busy wait beats a futex sleep + wake-up */
            spin = false;
            pthread_mutex_unlock(&p->q_mu);
            uint64_t t0 = now_ns(), lim = p->spin_ns;
            if (timeout_ns > 0 && (uint64_t)timeout_ns < lim)
                lim = (uint64_t)timeout_ns;
            for (uint32_t k = 1;; k++) {
                if (atomic_load_explicit(&p->ready_count, RLX) ||
                    atomic_load_explicit(&p->stopping, RLX))
                    break;
                cpu_relax();
                if (k % 16 == 0 && now_ns() - t0 >= lim)
                    break;
            }
            pthread_mutex_lock(&p->q_mu);
            continue;
        }
        p->next_waiters++;
        if (timeout_ns < 0) {
            pthread_cond_wait(&p->ready_cv, &p->q_mu);
        } else {
            struct timespec ts = abs_ts(until);
            int w = pthread_cond_timedwait(&p->ready_cv, &p->q_mu, &ts);
            if (w == ETIMEDOUT && !p->ready_head && !p->user_stop && !p->ended) {
                p->next_waiters--;
                rc = FP_PUMP_TIMEOUT;
                break;
            }
        }
        p->next_waiters--;
    }
    pthread_mutex_unlock(&p->q_mu);
    if (c) {
        pthread_mutex_lock(&c->mu);
        c->holds = 1;
        pthread_mutex_unlock(&c->mu);
        *out = c;
    }
    return rc;
}

int fp_pump_try_next(fp_pump *p, fp_chunk **out)
{
    return fp_pump_next(p, 0, out);
}

fp_hresult fp_pump_error(fp_pump *p)
{
    return atomic_load(&p->terminal);
}

int fp_pump_fd(fp_pump *p)
{
    pthread_mutex_lock(&p->q_mu);
    if (p->efd < 0) {
        p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (p->efd >= 0) {
            p->efd_armed = false;
            efd_update(p);
        }
    }
    int fd = p->efd;
    pthread_mutex_unlock(&p->q_mu);
    return fd;
}

/* ---------------------------------------------------------------- workers */

static void reaper_kick(fp_pump *p)
{
    pthread_mutex_lock(&p->r_mu);
    p->r_kick = true;
    pthread_cond_signal(&p->r_cv);
    pthread_mutex_unlock(&p->r_mu);
}

/* Stops the workers because of a backend failure; the first failure becomes the terminal error
 * unless the user had already asked to stop (then failures are part of shutting down). */
static void pump_fail(fp_pump *p, fp_hresult hr)
{
    pthread_mutex_lock(&p->q_mu);
    if (!p->user_stop) {
        fp_hresult expect = FP_S_OK;
        atomic_compare_exchange_strong(&p->terminal, &expect, hr);
    }
    atomic_store(&p->stopping, 1);
    pthread_cond_broadcast(&p->free_cv);
    pthread_mutex_unlock(&p->q_mu);
    p->b->ops->cancel(p->b);
}

static fp_chunk *take_free(fp_pump *p)
{
    fp_chunk *c = NULL;
    pthread_mutex_lock(&p->q_mu);
    while (!p->free_head && !atomic_load_explicit(&p->stopping, RLX))
        pthread_cond_wait(&p->free_cv, &p->q_mu);
    if (!atomic_load_explicit(&p->stopping, RLX)) {
        c = p->free_head;
        p->free_head = c->next;
        c->next = NULL;
        p->n_state[CH_FREE]--;
        p->n_state[CH_FILLING]++;
        c->state = CH_FILLING;
    }
    pthread_mutex_unlock(&p->q_mu);
    return c;
}

/* Hands a filled chunk to the consumer side, or returns an empty one to the free list. */
static void publish(fp_pump *p, worker *w, fp_chunk *c)
{
    uint32_t count = c->count; /* only this worker changes count while filling */
    if (!count) {
        pthread_mutex_lock(&p->q_mu);
        p->n_state[CH_FILLING]--;
        p->n_state[CH_FREE]++;
        c->state = CH_FREE;
        c->next = p->free_head;
        p->free_head = c;
        pthread_cond_signal(&p->free_cv);
        pthread_mutex_unlock(&p->q_mu);
        return;
    }
    const uint32_t rs = p->cfg.reply_size;
    if (rs) {
        for (uint32_t i = 0; i < count; i++)
            memcpy(c->replies + (size_t)i * p->reply_stride + FP_PUMP_REPLY_HEADER,
                   p->default_reply, rs);
    }
    memset(c->status, 0, sizeof(int32_t) * count);
    atomic_fetch_add_explicit(&w->batches, 1, RLX);
    pthread_mutex_lock(&p->q_mu);
    p->n_state[CH_FILLING]--;
    p->n_state[CH_READY]++;
    atomic_store_explicit(&p->ready_count, p->n_state[CH_READY], RLX);
    c->state = CH_READY;
    c->next = NULL;
    if (p->ready_tail)
        p->ready_tail->next = c;
    else
        p->ready_head = c;
    p->ready_tail = c;
    efd_update(p);
    bool wake = p->next_waiters != 0;
    pthread_mutex_unlock(&p->q_mu);
    if (wake) /* after unlocking: the consumer never wakes into a lock we hold */
        pthread_cond_signal(&p->ready_cv);
}

/* Fills c until it is due for publishing. Returns S_OK, or a terminal backend failure. */
static fp_hresult fill_chunk(fp_pump *p, worker *w, void *ts, fp_chunk *c)
{
    fp_backend *b = p->b;
    fp_recv *e = w->recv;
    const uint32_t batch = p->cfg.batch;
    const uint64_t linger = (uint64_t)p->cfg.linger_us * 1000u;
    const uint32_t msg_bytes = (uint32_t)p->message_bytes;
    const bool deadline = p->cfg.deadline_ns >= 0;
    uint32_t filled = 0;
    uint64_t first = 0;
    for (;;) {
        if (atomic_load_explicit(&p->stopping, memory_order_acquire))
            return FP_S_OK;
        uint32_t n = batch - filled;
        if (n > p->nrecv)
            n = p->nrecv;
        uint32_t tmo = FP_PUMP_FIRST_GET_MS;
        if (filled) {
            uint64_t now = now_ns(), el = now - first;
            if (el >= linger)
                return FP_S_OK;
            tmo = (uint32_t)((linger - el) / 1000000u);
        }
        for (uint32_t j = 0; j < n; j++) {
            e[j].buffer = slot_at(p, c, filled + j);
            e[j].size = msg_bytes;
            e[j].length = 0;
            e[j].hr = FP_S_OK;
        }
        uint32_t got = 0;
        fp_hresult hr = b->ops->get_batch(b, ts, e, n, tmo, &got);
        atomic_fetch_add_explicit(&w->gets, 1, RLX);
        if (hr == FP_E_TIMEOUT || (FP_SUCCEEDED(hr) && got == 0)) {
            if (filled)
                return FP_S_OK;
            continue;
        }
        if (hr == FP_E_OPERATION_ABORTED)
            continue; /* stop is checked at the top; a foreign cancel just retries */
        if (!FP_SUCCEEDED(hr))
            return hr;
        if (got > n)
            got = n;
        uint64_t now = now_ns();
        uint32_t trunc = 0, errs = 0, noreply = 0, pend = 0;
        for (uint32_t j = 0; j < got; j++) {
            uint32_t i = filled + j;
            uint8_t *s = (uint8_t *)e[j].buffer;
            uint32_t len = e[j].length;
            if (len > msg_bytes)
                len = msg_bytes;
            if (len < msg_bytes) /* never let a handler see an older message's bytes */
                memset(s + len, 0, msg_bytes - len);
            if (e[j].hr == FP_E_INSUFFICIENT_BUFFER)
                trunc++;
            else if (!FP_SUCCEEDED(e[j].hr))
                errs++;
            const FP_MESSAGE_HEADER *h = (const FP_MESSAGE_HEADER *)(const void *)s;
            c->recv_ns[i] = now;
            c->length[i] = len;
            c->msgid[i] = h->MessageId;
            if (h->ReplyLength) {
                c->answered[i] = ANS_PENDING;
                pend++;
            } else {
                c->answered[i] = ANS_NOREPLY;
                noreply++;
            }
        }
        pthread_mutex_lock(&c->mu);
        c->count = filled + got;
        c->pending += pend;
        pthread_mutex_unlock(&c->mu);
        /* pairs with the reaper's idle store before it scans (see reaper_main) */
        if (deadline && pend && atomic_load(&p->reaper_idle))
            reaper_kick(p);
        atomic_fetch_add_explicit(&w->received, got, RLX);
        if (trunc)
            atomic_fetch_add_explicit(&w->truncated, trunc, RLX);
        if (errs)
            atomic_fetch_add_explicit(&w->errors, errs, RLX);
        if (noreply)
            atomic_fetch_add_explicit(&w->no_reply, noreply, RLX);
        if (!filled)
            first = now;
        filled += got;
        if (filled == batch || linger == 0)
            return FP_S_OK;
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    fp_pump *p = w->pump;
    fp_backend *b = p->b;
    fp_thread_name("fp-worker-", (unsigned)(w - p->workers));
    void *ts = NULL;
    bool ok = true;
    if (b->ops->thread_init) {
        ts = b->ops->thread_init(b);
        if (!ts) {
            pump_fail(p, FP_E_OUTOFMEMORY);
            ok = false;
        }
    }
    while (ok) {
        fp_chunk *c = take_free(p);
        if (!c)
            break;
        fp_hresult hr = fill_chunk(p, w, ts, c);
        publish(p, w, c);
        if (!FP_SUCCEEDED(hr)) {
            pump_fail(p, hr);
            break;
        }
    }
    if (ok && b->ops->thread_fini)
        b->ops->thread_fini(b, ts);
    pthread_mutex_lock(&p->q_mu);
    if (--p->workers_live == 0) {
        p->ended = true;
        efd_update(p);
        pthread_cond_broadcast(&p->ready_cv);
        pthread_cond_broadcast(&p->exit_cv);
    }
    pthread_mutex_unlock(&p->q_mu);
    return NULL;
}

/* ---------------------------------------------------------------- deadline reaper */

/* Sleeps until the earliest deadline among pending messages. When nothing is pending it sleeps
 * until a worker kicks it: the worker stores a chunk's count under the chunk mutex, then loads
 * reaper_idle; the reaper stores reaper_idle = 1, then reads every count under the same mutexes,
 * so either the reaper sees the new messages or the worker sees idle and kicks. A deadline can only
 * be later than the ones already pending, so while pending the timed sleep never oversleeps. */
static void *reaper_main(void *arg)
{
    fp_pump *p = arg;
    const uint64_t dl = (uint64_t)p->cfg.deadline_ns;
    fp_thread_name("fp-reaper", 0);
    for (;;) {
        atomic_store(&p->reaper_idle, 1);
        uint64_t now = now_ns();
        uint64_t cutoff = now >= dl ? now - dl : 0;
        uint64_t next = UINT64_MAX;
        for (uint32_t i = 0; i < p->cfg.nchunks; i++) {
            fp_chunk *c = &p->chunks[i];
            pthread_mutex_lock(&c->mu);
            if (c->pending) {
                uint64_t r = default_locked(p, c, cutoff, DEF_DEADLINE);
                if (r < next)
                    next = r;
            }
            pthread_mutex_unlock(&c->mu);
        }
        pthread_mutex_lock(&p->r_mu);
        if (p->r_stop) {
            pthread_mutex_unlock(&p->r_mu);
            break;
        }
        if (next != UINT64_MAX) {
            atomic_store(&p->reaper_idle, 0);
            if (!p->r_kick) {
                struct timespec ts = abs_ts(next + dl);
                pthread_cond_timedwait(&p->r_cv, &p->r_mu, &ts);
            }
        } else {
            while (!p->r_kick && !p->r_stop)
                pthread_cond_wait(&p->r_cv, &p->r_mu);
        }
        p->r_kick = false;
        bool stop = p->r_stop;
        pthread_mutex_unlock(&p->r_mu);
        if (stop)
            break;
    }
    return NULL;
}

/* ---------------------------------------------------------------- start / stop / join */

fp_hresult fp_pump_start(fp_pump *p)
{
    if (!p)
        return FP_E_INVALIDARG;
    pthread_mutex_lock(&p->q_mu);
    if (p->started || p->user_stop) {
        pthread_mutex_unlock(&p->q_mu);
        return FP_E_INVALIDARG;
    }
    p->started = true;
    p->workers_live = p->cfg.threads;
    pthread_mutex_unlock(&p->q_mu);

    bool failed = false;
    for (uint32_t t = 0; t < p->cfg.reply_threads && !failed; t++) {
        pthread_mutex_lock(&p->o_mu);
        if (pthread_create(&p->o_tids[t], NULL, replier_main, &p->o_args[t]) == 0)
            p->o_started++;
        else
            failed = true;
        pthread_mutex_unlock(&p->o_mu);
    }
    if (!failed && p->cfg.deadline_ns >= 0) {
        if (pthread_create(&p->r_tid, NULL, reaper_main, p) == 0)
            p->r_started = true;
        else
            failed = true;
    }
    for (uint32_t t = 0; t < p->cfg.threads; t++) {
        worker *w = &p->workers[t];
        if (!failed && pthread_create(&w->tid, NULL, worker_main, w) == 0) {
            w->started = true;
            continue;
        }
        failed = true;
        pthread_mutex_lock(&p->q_mu); /* account for the worker that will never run */
        if (--p->workers_live == 0) {
            p->ended = true;
            pthread_cond_broadcast(&p->exit_cv);
            pthread_cond_broadcast(&p->ready_cv);
        }
        pthread_mutex_unlock(&p->q_mu);
    }
    if (failed) {
        fp_pump_join(p);
        return FP_E_OUTOFMEMORY;
    }
    return FP_S_OK;
}

void fp_pump_stop(fp_pump *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->q_mu);
    p->user_stop = true;
    atomic_store(&p->stopping, 1);
    efd_update(p);
    pthread_cond_broadcast(&p->free_cv);
    pthread_cond_broadcast(&p->ready_cv);
    bool started = p->started;
    pthread_mutex_unlock(&p->q_mu);
    if (started)
        p->b->ops->cancel(p->b);
}

void fp_pump_join(fp_pump *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->join_mu);
    if (p->joined) {
        pthread_mutex_unlock(&p->join_mu);
        return;
    }
    fp_pump_stop(p);
    /* A worker may enter its get just after the cancel: cancel again every few ms instead of
     * waiting out FP_PUMP_FIRST_GET_MS (a backend's cancel only wakes gets already pending). */
    pthread_mutex_lock(&p->q_mu);
    while (p->started && p->workers_live > 0) {
        struct timespec ts = abs_ts(now_ns() + 2000000u);
        pthread_cond_timedwait(&p->exit_cv, &p->q_mu, &ts);
        if (p->workers_live > 0) {
            pthread_mutex_unlock(&p->q_mu);
            p->b->ops->cancel(p->b);
            pthread_mutex_lock(&p->q_mu);
        }
    }
    pthread_mutex_unlock(&p->q_mu);
    for (uint32_t t = 0; t < p->cfg.threads; t++) {
        if (p->workers[t].started) {
            pthread_join(p->workers[t].tid, NULL);
            p->workers[t].started = false;
        }
    }
    if (p->r_started) {
        pthread_mutex_lock(&p->r_mu);
        p->r_stop = true;
        pthread_cond_signal(&p->r_cv);
        pthread_mutex_unlock(&p->r_mu);
        pthread_join(p->r_tid, NULL);
        p->r_started = false;
    }
    /* reply threads send what is queued, then exit; replies queued later are sent in place */
    pthread_mutex_lock(&p->o_mu);
    p->o_stop = true;
    pthread_cond_broadcast(&p->o_cv);
    uint32_t repliers = p->o_started;
    pthread_mutex_unlock(&p->o_mu);
    for (uint32_t t = 0; t < repliers; t++)
        pthread_join(p->o_tids[t], NULL);
    /* every chunk is now free, ready or held: answer what is left */
    for (uint32_t i = 0; i < p->cfg.nchunks; i++) {
        fp_chunk *c = &p->chunks[i];
        pthread_mutex_lock(&c->mu);
        if (c->pending)
            default_locked(p, c, UINT64_MAX, DEF_STOP);
        pthread_mutex_unlock(&c->mu);
    }
    if (atomic_load(&p->terminal) == FP_S_OK) {
        pthread_mutex_lock(&p->q_mu);
        fp_chunk *c = p->ready_head;
        p->ready_head = p->ready_tail = NULL;
        efd_update(p);
        pthread_mutex_unlock(&p->q_mu);
        while (c) {
            fp_chunk *nx = c->next;
            c->next = NULL;
            chunk_release(p, c);
            c = nx;
        }
    }
    p->joined = true;
    pthread_mutex_unlock(&p->join_mu);
}

fp_hresult fp_pump_destroy(fp_pump *p)
{
    if (!p)
        return FP_S_OK;
    fp_pump_join(p);
    pthread_mutex_lock(&p->q_mu);
    uint32_t held = p->n_state[CH_HELD];
    pthread_mutex_unlock(&p->q_mu);
    if (held)
        return FP_PUMP_E_BUSY;
    DBG_ADD(dbg_pumps_live, -1);
    free_all(p);
    return FP_S_OK;
}

/* ---------------------------------------------------------------- stats */

void fp_pump_stats_get(fp_pump *p, fp_pump_stats *out)
{
    memset(out, 0, sizeof *out);
    for (uint32_t t = 0; t < p->cfg.threads; t++) {
        worker *w = &p->workers[t];
        out->received += atomic_load_explicit(&w->received, RLX);
        out->truncated += atomic_load_explicit(&w->truncated, RLX);
        out->no_reply += atomic_load_explicit(&w->no_reply, RLX);
        out->batches += atomic_load_explicit(&w->batches, RLX);
        out->get_calls += atomic_load_explicit(&w->gets, RLX);
        out->errors += atomic_load_explicit(&w->errors, RLX);
    }
    out->replied = atomic_load_explicit(&p->replied, RLX);
    out->defaulted_deadline = atomic_load_explicit(&p->defaulted[DEF_DEADLINE], RLX);
    out->defaulted_error = atomic_load_explicit(&p->defaulted[DEF_ERROR], RLX);
    out->defaulted_release = atomic_load_explicit(&p->defaulted[DEF_RELEASE], RLX);
    out->defaulted_stop = atomic_load_explicit(&p->defaulted[DEF_STOP], RLX);
    out->late_replies = atomic_load_explicit(&p->late_replies, RLX);
    out->late_python = atomic_load_explicit(&p->late_python, RLX);
    out->errors += atomic_load_explicit(&p->errors, RLX);
    out->reply_calls = atomic_load_explicit(&p->reply_calls, RLX);
    pthread_mutex_lock(&p->q_mu);
    out->chunks_total = p->cfg.nchunks;
    out->chunks_free = p->n_state[CH_FREE];
    out->chunks_filling = p->n_state[CH_FILLING];
    out->chunks_ready = p->n_state[CH_READY];
    out->chunks_held = p->n_state[CH_HELD];
    pthread_mutex_unlock(&p->q_mu);
    fp_hist_summary s;
    fp_hist_summarize(&p->lat, &s);
    out->latency_count = s.count;
    out->latency_min_ns = s.min;
    out->latency_mean_ns = s.mean;
    out->latency_max_ns = s.max;
    out->latency_p50_ns = s.p50;
    out->latency_p90_ns = s.p90;
    out->latency_p99_ns = s.p99;
    out->latency_p999_ns = s.p999;
}

void fp_pump_get_layout(const fp_pump *p, fp_pump_layout *out)
{
    out->slab = p->slab;
    out->slab_bytes = p->slab_bytes;
    out->replies = p->reply_area;
    out->replies_bytes = p->chunk_reply_bytes * p->cfg.nchunks;
    out->slot_size = p->slot_size;
    out->message_bytes = p->message_bytes;
    out->reply_stride = p->reply_stride;
    out->reply_bytes = p->reply_bytes;
    out->chunk_bytes = p->chunk_bytes;
    out->chunk_reply_bytes = p->chunk_reply_bytes;
    out->nchunks = p->cfg.nchunks;
    out->batch = p->cfg.batch;
    out->threads = p->cfg.threads;
    out->outstanding = p->cfg.outstanding;
}
