/* The pump: C worker threads receive Filter Manager messages through a backend into ONE slab,
 * hand them to a consumer (Python, through Cython) in batches, and send the consumer's replies.
 * Worker threads never call into Python; every buffer is allocated once, at create.
 *
 * Memory
 *   slab:    page-aligned; nchunks chunks, a chunk = `batch` contiguous slots;
 *            slot_size = round_up(16 + message_size, 64), so every slot is cache-line aligned.
 *            Slot: FP_MESSAGE_HEADER (16 bytes) at +0, the message payload at +16.
 *   replies: page-aligned; per chunk `batch` reply slots of reply_stride =
 *            round_up(16 + reply_size, 16) bytes, the reply payload at +16 (the consumer writes
 *            it). fp_chunk_reply copies a reply, with the FP_REPLY_HEADER C builds, into the
 *            chunk's outbox, from which it is sent with size 16 + reply_size (the padding rule);
 *            default replies go from a third area, prefilled once.
 *   A batch IS a chunk: its messages fill slots 0..count-1, so the consumer can view them as
 *   numpy arrays with base = first slot and stride = slot_size (headers at +0, payload at +16),
 *   and the reply payloads with base = first reply slot + 16 and stride = reply_stride.
 *
 * Life of a chunk
 *   free -> (worker) filling -> (published) ready -> (fp_pump_next) held by the consumer
 *        -> (fp_chunk_finish + last fp_chunk_unref) free.
 *   A worker owns one chunk at a time and fills it from slot 0 up. It publishes the chunk when it
 *   is full, when linger_us has passed since its first message, when a get after the first one
 *   times out, or when the pump stops. At publish every reply payload is prefilled with
 *   default_reply and every status with 0, so an untouched reply IS the default reply.
 *   No free chunk: the worker waits (backpressure: messages queue in the kernel).
 *
 * Answers: each message is answered exactly once, by whoever gets there first under the chunk's
 *   lock: the consumer (fp_chunk_reply), the deadline reaper (default_reply, deadline_ns after
 *   receipt), fp_chunk_finish / the last unref (default_reply), or stop (default_reply, in
 *   fp_pump_join). Messages whose header says ReplyLength 0 expect no reply: they are never sent a
 *   reply and count as no_reply. A consumer reply for an already answered message is not sent
 *   and counts as late_python. Default replies are sent from a separate prefilled area, so C
 *   never reads a reply payload the consumer may still be writing.
 *
 * Threads and calls
 *   fp_pump_next / try_next / reply / finish / ref / unref / stats / stop may be called from any
 *   number of consumer threads at once (without the GIL: nothing here blocks on Python).
 *   A chunk pointer is valid from fp_pump_next until its last fp_chunk_unref.
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

/* HRESULT_FROM_WIN32(ERROR_BUSY): fp_pump_destroy refused because the consumer still holds chunks. */
#define FP_PUMP_E_BUSY FP_CODE(0x800700AAu)

#define FP_PUMP_MESSAGE_HEADER 16u /* sizeof(FP_MESSAGE_HEADER) */
#define FP_PUMP_REPLY_HEADER 16u   /* sizeof(FP_REPLY_HEADER) */
#define FP_PUMP_SLOT_ALIGN 64u
#define FP_PUMP_REPLY_ALIGN 16u
#define FP_PUMP_FIRST_GET_MS 100u  /* bound on a chunk's first get, so a stop that races the
                                      backend's cancel is still noticed */
#define FP_PUMP_INLINE_REPLIES 8u  /* see fp_chunk_reply */

/* Limits (FP_E_INVALIDARG beyond them). */
#define FP_PUMP_MAX_THREADS 1024u
#define FP_PUMP_MAX_BATCH 65536u
#define FP_PUMP_MAX_OUTSTANDING 65536u
#define FP_PUMP_MAX_CHUNKS 65536u
#define FP_PUMP_MAX_MESSAGE (64u << 20) /* payload bytes of a message or a reply */
#define FP_PUMP_MAX_SPIN_US 1000000u
/* FP_E_OUTOFMEMORY (without trying) when the slab or the reply area would exceed this. */
#define FP_PUMP_MAX_BYTES ((size_t)1 << 36)

