/* The pump's internals, shared by its files:
 *   plan.c      configuration, geometry, allocation, layout, destroy
 *   chunks.c    completions -> slots -> batches: recording, publishing, taking, holds, freeing
 *   answer.c    exactly one answer per message: consumer replies, defaults, reply threads
 *   workers.c   posting gets, the leader token, worker threads, the deadline reaper, start/stop
 *   consumer.c  fp_pump_next, the wake-up object (event fd / event), stats
 *
 * Locks, and their order (a lock on the left may be held while taking one on its right, never
 * the reverse): post_mu -> q_mu;  chunk mu -> q_mu;  chunk mu -> o_mu.  r_mu and join_mu alone.
 *   post_mu   the posting cursor, the overflow slots; held across backend post() calls, so gets
 *             are posted in slot order (the source serves the oldest get first: messages then
 *             land in slot order and batches stay contiguous).
 *   q_mu      slot kinds and the cursors of every chunk (done, taken), the free list, the ready
 *             list, holds, the leader token, consumer/worker bookkeeping, stop flags, event fd.
 *   chunk mu  the answer state of a chunk's messages (answered[], unanswered, first_pending) and
 *             its outbox; held across that chunk's reply() calls, so a message is answered once.
 *   o_mu      the reply threads' queue.
 */
#ifndef FP_PUMP_INTERNAL_H
#define FP_PUMP_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/fp_os.h"
#include "pump.h"

#define CACHELINE 64u
#define PAGE 4096u
#define RLX memory_order_relaxed

/* kind[] (q_mu): what a slot holds. EMPTY: not posted, or its get is pending; MSG: a message not
 * handed out yet; TAKEN: handed out (or skipped: answered before anyone took it); HOLE: its get
 * completed without a message (cancelled, failed). */
enum { SLOT_EMPTY = 0, SLOT_MSG = 1, SLOT_TAKEN = 2, SLOT_HOLE = 3 };
/* answered[] (chunk mu; read relaxed elsewhere) */
/* ANS_EXPIRED: default_reply sent by the deadline (such messages are not handed out anymore) */
enum { ANS_NONE = 0, ANS_PENDING = 1, ANS_CONSUMER = 2, ANS_DEFAULT = 3, ANS_NOREPLY = 4, ANS_EXPIRED = 5 };
/* default reasons: index into fp_pump.defaulted[] */
enum { DEF_DEADLINE = 0, DEF_ERROR, DEF_RELEASE, DEF_STOP, DEF_OVERFLOW, DEF_N };
/* ofl_state[] (post_mu) */
enum { OFL_FREE = 0, OFL_POSTED = 1, OFL_CANCELLED = 2 };
/* who holds the leader token (q_mu) */
enum { LEAD_NONE = 0, LEAD_WORKER = 1, LEAD_CONSUMER = 2 };

#define REAP_MAX 64u            /* completions taken per reap */
#define TAKEOVER_NS 200000u     /* consumer away this long: a worker reaps (see workers.c) */
#define PARK_MAX_NS 10000000u   /* a parked worker looks again at least this often */
#define REAPER_POLL_MIN_NS 1000000u /* deadlines from 1 ms: an idle reaper polls once a deadline */

struct fp_chunk {
    _Alignas(CACHELINE) fp_mutex mu;
    fp_pump *pump;
    uint32_t index;
    /* fixed at create */
    uint8_t *slots;
    uint8_t *replies;  /* consumer reply slots (payload at +16) */
    uint8_t *defaults; /* default reply slots: payload prefilled once, header written per send */
    uint8_t *outbox;   /* consumer replies copied at fp_batch_reply, sent from here */
    uint64_t *recv_ns, *msgid;
    uint32_t *length;
    int32_t *status;
    uint8_t *kind;     /* q_mu */
    _Atomic uint8_t *answered;
    fp_reply *send;
    uint32_t *send_idx, *out_idx;
    /* chunk mu */
    uint32_t out_n;
    bool out_queued;        /* on the reply threads' queue (holding one hold) */
    _Atomic uint32_t unanswered; /* messages expecting a reply not answered yet (decremented under
                                    mu once the answer's send has returned) */
    /* post_mu (atomic: read under q_mu by the free check) */
    _Atomic uint32_t posted;   /* slots posted since the chunk left the free list */
    _Atomic uint32_t inflight; /* posted, completion not processed yet */
    /* q_mu */
    uint32_t scan;    /* slots below this are TAKEN or HOLE */
    uint32_t untaken; /* MSG slots */
    uint32_t holds;  /* batches handed out and not released, + a reply thread's */
    bool is_free, in_ready;
    fp_chunk *next, *prev; /* free list (next) / ready list */
    fp_chunk *out_next;    /* o_mu */
};

typedef struct replier {
    fp_pump *pump;
    fp_reply *send;
    uint32_t *idx;
} replier;

typedef struct worker {
    _Alignas(CACHELINE) fp_pump *pump;
    fp_thread tid;
    bool started;
    uint64_t park_ns;
} worker;

