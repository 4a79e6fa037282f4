/* The pump: C threads keep gets in flight on a backend (src/backends/backend.h) into ONE slab,
 * hand the messages to a consumer (Python, through Cython) in batches, and send the consumer's
 * replies. Threads never call into Python; every buffer is allocated once, at create.
 *
 * Memory
 *   slab:    page-aligned; nchunks chunks of `batch` contiguous slots; slot_size =
 *            round_up(16 + message_size, 64), so every slot is cache-line aligned. Slot: the
 *            backend's 16-byte header area (FILTER_MESSAGE_HEADER) at +0, the payload at +16.
 *   replies: page-aligned; per chunk `batch` reply slots of reply_stride = round_up(16 +
 *            reply_size, 16) bytes, the payload at +16 (the consumer writes it, prefilled with
 *            default_reply when the message arrives). fp_batch_reply copies a reply into the
 *            chunk's outbox, from which it is sent with size 16 + reply_size (the padding rule);
 *            default replies go from a third area, prefilled once.
 *   overflow: `threads * outstanding` extra slots outside the slab (with a deadline, or overflow > 0).
 *
 * Gets in flight. threads * outstanding gets are posted at all times, in slot order, running on
 * from one chunk into the next free one, so the number in flight never dips at a chunk's end or
 * while a batch is with the consumer. Completions are reaped by one thread at a time (the
 * leader: a worker, or an idle consumer, which then hands itself the batch without a thread
 * hand-off), in any order. A BATCH is a contiguous run of received messages within one chunk;
 * a chunk may yield several batches. A chunk returns to the free list when all its slots were
 * posted and completed, every message in it is answered, and no batch of it is held.
 *
 * Never stop receiving. With a deadline (or overflow > 0), a message finds a slot whatever the
 * consumer does: when
 * no chunk is free (a hung handler, views kept forever) gets are posted into overflow slots, and
 * what lands there is answered with default_reply at once (defaulted_overflow); chunks whose
 * messages were all answered before the consumer took them go back into circulation. Otherwise
 * the pump applies backpressure: messages wait in the kernel until a chunk is free.
 *
 * Answers: each message is answered exactly once, by whoever gets there first under the chunk's
 *   lock: the consumer (fp_batch_reply), the deadline reaper (default_reply, deadline_ns after
 *   receipt), fp_batch_finish / release (default_reply), or stop (default_reply, in
 *   fp_pump_join). Messages whose reply length is 0 expect no reply: they are never sent one and
 *   count as no_reply. A consumer reply for an already answered message is not sent and counts as
 *   late_python. Default replies are sent from a separate prefilled area, so C never reads a
 *   reply payload the consumer may still be writing.
 *
 * Threads and calls
 *   fp_pump_next / try_next / fp_batch_* / stats / stop may be called from any number of
 *   consumer threads at once (without the GIL: nothing here blocks on Python). A batch is valid
 *   from fp_pump_next until its fp_batch_release.
 *
 * Codes: functions returning fp_hresult give FP_S_OK, FP_E_INVALIDARG, FP_E_OUTOFMEMORY,
 * FP_PUMP_E_BUSY, or a backend's HRESULT as documented per function.
 */
#ifndef FP_PUMP_H
#define FP_PUMP_H

#include <stddef.h>
#include <stdint.h>
#include "../backends/backend.h"
#include "../common/fp_status.h"
#include "../common/histogram.h"

