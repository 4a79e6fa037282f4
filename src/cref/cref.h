/* The C reference client: what a hand-written C service does with a communication port, the
 * baseline the pump is compared with. It is written against FltLib only (the emulator's Win32
 * face: <windows.h>, <fltuser.h>), the way Microsoft's scanner sample serves its port:
 *
 *   `threads` threads share ONE I/O completion port bound to the port handle; threads x
 *   outstanding records (a message buffer with its OVERLAPPED after it) each keep one overlapped
 *   FilterGetMessage pending. Each thread loops: GetQueuedCompletionStatusEx for up to
 *   `outstanding` completions, finds each record with CONTAINING_RECORD, computes its reply in C
 *   (bench: checksum + verdict; scanner: "foul" search -> SafeToOpen; ReplyLength 0: no reply),
 *   sends the replies (FltSimReplyMessages, the emulator's batch extension: one call, one round
 *   trip on the socket transport), and re-issues each get.
 *
 * fp_cref_stop: a flag, CancelIoEx(port, NULL), one PostQueuedCompletionStatus wake per thread;
 * the threads drain until every record's get has completed, then exit. A get completing with
 * ERROR_INVALID_HANDLE (the kernel side disconnected, or the handle was closed) ends the threads
 * the same way.
 *
 * The port handle stays the caller's: close it after fp_cref_join (or to make the threads exit).
 * It joins the client's completion port for good, as a Windows handle does: one client per port
 * handle.
 */
#ifndef FP_CREF_H
#define FP_CREF_H

#include <stdint.h>
#include "common/fp_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FP_CREF_MAX_THREADS 1024u
#define FP_CREF_MAX_OUTSTANDING 65536u

typedef struct fp_cref fp_cref;

typedef struct fp_cref_stats {
    uint64_t received;  /* messages received (truncated ones included) */
    uint64_t replied;   /* replies accepted by the kernel side (S_OK) */
    uint64_t no_reply;  /* messages with ReplyLength 0: not answered */
    uint64_t late;      /* replies refused with ERROR_FLT_NO_WAITER_FOR_REPLY (sender gave up) */
    uint64_t truncated; /* messages longer than max_payload (answered over what fit) */
    uint64_t errors;    /* other failed replies, and gets that failed for another reason */
    uint64_t batches;   /* GetQueuedCompletionStatusEx calls that returned messages */
    fp_hresult last_error;    /* last HRESULT counted in errors, 0 if none */
    uint32_t threads_running; /* threads not yet exited */
} fp_cref_stats;

/* port: a FltLib port HANDLE opened for overlapped I/O (on Linux the emulator's face: a SIM_HANDLE
 * cast to a pointer). protocol:
 * FP_PROTO_BENCH or FP_PROTO_SCANNER. max_payload: bytes after the message header (scanner: at
 * least 1032 is sensible). threads 1..1024, outstanding 1..65536, max_payload 1..1 MiB. Returns
 * FP_S_OK, FP_E_INVALIDARG (also: the handle already joined a completion port),
 * FP_E_INVALID_HANDLE, FP_E_OUTOFMEMORY. */
fp_hresult fp_cref_start(void *port, uint32_t threads, uint32_t outstanding, int protocol,
                         uint32_t max_payload, fp_cref **out);

/* Ask every thread to stop and wake it. Any thread, any number of times. */
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