struct fp_pump {
    fp_backend *b;
    fp_pump_config cfg;
    uint8_t *default_reply;
    uint32_t target;      /* gets to keep in flight: threads * outstanding */
    uint32_t nslots;      /* nchunks * batch + noverflow */
    uint32_t noverflow;   /* overflow slots (answered from C when no chunk is free) */
    bool overflow_on;     /* a message that finds no free chunk is answered now (cfg.overflow) */
    size_t slot_size, message_bytes, reply_stride, reply_bytes, chunk_bytes, chunk_reply_bytes;
    uint8_t *slab;
    size_t slab_bytes;
    uint8_t *reply_area;
    size_t reply_area_bytes;
    uint8_t *meta;
    fp_chunk *chunks;
    worker *workers;
    uint8_t *ofl_slots;   /* noverflow slots of slot_size */
    uint8_t *ofl_replies; /* noverflow default replies of reply_stride */

    _Alignas(CACHELINE) fp_mutex post_mu;
    fp_chunk *cur;        /* chunk being posted into */
    uint32_t *ofl_free;   /* stack of free overflow slot numbers (0..noverflow-1) */
    uint32_t ofl_nfree;
    uint8_t *ofl_state;   /* per overflow slot: OFL_* */
    _Atomic bool ofl_recheck; /* a chunk was freed: overflow gets may be cancelled (see workers.c) */
    bool post_stop;       /* no more posts (stop or failure) */
    _Atomic uint32_t inflight; /* gets posted and not processed, every chunk and overflow */

    _Alignas(CACHELINE) fp_mutex q_mu;
    fp_cond ready_cv, exit_cv, w_cv; /* consumers wait on ready_cv, workers on w_cv */
    fp_chunk *free_head, *ready_head, *ready_tail;
    uint32_t nfree, nready, nheld;
    uint32_t workers_live, next_waiters, parked;
    int leader;               /* LEAD_* */
    uint32_t consumers_in;    /* consumers inside fp_pump_next */
    uint32_t consumers_idle;  /* of those, waiting for the token or a batch */
    uint64_t consumer_left_ns;
    bool consumer_reap;       /* an idle consumer reaps itself (off once the event fd is used) */
    bool started, user_stop, ended;
    fp_event efd;  /* the consumer's wake-up object (fp_pump_fd / fp_pump_wait_handle) */
    bool efd_armed;
    _Atomic int stopping;
    _Atomic fp_hresult terminal;

    _Alignas(CACHELINE) fp_mutex r_mu;
    fp_cond r_cv;
    bool r_kick, r_stop, r_started;
    fp_thread r_tid;
    _Atomic int reaper_idle;
    bool reaper_polls; /* deadline >= REAPER_POLL_MIN_NS: idle, it wakes once a deadline, unkicked */

    fp_mutex join_mu;
    bool joined;

    _Alignas(CACHELINE) fp_mutex o_mu;
    fp_cond o_cv;
    fp_chunk *o_head, *o_tail;
    bool o_stop;
    uint32_t o_started;
    fp_thread *o_tids;
    replier *o_args;

    _Alignas(CACHELINE) _Atomic uint64_t received, truncated, no_reply, errors, batches, posts,
        reaps, replied, reply_failed, late_replies, late_python, reply_calls, gets_failed;
    _Atomic uint64_t defaulted[DEF_N];

    _Alignas(CACHELINE) fp_hist lat;
};

static inline uint8_t *slot_at(const fp_pump *p, const fp_chunk *c, uint32_t i)
{
    return c->slots + (size_t)i * p->slot_size;
}

static inline void count(_Atomic uint64_t *c, uint64_t n)
{
    if (n)
        atomic_fetch_add_explicit(c, n, RLX);
}

/* chunks.c */
void chunks_process(fp_pump *p, const fp_completion *comp, uint32_t n);
bool chunks_take_locked(fp_pump *p, fp_batch *out);
void chunks_drop_ready_locked(fp_pump *p);
void chunk_check_free(fp_pump *p, fp_chunk *c);
void chunk_unhold(fp_pump *p, fp_chunk *c);
void efd_update_locked(fp_pump *p);

/* answer.c */
uint64_t answer_defaults_locked(fp_pump *p, fp_chunk *c, uint32_t from, uint32_t to,
                                uint64_t cutoff, int reason);
void answer_overflow(fp_pump *p, const fp_completion *comp, uint32_t n);
fp_thread_ret FP_THREAD_API replier_main(void *arg);

/* workers.c */
void top_up(fp_pump *p);
void cancel_overflow(fp_pump *p);
static inline void overflow_recheck(fp_pump *p)
{
    if (atomic_load_explicit(&p->ofl_recheck, RLX))
        cancel_overflow(p);
}
void token_released_locked(fp_pump *p);
/* The leader's reap (token held, q_mu not): gives the token back, then processes what came. */
void lead_reap(fp_pump *p, fp_completion *comp, uint32_t timeout_ms);
void pump_fail(fp_pump *p, fp_hresult hr);
void reaper_kick(fp_pump *p);
fp_thread_ret FP_THREAD_API worker_main(void *arg);
fp_thread_ret FP_THREAD_API reaper_main(void *arg);

#endif