#ifdef __cplusplus
extern "C" {
#endif

/* HRESULT_FROM_WIN32(ERROR_BUSY): fp_pump_destroy refused because the consumer still holds batches. */
#define FP_PUMP_E_BUSY FP_CODE(0x800700AAu)

#define FP_PUMP_SLOT_ALIGN 64u
#define FP_PUMP_REPLY_ALIGN 16u
#define FP_PUMP_INLINE_REPLIES 8u  /* see fp_batch_reply */

/* Limits (FP_E_INVALIDARG beyond them). */
#define FP_PUMP_MAX_THREADS 1024u
#define FP_PUMP_MAX_BATCH 65536u
#define FP_PUMP_MAX_OUTSTANDING 65536u
#define FP_PUMP_MAX_INFLIGHT (1u << 20) /* threads * outstanding */
#define FP_PUMP_MAX_CHUNKS 65536u
#define FP_PUMP_MAX_MESSAGE (64u << 20) /* payload bytes of a message or a reply */
/* FP_E_OUTOFMEMORY (without trying) when the slab or the reply area would exceed this. */
#define FP_PUMP_MAX_BYTES ((size_t)1 << 36)

typedef struct fp_pump fp_pump;
typedef struct fp_chunk fp_chunk;

typedef struct fp_pump_config {
    uint32_t threads;      /* worker threads, >= 1 */
    uint32_t outstanding;  /* gets in flight per worker thread, >= 1: threads * outstanding in all */
    uint32_t batch;        /* slots per chunk = most messages per batch, >= 1 */
    uint32_t nchunks;      /* 0 = auto: enough for the gets in flight, plus 2 per thread + 4 */
    int64_t deadline_ns;   /* < 0: none; else a message unanswered this long after receipt gets
                              default_reply from C (defaulted_deadline), and a message that finds
                              no free chunk gets it at once (defaulted_overflow) */
    uint32_t message_size; /* message payload bytes (message dtype itemsize), header excluded */
    uint32_t reply_size;   /* reply payload bytes (reply dtype itemsize), header excluded */
    const void *default_reply; /* reply_size bytes, copied at create; NULL = zeros */
    uint32_t reply_threads; /* threads that send the consumer's replies: fp_batch_reply queues
                              them and returns at once, so the consumer never waits on the
                              port. 0 = fp_batch_reply sends in the calling thread. */
    int32_t overflow;      /* what a message that finds no free chunk meets: < 0 (default): as
                              deadline_ns says (answered at once with a deadline, backpressure
                              without); 0: backpressure (it waits in the kernel until a chunk is
                              free); > 0: answered at once with default_reply (defaulted_overflow)
                              even without a deadline (a fanotify group must never stall) */
    uint32_t consumer_reap; /* 1 (default): a consumer waiting in fp_pump_next reaps completions
                              itself when no worker is, and takes its batch without a thread
                              hand-off; workers reap while it is away. 0: only workers reap. */
} fp_pump_config;

/* threads 2, outstanding 16, batch 64, no deadline, overflow -1 (as the deadline says), sizes 0,
 * auto nchunks, consumer_reap 1. */
void fp_pump_config_init(fp_pump_config *cfg);

/* Validates cfg, attaches the backend (backend->ops->attach) and allocates everything; starts no
 * thread and posts no get. The pump borrows the backend: keep it alive until fp_pump_destroy has
 * returned. */
fp_hresult fp_pump_create(fp_backend *backend, const fp_pump_config *cfg, fp_pump **out);

/* Starts the workers (and the deadline reaper when deadline_ns >= 0) and posts the first gets.
 * Once only: a second call, or a call after stop, gives FP_E_INVALIDARG. If a thread cannot be
 * created the pump is stopped and joined and FP_E_OUTOFMEMORY returned. */
fp_hresult fp_pump_start(fp_pump *p);

/* Asks everything to stop: no new gets, every posted get cancelled (backend cancel), consumers
 * blocked in fp_pump_next return FP_PUMP_STOPPED. Returns at once; any thread, any number of
 * times. */
void fp_pump_stop(fp_pump *p);

/* Stops (if not yet), drains (every posted get has completed) and joins the threads, then answers
 * with default_reply every received message still unanswered (defaulted_stop), wherever it is.
 * Later consumer replies count as late_python. After a user stop the ready list is emptied;
 * after a terminal error it stays, for fp_pump_next to hand out. Idempotent; any thread but a
 * worker. */
void fp_pump_join(fp_pump *p);

/* Joins (if not yet) and frees everything. FP_PUMP_E_BUSY (nothing freed; the pump is stopped)
 * while the consumer still holds a batch: release them all, then call again. NULL: S_OK. */
fp_hresult fp_pump_destroy(fp_pump *p);

/* ---- consumer ---- */
typedef struct fp_batch {
    fp_chunk *chunk;
    uint32_t start; /* first slot within the chunk */
    uint32_t count; /* messages: slots start..start+count-1 */
} fp_batch;

enum fp_pump_next_rc {
    FP_PUMP_BATCH = 0,   /* *out = a batch, held for the caller until fp_batch_release */
    FP_PUMP_TIMEOUT = 1, /* nothing ready within timeout_ns */
    FP_PUMP_STOPPED = 2, /* fp_pump_stop was called (ready batches are not handed out anymore) */
    FP_PUMP_FAILED = 3,  /* the pump ended on a backend error (fp_pump_error) and every batch
                            received before the end has been handed out */
};

/* Waits up to timeout_ns (< 0: forever, 0: do not wait) for a batch. A terminal error takes
 * precedence over a stop: the ready list still drains. */
int fp_pump_next(fp_pump *p, int64_t timeout_ns, fp_batch *out);
int fp_pump_try_next(fp_pump *p, fp_batch *out); /* = fp_pump_next(p, 0, out) */

/* The terminal error (the backend HRESULT that ended the pump), or FP_S_OK. */
fp_hresult fp_pump_error(fp_pump *p);

/* The consumer's wake-up object, for event loops. It is SET exactly while fp_pump_next would not
 * block: a batch is ready, or the pump is stopped or has ended; the pump keeps it so (level
 * semantics). The consumer never reads, resets or closes it: it waits for it, then calls
 * fp_pump_try_next until FP_PUMP_TIMEOUT. Created on first call (of either function); from then
 * on only workers reap (an event-loop consumer never blocks in the pump). It lives until
 * fp_pump_destroy.
 *
 * fp_pump_fd (POSIX): an eventfd (EFD_NONBLOCK), readable while set, for poll/epoll (asyncio
 * add_reader). -1 (errno set) if it cannot be created; on Windows always -1 (errno ENOSYS).
 * fp_pump_wait_handle (Windows): a manual-reset event HANDLE, signalled while set, for
 * WaitForSingleObject / WaitForMultipleObjects / RegisterWaitForSingleObject (asyncio's Proactor
 * loop: _overlapped.RegisterWaitWithQueue, as its wait_for_handle does). NULL (GetLastError set)
 * if it cannot be created; elsewhere always NULL. */
int fp_pump_fd(fp_pump *p);
void *fp_pump_wait_handle(fp_pump *p);

/* Everything the consumer needs to build its views of one batch. */
typedef struct fp_batch_info {
    uint32_t chunk;          /* chunk number, 0..nchunks-1 */
    uint32_t start;          /* first slot within the chunk */
    uint32_t count;          /* messages */
    uint8_t *slots;          /* the batch's first slot (header at +0, payload at +16) */
    size_t slot_size;        /* stride of slots */
    uint8_t *reply_payload;  /* the first message's reply payload, writable by the consumer */
    size_t reply_stride;     /* stride of reply slots */
    int32_t *status;         /* int32[count], prefilled 0: FILTER_REPLY_HEADER.Status per reply */
    const uint64_t *recv_ns; /* uint64[count]: CLOCK_MONOTONIC ns when the message was received */
    const uint32_t *length;  /* uint32[count]: bytes received, header included (capped at
                                16 + message_size; the slot's bytes beyond it are zero) */
} fp_batch_info;
void fp_batch_get_info(const fp_pump *p, const fp_batch *b, fp_batch_info *out);

typedef struct fp_reply_result {
    uint32_t sent;     /* replies handed to the backend */
    uint32_t already;  /* selected but already answered: not sent (late_python) */
    uint32_t no_reply; /* selected but expecting no reply: nothing to send */
    uint32_t late;     /* sent, and the port said FP_E_FLT_NO_WAITER_FOR_REPLY (kernel gave up) */
    uint32_t errors;   /* sent, and the port returned another failure */
    uint32_t _pad;
} fp_reply_result;

/* Answers the selected messages of the batch (mask: uint8[count], nonzero = selected; NULL = all)
 * with the consumer's replies: Status = status[i]; payload = the reply slot's payload, COPIED now
 * (the consumer may reuse its reply slots at once); size 16 + reply_size. Every selected message
 * is answered exactly once: already answered ones are skipped (late_python).
 * With reply_threads > 0 the replies are queued for a reply thread and this returns at once:
 * res->sent counts the replies queued, late/errors are known only to the stats. They are sent
 * here instead, in one backend call, with res holding their outcomes: with reply_threads == 0,
 * once the pump is joined, and at low load (at most FP_PUMP_INLINE_REPLIES replies, nothing
 * queued for the reply threads, and a backend whose replies are local, FP_BACKEND_LOCAL_REPLY),
 * where a hand-off costs more latency than the send. Returns FP_S_OK, or the backend's
 * call-level failure of a synchronous send (then every reply of the call counts as an error). */
fp_hresult fp_batch_reply(fp_pump *p, const fp_batch *b, const uint8_t *mask, fp_reply_result *res);

enum fp_finish_reason {
    FP_FINISH_RELEASE = 0, /* handler done: unanswered messages count defaulted_release */
    FP_FINISH_ERROR = 1,   /* handler raised: unanswered messages count defaulted_error */
};
/* The consumer is done with the batch: every unanswered message gets default_reply now; later
 * replies are not sent (late_python). Idempotent. The batch's memory stays valid until release. */
fp_hresult fp_batch_finish(fp_pump *p, const fp_batch *b, int reason);

/* Drops the batch: finishes it (FP_FINISH_RELEASE) if that was not done, and gives its slots
 * back (its chunk is recycled once nothing else holds it). Exactly once per batch handed out;
 * every pointer into the batch is invalid afterwards. */
void fp_batch_release(fp_pump *p, const fp_batch *b);

/* ---- stats ---- */
/* Answer accounting: received = replied + reply_failed + no_reply + defaulted_deadline
 * + defaulted_error + defaulted_release + defaulted_stop + defaulted_overflow + (messages not
 * answered yet).
 * late_replies and errors count outcomes of sent replies (consumer's and defaults alike);
 * late_python counts consumer replies not sent because the message was already answered. */
typedef struct fp_pump_stats {
    uint64_t received;           /* messages received into slots (overflow slots included) */
    uint64_t replied;            /* consumer replies the port accepted */
    uint64_t reply_failed;       /* replies, the consumer's or default ones, whose send failed
                                    (also in late_replies or errors): the port refused or was
                                    gone */
    uint64_t no_reply;           /* messages expecting no reply (never replied) */
    /* defaulted_*: default replies the port accepted, by who sent them */
    uint64_t defaulted_deadline; /* default replies sent by the reaper */
    uint64_t defaulted_error;    /* ... by fp_batch_finish(FP_FINISH_ERROR) */
    uint64_t defaulted_release;  /* ... by fp_batch_finish(FP_FINISH_RELEASE) / release */
    uint64_t defaulted_stop;     /* ... by fp_pump_join */
    uint64_t defaulted_overflow; /* ... at once, to messages that found no free chunk */
    uint64_t late_replies;       /* sends answered FP_E_FLT_NO_WAITER_FOR_REPLY by the port */
    uint64_t late_python;        /* consumer replies skipped: message already answered */
    uint64_t errors;             /* other failed sends, and gets that failed */
    uint64_t truncated;          /* messages longer than the slot (delivered truncated) */
    uint64_t batches;            /* batches handed to the consumer */
    uint64_t posts;              /* gets posted */
    uint64_t reaps;              /* backend reap calls that returned completions */
    uint64_t reply_calls;        /* backend reply calls */
    uint64_t inflight;           /* gets posted and not completed now */
    uint64_t chunks_total;
    uint64_t chunks_free;
    uint64_t chunks_filling;     /* in use, neither ready nor held: gets posted in them */
    uint64_t chunks_ready;       /* with messages received and not yet taken */
    uint64_t chunks_held;        /* with a batch the consumer has not released (views included);
                                    a chunk may be both ready and held */
    uint64_t latency_count;      /* receive-to-reply latency of every sent reply, ns */
    uint64_t latency_min_ns, latency_mean_ns, latency_max_ns;
    uint64_t latency_p50_ns, latency_p90_ns, latency_p99_ns, latency_p999_ns;
} fp_pump_stats;
void fp_pump_stats_get(fp_pump *p, fp_pump_stats *out);

/* = stats.defaulted_overflow, without a lock: cheap enough to look at per batch. */
uint64_t fp_pump_overflowed(fp_pump *p);

/* Geometry, for views and for tests. */
typedef struct fp_pump_layout {
    uint8_t *slab;            /* page-aligned */
    size_t slab_bytes;        /* nchunks * chunk_bytes */
    uint8_t *replies;         /* page-aligned */
    size_t replies_bytes;
    size_t slot_size;         /* round_up(16 + message_size, 64) */
    size_t message_bytes;     /* 16 + message_size: what a get may write into a slot */
    size_t reply_stride;      /* round_up(16 + reply_size, 16) */
    size_t reply_bytes;       /* 16 + reply_size: what is sent */
    size_t chunk_bytes;       /* batch * slot_size: chunk i starts at slab + i * chunk_bytes */
    size_t chunk_reply_bytes; /* chunk i's reply slots start at replies + i * chunk_reply_bytes */
    uint32_t nchunks, batch, threads, outstanding, overflow_slots;
} fp_pump_layout;
void fp_pump_get_layout(const fp_pump *p, fp_pump_layout *out);

/* Process-wide allocation counters, for leak checks at teardown (always compiled in). */
typedef struct fp_pump_debug {
    int64_t slabs_allocated, slabs_freed;
    int64_t chunks_allocated, chunks_freed;
    int64_t pumps_live;
} fp_pump_debug;
void fp_pump_debug_counters(fp_pump_debug *out);

#ifdef __cplusplus
}
#endif
#endif
