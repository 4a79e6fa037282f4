/* The C reference client: what a hand-written C service does with a communication port, the
 * baseline the pump is compared with.
 *
 * `threads` threads, each with its own preallocated buffers (outstanding x (header + max
 * payload) for messages, outstanding replies), loop:
 *   SimFilterGetMessages(h, entries, outstanding, 100 ms, &n)
 *   compute each reply in C (bench: checksum + verdict; scanner: "foul" search -> SafeToOpen;
 *     messages whose header says ReplyLength 0 get no reply)
 *   SimFilterReplyMessages(h, replies, k) in one call
 * until fp_cref_stop (flag + SimFilterCancel) or the port fails (FP_E_INVALID_HANDLE, e.g. the
 * kernel side disconnected or the handle was closed: the thread exits). It uses exactly the user
 * API the pump's sim backend uses (src/backends/sim.c), so pump vs C is a fair comparison.
 *
 * The handle stays the caller's: close it after fp_cref_join (or to make the threads exit).
 */
#ifndef FP_BENCH_CREF_H
#define FP_BENCH_CREF_H

#include <stdint.h>
#include "common/fp_status.h"
#include "fltsim/fltsim.h"
#include "protocols/bench.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FP_CREF_MAX_THREADS 1024u
#define FP_CREF_MAX_OUTSTANDING 65536u
#define FP_CREF_GET_TIMEOUT_MS 100u

typedef struct fp_cref fp_cref;

typedef struct fp_cref_stats {
    uint64_t received;  /* messages received (truncated ones included) */
    uint64_t replied;   /* replies accepted by the kernel side (S_OK) */
    uint64_t no_reply;  /* messages with ReplyLength 0: not answered */
    uint64_t late;      /* replies refused with ERROR_FLT_NO_WAITER_FOR_REPLY (sender gave up) */
    uint64_t truncated; /* messages longer than max_payload (answered over what fit) */
    uint64_t errors;    /* other failed replies, and gets that failed for another reason */
    uint64_t batches;   /* successful SimFilterGetMessages calls */
    fp_hresult last_error;    /* last HRESULT counted in errors, 0 if none */
    uint32_t threads_running; /* threads not yet exited */
} fp_cref_stats;

/* protocol: FP_PROTO_BENCH or FP_PROTO_SCANNER. max_payload: bytes after the message header
 * (scanner: at least 1032 is sensible). threads 1..1024, outstanding 1..65536, max_payload
 * 1..FSIM_MAX_MESSAGE. Returns FP_S_OK, FP_E_INVALIDARG, FP_E_OUTOFMEMORY. */
fp_hresult fp_cref_start(SIM_HANDLE h, uint32_t threads, uint32_t outstanding, int protocol,
                         uint32_t max_payload, fp_cref **out);

/* Ask every thread to stop and wake it (SimFilterCancel). Any thread, any number of times. */
void fp_cref_stop(fp_cref *c);

/* Wait until every thread has exited (after fp_cref_stop, or when the port failed). */
void fp_cref_join(fp_cref *c);

void fp_cref_stats_get(fp_cref *c, fp_cref_stats *out);

/* Stop, join, free. */
void fp_cref_destroy(fp_cref *c);

#ifdef __cplusplus
}
#endif
#endif