typedef struct fp_pump fp_pump;
typedef struct fp_chunk fp_chunk;

typedef struct fp_pump_config {
    uint32_t threads;      /* worker threads, >= 1 */
    uint32_t outstanding;  /* gets in flight per worker, >= 1 (capped at batch) */
    uint32_t batch;        /* messages per chunk (= per consumer batch), >= 1 */
    uint32_t linger_us;    /* after a chunk's first message, wait up to this long for more; 0 =
                              publish what one get returned. An upper bound: the backend's
                              timeout is in ms, so the rest is rounded down and a remainder below
                              1 ms becomes one non-blocking poll (a sub-ms sleep was measured:
                              a little bigger batches at 64 senders, half the throughput at 8). */
    int64_t deadline_ns;   /* < 0: none; else a message unanswered this long after receipt gets
                              default_reply from C (defaulted_deadline) */
    uint32_t message_size; /* message payload bytes (message dtype itemsize), header excluded */
    uint32_t reply_size;   /* reply payload bytes (reply dtype itemsize), header excluded */
    const void *default_reply; /* reply_size bytes, copied at create; NULL = zeros */
    uint32_t nchunks;      /* 0 = auto: threads * 2 + 4 */
    uint32_t spin_us;      /* fp_pump_next busy-waits up to this long (once per call) before it
                              sleeps: saves a futex wake-up per batch when batches come fast,
                              costs a core while it spins; 0 = never spin (default) */
    uint32_t reply_threads; /* threads that send the consumer's replies: fp_chunk_reply queues
                              them and returns at once, so the consumer never waits on the
                              port (the sends wake the kernel's senders, which is most of their
                              cost). 0 = fp_chunk_reply sends in the calling thread. */
    uint32_t _reserved;    /* must be 0 */
} fp_pump_config;

/* threads 2, outstanding 16, batch 64, linger 0, no deadline, sizes 0, auto nchunks. */
void fp_pump_config_init(fp_pump_config *cfg);

/* Validates cfg and allocates everything (slab, replies, chunk metadata, worker state); starts
 * no thread. The pump borrows the backend: keep it alive until fp_pump_destroy has returned. */
fp_hresult fp_pump_create(fp_backend *backend, const fp_pump_config *cfg, fp_pump **out);

/* Starts the workers (and the deadline reaper when deadline_ns >= 0). Once only: a second call,
 * or a call after stop, gives FP_E_INVALIDARG. If a thread cannot be created the pump is stopped
 * and joined and FP_E_OUTOFMEMORY returned. */
fp_hresult fp_pump_start(fp_pump *p);

/* Asks everything to stop: no new gets (backend cancel wakes pending ones), consumers blocked in
 * fp_pump_next return FP_PUMP_STOPPED, workers publish their partial chunks and exit. Returns at
 * once; any thread, any number of times. */
void fp_pump_stop(fp_pump *p);

/* Stops (if not yet), joins workers and reaper, then answers with default_reply every received
 * message still unanswered (defaulted_stop), wherever its chunk is: ready queue or consumer.
 * Later consumer replies count as late_python. After a user stop the ready queue is emptied
 * (its chunks go back to the free list); after a terminal error it stays, for fp_pump_next to
 * hand out. Idempotent; safe from several threads; not from a worker (there is none to call it). */
void fp_pump_join(fp_pump *p);

/* Joins (if not yet) and frees everything. FP_PUMP_E_BUSY (nothing freed; the pump is stopped)
 * while the consumer still holds a chunk: drop every hold, then call again. NULL: S_OK. */
fp_hresult fp_pump_destroy(fp_pump *p);

