/* The backend interface the pump runs on: a small table of functions that every message source
 * implements, shaped after overlapped FilterGetMessage on an I/O completion port (fltlib.c: real
 * FltLib on Windows, the emulator's Win32 face elsewhere) so that gets stay in flight at all times;
 * fanotify fits it too (a reap read()s events and copies each into the next posted slot).
 *
 * Slots. The pump owns every buffer. A slot is FP_SLOT_HEADER bytes of header area, then the
 * message payload. The header area belongs to the backend: fltlib receives FILTER_MESSAGE_HEADER
 * there (the get's buffer starts at the slot); other backends write an equivalent header (reply
 * length, message id) so that consumers see one layout. The pump never parses it: each completion
 * carries the message's id and reply length, decoded by the backend.
 *
 * Contract
 * - attach(b, nslots) once, before any post: the slots are numbered 0..nslots-1 (per-slot state
 *   such as an OVERLAPPED array is sized here).
 * - post(b, slot, buffer, size): one get into the slot (buffer = slot start, size = header area +
 *   payload capacity). FP_S_OK: exactly one completion for this slot will be reaped later (a
 *   message, a cancel, or a failure), never none and never two. Any other HRESULT: nothing was
 *   posted (no completion will come); FP_E_INVALID_HANDLE when the port is gone.
 *   Gets are served oldest first, so a pump that posts in slot order receives in slot order.
 *   Posts are serialised by the caller.
 * - reap(b, out, max, timeout_ms, &n): waits up to timeout_ms (FP_INFINITE_MS: forever) for
 *   completions and returns up to `max` of them, in any order. S_OK with *n >= 1; S_OK with
 *   *n == 0 when woken by wake(); FP_E_TIMEOUT when none came in time. Only one thread reaps at a
 *   time (the pump's leader), so backends need no locking between reaps.
 *   Per completion hr: FP_S_OK, a message; FP_E_INSUFFICIENT_BUFFER, a message truncated to the
 *   slot (delivered: it still expects its reply); FP_E_OPERATION_ABORTED, the get was cancelled
 *   (no message); anything else (FP_E_INVALID_HANDLE: the port is gone), the get failed (no
 *   message).
 * - wake(b): makes one blocked (or the next) reap return S_OK with *n == 0. Any thread.
 * - cancel(b, slot): the get posted in that slot (FP_SLOT_ALL: every posted get) completes
 *   (FP_E_OPERATION_ABORTED, or normally if a message won the race). Any thread, any number of
 *   times; a slot with no get posted is ignored.
 * - reply(b, r, n): sends n replies (each: FP_REPLY_HEADER-sized header area the backend fills,
 *   then the payload) and stores each one's HRESULT (FP_E_FLT_NO_WAITER_FOR_REPLY when the
 *   source no longer waits for it). Returns S_OK unless the port itself is unusable (then the
 *   entries' hr are undefined: count them all as failed).
 * - destroy(b): frees the backend (the port stays the caller's to close). Only after every posted
 *   get has been reaped.
 * - flags: FP_BACKEND_LOCAL_REPLY when reply() returns without waiting for another process
 *   (FilterReplyMessage, a fanotify write, the in-process emulator); not for a transport where a
 *   reply is a round trip (the emulator's socket transport).
 * Worker threads call these without the GIL; implementations never touch Python objects.
 */
#ifndef FP_BACKEND_H
#define FP_BACKEND_H

#include <stdint.h>
#include "../common/fp_status.h"

#define FP_SLOT_HEADER 16u          /* bytes of a slot's header area (= FILTER_MESSAGE_HEADER) */
#define FP_REPLY_HEADER_AREA 16u    /* bytes before each reply payload (= FILTER_REPLY_HEADER) */
#define FP_INFINITE_MS 0xFFFFFFFFu
#define FP_SLOT_ALL 0xFFFFFFFFu     /* cancel(): every posted get */

typedef struct fp_completion {
    uint32_t slot;         /* the slot given to post */
    uint32_t length;       /* bytes written into the slot, header area included */
    fp_hresult hr;         /* see the contract above */
    uint32_t reply_length; /* bytes accepted in a reply, reply header included; 0 = no reply */
    uint64_t id;           /* the message's id (what reply() is given back) */
} fp_completion;

typedef struct fp_reply {
    uint8_t *buffer;  /* FP_REPLY_HEADER_AREA bytes for the backend, then the payload */
    uint32_t size;    /* FP_REPLY_HEADER_AREA + payload bytes (the padding rule) */
    int32_t status;   /* FILTER_REPLY_HEADER.Status (sources without one ignore it) */
    uint64_t id;      /* the message's id */
    fp_hresult hr;    /* out */
    uint32_t _pad;
} fp_reply;

typedef struct fp_backend fp_backend;

typedef struct fp_backend_ops {
    const char *name;
    fp_hresult (*attach)(fp_backend *b, uint32_t nslots);
    fp_hresult (*post)(fp_backend *b, uint32_t slot, void *buffer, uint32_t size);
    fp_hresult (*reap)(fp_backend *b, fp_completion *out, uint32_t max, uint32_t timeout_ms,
                       uint32_t *n);
    void (*wake)(fp_backend *b);
    fp_hresult (*cancel)(fp_backend *b, uint32_t slot);
    fp_hresult (*reply)(fp_backend *b, fp_reply *r, uint32_t n);
    void (*destroy)(fp_backend *b);
} fp_backend_ops;

#define FP_BACKEND_LOCAL_REPLY 1u

struct fp_backend {
    const fp_backend_ops *ops;
    uint32_t flags; /* FP_BACKEND_* */
};

#endif
