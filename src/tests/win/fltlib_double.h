/* A test double of FltLib for the Windows tests under Wine (Wine's own fltlib.dll answers
 * E_NOTIMPL). fltlib_double.c defines FilterConnectCommunicationPort, FilterGetMessage and
 * FilterReplyMessage, linked INSTEAD of libfltlib.a, so src/backends/fltlib.c runs unchanged over
 * it: its CreateIoCompletionPort, GetQueuedCompletionStatusEx, GetOverlappedResult, CancelIoEx
 * and PostQueuedCompletionStatus are the system's, on a real handle.
 *
 * The port is a message-mode named pipe. FilterConnectCommunicationPort returns the client end,
 * opened with FILE_FLAG_OVERLAPPED; an overlapped FilterGetMessage is a real overlapped ReadFile
 * on it (one pipe message = FILTER_MESSAGE_HEADER + body), so the message's completion packet
 * comes from the pipe to whatever completion port the caller bound the handle to, and
 * CancelIoEx cancels the read for real. The "kernel" is this header's fltd_* API, called by a
 * test thread: fltd_send plays FltSendMessage (writes the message to the server end, and when a
 * reply is expected registers a waiter for its MessageId); FilterReplyMessage hands the reply to
 * that waiter, or answers ERROR_FLT_NO_WAITER_FOR_REPLY.
 *
 * What it reports, as FltLib does (see README, "Windows"):
 *   FilterConnectCommunicationPort  unknown name: HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND);
 *       a second connection: HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT) (MaxConnections 1)
 *   FilterGetMessage (overlapped)   HRESULT_FROM_WIN32(ERROR_IO_PENDING), always; the completion:
 *       STATUS_SUCCESS with the bytes written, header included; STATUS_CANCELLED after CancelIoEx;
 *       STATUS_BUFFER_TOO_SMALL (0xC0000023, GetLastError ERROR_INSUFFICIENT_BUFFER) for a
 *       message longer than the buffer: the header and the bytes that fit are written and the
 *       message counts as delivered (its sender waits for a reply to its MessageId).
 *       Disconnected port: HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE) at once.
 *   FilterReplyMessage              S_OK; ERROR_FLT_NO_WAITER_FOR_REPLY (0x801F0020) when nobody
 *       waits for that MessageId (unknown, answered, no reply expected, sender gave up);
 *       HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER) for a reply longer than the sender accepts;
 *       HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE) once disconnected.
 *
 * Where a pipe cannot say what the Filter Manager says, and what the double does instead:
 *   - A pipe read shorter than its message ends STATUS_BUFFER_OVERFLOW and leaves the rest in the
 *     pipe. So a message longer than the gets (fltd_send knows their size) is not written to the
 *     pipe: it waits in the double, and the next FilterGetMessage call completes at once with it,
 *     writing Internal/InternalHigh and queueing the packet itself (NtSetIoCompletion) on the
 *     completion port fltd_bind_completion named (completion key 0): a get served out of turn.
 *   - The Filter Manager completes the pending gets of a disconnected port with
 *     STATUS_INVALID_HANDLE; a pipe cannot. fltd_disconnect cancels them (STATUS_CANCELLED), and
 *     every later FilterGetMessage / FilterReplyMessage fails with ERROR_INVALID_HANDLE, so a
 *     client ends on that HRESULT as on Windows, one re-post later.
 *   - Synchronous gets (no OVERLAPPED) are not served: E_NOTIMPL.
 */
#ifndef FP_TESTS_WIN_FLTLIB_DOUBLE_H
#define FP_TESTS_WIN_FLTLIB_DOUBLE_H

#include <windows.h>
#include <fltuser.h>
#include <stdbool.h>
#include <stdint.h>

#ifndef ERROR_FLT_NO_WAITER_FOR_REPLY /* fltwinerror.h, which mingw-w64 lacks */
#define ERROR_FLT_NO_WAITER_FOR_REPLY ((HRESULT)0x801F0020L)
#endif
#ifndef FLT_PORT_FLAG_SYNC_HANDLE
#define FLT_PORT_FLAG_SYNC_HANDLE 0x00000001
#endif
#define FLTD_MAX_REPLY 64u /* reply payload bytes a sender accepts, at most */

typedef struct fltd_kernel fltd_kernel;

typedef struct fltd_stats {
    uint64_t gets;          /* FilterGetMessage calls that posted a get */
    uint64_t sent;          /* messages sent (fltd_send) */
    uint64_t truncated;     /* of those, delivered truncated */
    uint64_t replies;       /* FilterReplyMessage calls answered S_OK */
    uint64_t no_waiter;     /* ... answered ERROR_FLT_NO_WAITER_FOR_REPLY */
    uint64_t other_failures; /* ... answered another failure */
} fltd_stats;

/* FltCreateCommunicationPort: a server port named `name` (e.g. L"\\TestPort"), one connection.
 * NULL on failure. */
fltd_kernel *fltd_create(const WCHAR *name);
/* Closes the server end and forgets the port (after the client closed its handle). */
void fltd_destroy(fltd_kernel *k);

/* What the kernel knows of the client's file object: the completion port its handle is bound to
 * (only needed to deliver truncated messages, see above). */
void fltd_bind_completion(fltd_kernel *k, HANDLE iocp);

/* FltSendMessage, without waiting: sends FILTER_MESSAGE_HEADER {ReplyLength, MessageId} + body.
 * reply_payload 1..FLTD_MAX_REPLY: a reply is expected (ReplyLength = 16 + reply_payload) and a waiter is
 * registered before the message leaves. Returns the MessageId (ids count up from 1), 0 if the
 * port is disconnected or the write failed. */
uint64_t fltd_send(fltd_kernel *k, const void *body, uint32_t len, uint32_t reply_payload);

/* The reply to `id`, once it came: FILTER_REPLY_HEADER.Status and the payload (up to cap bytes;
 * *len = bytes of payload received). False while none came (or if it never will). */
bool fltd_reply_of(fltd_kernel *k, uint64_t id, int32_t *status, void *payload, uint32_t cap,
                   uint32_t *len);
/* Replies received so far. */
uint64_t fltd_replied(fltd_kernel *k);

/* The sender of `id` gives up (its timeout): a later reply gets ERROR_FLT_NO_WAITER_FOR_REPLY. */
void fltd_abandon(fltd_kernel *k, uint64_t id);

/* FltCloseClientPort: the connection ends (see above for the pending gets). */
void fltd_disconnect(fltd_kernel *k);

void fltd_stats_get(fltd_kernel *k, fltd_stats *out);

#endif