/* ---- consumer ---- */
enum fp_pump_next_rc {
    FP_PUMP_CHUNK = 0,   /* *out = a batch, with one hold for the caller */
    FP_PUMP_TIMEOUT = 1, /* nothing ready within timeout_ns */
    FP_PUMP_STOPPED = 2, /* fp_pump_stop was called (ready chunks are not handed out anymore) */
    FP_PUMP_FAILED = 3,  /* the pump ended on a backend error (fp_pump_error) and every chunk
                            published before the end has been handed out */
};

/* Waits up to timeout_ns (< 0: forever, 0: do not wait) for a ready chunk. Chunks come out in
 * publish order. A terminal error takes precedence over a stop: the ready queue still drains. */
int fp_pump_next(fp_pump *p, int64_t timeout_ns, fp_chunk **out);
int fp_pump_try_next(fp_pump *p, fp_chunk **out); /* = fp_pump_next(p, 0, out) */

/* The terminal error (the backend HRESULT that ended the pump), or FP_S_OK. */
fp_hresult fp_pump_error(fp_pump *p);

/* An eventfd (EFD_NONBLOCK) that is readable exactly while fp_pump_next would not block: a chunk
 * is ready, or the pump is stopped or has ended. The pump keeps it so (level semantics): it writes
 * it when that becomes true and drains it itself when fp_pump_next/try_next takes the last ready
 * chunk. The consumer NEVER reads it; it polls it (asyncio add_reader), then calls
 * fp_pump_try_next until FP_PUMP_TIMEOUT. Created on first call (no eventfd syscalls happen
 * before), owned and closed by the pump. -1 (errno set) if it cannot be created. */
int fp_pump_fd(fp_pump *p);

/* Everything the consumer needs to build its views of one batch. */
typedef struct fp_chunk_info {
    uint32_t index;          /* chunk number, 0..nchunks-1 */
    uint32_t count;          /* messages: slots 0..count-1, 1..batch */
    uint8_t *slots;          /* first slot (message header at +0, payload at +16) */
    size_t slot_size;        /* stride of slots */
    uint8_t *replies;        /* first reply slot (C writes the header at +0) */
    uint8_t *reply_payload;  /* = replies + 16: first reply payload, writable by the consumer */
    size_t reply_stride;     /* stride of reply slots */
    int32_t *status;         /* int32[count], prefilled 0: FP_REPLY_HEADER.Status per reply */
    const uint64_t *recv_ns; /* uint64[count]: CLOCK_MONOTONIC ns when the message was received */
    const uint32_t *length;  /* uint32[count]: bytes received, header included (capped at
                                16 + message_size; the slot's bytes beyond it are zero) */
} fp_chunk_info;
void fp_chunk_get_info(const fp_pump *p, const fp_chunk *c, fp_chunk_info *out);
uint32_t fp_chunk_count(const fp_chunk *c);
uint8_t *fp_chunk_slots(const fp_chunk *c);

typedef struct fp_reply_result {
    uint32_t sent;     /* replies handed to the backend */
    uint32_t already;  /* selected but already answered: not sent (late_python) */
    uint32_t no_reply; /* selected but ReplyLength 0: nothing to send */
    uint32_t late;     /* sent, and the port said FP_E_FLT_NO_WAITER_FOR_REPLY (kernel gave up) */
    uint32_t errors;   /* sent, and the port returned another failure */
    uint32_t _pad;
} fp_reply_result;

/* Answers the selected messages of the chunk (mask: uint8[count], nonzero = selected; NULL = all)
 * with the consumer's replies: header Status = status[i], MessageId from the message; payload =
 * the reply slot's payload, COPIED now (the consumer may reuse its reply slots at once); size
 * 16 + reply_size (also when the message's ReplyLength is smaller: the port refuses it with
 * FP_E_INSUFFICIENT_BUFFER, counted as an error). Every selected message is answered exactly
 * once: already answered ones are skipped (late_python).
 * With reply_threads > 0 the replies are queued for a reply thread (one backend call per chunk
 * and turn) and this returns at once: res->sent counts the replies queued, late/errors are known
 * only to the stats. They are sent here instead, in one backend call, with res holding their
 * outcomes: with reply_threads == 0, once the pump is joined, and at low load: at most
 * FP_PUMP_INLINE_REPLIES replies, no chunk queued for the reply threads, and a backend whose
 * replies are local (FP_BACKEND_LOCAL_REPLY), where a hand-off costs more latency than the send. Returns FP_S_OK, or the backend's call-level
 * failure of a synchronous send (then every reply of the call counts as an error). */
