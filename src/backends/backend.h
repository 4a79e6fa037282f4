/* The backend interface the pump runs on: a small table of functions that every message source
 * implements (sim: the emulated Filter Manager; later fanotify and Windows FltLib).
 *
 * Contract
 * - get_batch blocks up to timeout_ms for the first message, then fills a PREFIX of the n
 *   buffers (entries[0..*filled-1]) with every message available at that moment. Buffers are
 *   caller-owned slots (FP_MESSAGE_HEADER + payload). The backend does the one copy of a message.
 *   A Windows backend keeps the n gets in flight as overlapped FilterGetMessage calls bound to a
 *   per-thread completion port and reports completions in posting order; fanotify reads events
 *   and copies each into the next slot.
 *   Returns S_OK with *filled > 0; FP_E_TIMEOUT; FP_E_OPERATION_ABORTED after cancel;
 *   FP_E_INVALID_HANDLE when the port is gone (disconnect: the pump drains and ends).
 * - reply_batch sends n replies (each FP_REPLY_HEADER + payload, size per the padding rule) and
 *   stores each one's HRESULT; returns S_OK unless the port itself is unusable.
 * - cancel wakes every pending get_batch on any thread (CancelIoEx); safe from any thread.
 * - destroy frees the backend (the port stays the caller's to close).
 * - thread_init/thread_fini (optional, may be NULL) give each worker thread private state
 *   (e.g. its OVERLAPPED array and completion port); the result is passed as `ts`.
 * - flags: FP_BACKEND_LOCAL_REPLY when reply_batch returns without waiting for another process
 *   (FilterReplyMessage, a fanotify write, the in-process emulator); not for a transport where a
 *   reply is a round trip (the emulator's socket transport).
 * Worker threads call these without the GIL; implementations never touch Python objects.
 */
#ifndef FP_BACKEND_H
#define FP_BACKEND_H

#include <stdint.h>
#include "../common/fp_status.h"

typedef struct fp_recv {
    void *buffer;     /* slot: FP_MESSAGE_HEADER + payload */
    uint32_t size;    /* slot capacity in bytes */
    uint32_t length;  /* out: bytes written, header included */
    fp_hresult hr;    /* out: S_OK, or FP_E_INSUFFICIENT_BUFFER (truncated but delivered) */
    uint32_t _pad;
} fp_recv;

typedef struct fp_send {
    const void *buffer; /* FP_REPLY_HEADER + payload */
    uint32_t size;
    fp_hresult hr;      /* out */
} fp_send;

typedef struct fp_backend fp_backend;

typedef struct fp_backend_ops {
    const char *name;
    void *(*thread_init)(fp_backend *b);
    void (*thread_fini)(fp_backend *b, void *ts);
    fp_hresult (*get_batch)(fp_backend *b, void *ts, fp_recv *entries, uint32_t n,
                            uint32_t timeout_ms, uint32_t *filled);
    fp_hresult (*reply_batch)(fp_backend *b, fp_send *entries, uint32_t n);
    fp_hresult (*cancel)(fp_backend *b);
    void (*destroy)(fp_backend *b);
} fp_backend_ops;

#define FP_BACKEND_LOCAL_REPLY 1u

struct fp_backend {
    const fp_backend_ops *ops;
    uint32_t flags; /* FP_BACKEND_* */
};

#endif