fp_hresult fp_chunk_reply(fp_pump *p, fp_chunk *c, const uint8_t *mask, fp_reply_result *res);

enum fp_finish_reason {
    FP_FINISH_RELEASE = 0, /* handler done: unanswered messages count defaulted_release */
    FP_FINISH_ERROR = 1,   /* handler raised: unanswered messages count defaulted_error */
};
/* The consumer is done with the batch: every unanswered message gets default_reply now; later
 * replies are not sent (late_python). Idempotent. The chunk stays valid until the last unref. */
fp_hresult fp_chunk_finish(fp_pump *p, fp_chunk *c, int reason);

/* Holds: fp_pump_next gives the caller one. ref adds one (the caller must already hold one); unref
 * drops one. When the last hold drops, the chunk is finished (FP_FINISH_RELEASE) if it was not,
 * and returns to the free list: the pointer and every view into its slots are invalid after that.
 * A view kept past its batch therefore keeps its chunk out of circulation (memory stays valid,
 * never recycled under it); stats.chunks_held counts such chunks. */
void fp_chunk_ref(fp_pump *p, fp_chunk *c);
void fp_chunk_unref(fp_pump *p, fp_chunk *c);

/* ---- stats ---- */
/* Answer accounting: received = replied + no_reply + defaulted_deadline + defaulted_error
 * + defaulted_release + defaulted_stop + (messages not answered yet). late_replies and errors count
 * outcomes of sent replies (consumer's and defaults alike); late_python counts consumer replies
 * not sent because the message was already answered. */
typedef struct fp_pump_stats {
    uint64_t received;           /* messages received into slots */
    uint64_t replied;            /* consumer replies sent */
    uint64_t no_reply;           /* messages with ReplyLength 0 (never replied) */
    uint64_t defaulted_deadline; /* default replies sent by the reaper */
    uint64_t defaulted_error;    /* ... by fp_chunk_finish(FP_FINISH_ERROR) */
    uint64_t defaulted_release;  /* ... by fp_chunk_finish(FP_FINISH_RELEASE) / the last unref */
    uint64_t defaulted_stop;     /* ... by fp_pump_join */
    uint64_t late_replies;       /* sends answered FP_E_FLT_NO_WAITER_FOR_REPLY by the port */
    uint64_t late_python;        /* consumer replies skipped: message already answered */
    uint64_t errors;             /* other failed sends, and failed get entries */
    uint64_t truncated;          /* messages longer than the slot (delivered truncated) */
    uint64_t batches;            /* chunks published */
    uint64_t get_calls;          /* backend get_batch calls */
    uint64_t reply_calls;        /* backend reply_batch calls */
    uint64_t chunks_total;
    uint64_t chunks_free;
    uint64_t chunks_filling;     /* in workers' hands */
    uint64_t chunks_ready;       /* published, not yet taken */
    uint64_t chunks_held;        /* with the consumer (taken, last hold not dropped) */
    uint64_t latency_count;      /* receive-to-reply latency of every sent reply, ns */
    uint64_t latency_min_ns, latency_mean_ns, latency_max_ns;
    uint64_t latency_p50_ns, latency_p90_ns, latency_p99_ns, latency_p999_ns;
} fp_pump_stats;
void fp_pump_stats_get(fp_pump *p, fp_pump_stats *out);

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
    uint32_t nchunks, batch, threads, outstanding;
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
