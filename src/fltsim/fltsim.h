/* The emulated Filter Manager: both sides of communication ports, no Python inside.
 *
 * Kernel side (what a minifilter calls): fsim_create_port / fsim_send / fsim_close_client /
 * fsim_close_server, with ConnectNotify / DisconnectNotify / MessageNotify callbacks.
 * User side (what a service calls): SimFilter* with the names, argument meanings and HRESULTs of
 * fltuser.h. Gets are overlapped requests (SimFilterGetMessageAsync, SimFilterCancelIo), as
 * FilterGetMessage with an OVERLAPPED is; the waited forms are built on them. The Win32 face
 * (win32/windows.h, win32/fltuser.h) puts FltLib's own names, completion ports and events on top,
 * so code written for Windows runs here unchanged.
 *
 * How it differs from Windows: the synchronous get has a timeout (an extension); replies can be
 * sent in batches (SimFilterReplyMessages, one round trip on the socket transport); the security
 * descriptor is an access rule (owner / everyone); a port's peer can be in another process of
 * this machine only (the socket transport), never in a kernel.
 *
 * Two transports behind the same API: "inproc" (both sides in this process) and "socket" (the
 * kernel side in another process, over AF_UNIX SOCK_SEQPACKET sockets in a per-user runtime
 * directory). SimFilterConnectCommunicationPort finds the port by name in this process first,
 * then on the socket transport.
 *
 * Everything is thread-safe: many kernel-side senders and many user-side getters/repliers at once.
 */
#ifndef FLTSIM_H
#define FLTSIM_H

#include <stddef.h>
#include <stdint.h>
#include "../common/fp_status.h"
#include "../common/fp_wire.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FSIM_MAX_NAME        200u        /* bytes of a port name, NUL excluded (emulator's choice) */
#define FSIM_MAX_CONTEXT     65535u      /* WORD-sized connection context */
#define FSIM_MAX_MESSAGE     (1u << 20)  /* payload bytes of one message or reply (emulator's choice) */
#define FSIM_INFINITE        0xFFFFFFFFu /* timeout_ms meaning "wait forever" */
#define FLT_PORT_FLAG_SYNC_HANDLE 0x1u

/* Access rule of a server port (stand-in for its security descriptor). */
enum fsim_access {
    FSIM_ACCESS_OWNER = 0,    /* root and the port's owner (FltBuildDefaultSecurityDescriptor) */
    FSIM_ACCESS_EVERYONE = 1, /* any local user */
};

enum fsim_transport {
    FSIM_INPROC = 0,
    FSIM_SOCKET = 1,
};

/* ---- kernel side ---- */
typedef struct fsim_server fsim_server; /* server port (FltCreateCommunicationPort) */
typedef struct fsim_client fsim_client; /* client port: one per connection */

typedef struct fsim_callbacks {
    /* ConnectNotify: return STATUS_SUCCESS to accept, an error NTSTATUS to reject. *conn_cookie
     * is stored on the client (fsim_client_cookie). Called without any fsim lock held. */
    fp_ntstatus (*connect_notify)(void *cookie, fsim_client *client, const void *context,
                                  uint32_t context_size, void **conn_cookie);
    /* DisconnectNotify: called exactly once per accepted connection, whichever side closed it. */
    void (*disconnect_notify)(void *cookie, fsim_client *client);
    /* MessageNotify: serves SimFilterSendMessage. NULL = E_INVALIDARG for the user. */
    fp_ntstatus (*message_notify)(void *cookie, fsim_client *client, const void *input,
                                  uint32_t input_size, void *output, uint32_t output_size,
                                  uint32_t *returned);
    void *cookie;
} fsim_callbacks;

/* FltCreateCommunicationPort. name: NUL-terminated, 1..FSIM_MAX_NAME bytes.
 * STATUS_OBJECT_NAME_COLLISION if a live port has that name; STATUS_OBJECT_NAME_INVALID for a bad
 * name; STATUS_INVALID_PARAMETER for max_connections 0 or a bad access value. */
fp_ntstatus fsim_create_port(const char *name, enum fsim_transport transport,
                             uint32_t max_connections, enum fsim_access access,
                             const fsim_callbacks *callbacks, fsim_server **server);

/* FltCloseCommunicationPort: no new connections; live connections go on. Drops the caller's
 * reference: the pointer is invalid afterwards.
 * fork(): a port belongs to the process that created it. In a child forked from that process
 * fsim_close_server only closes the child's copies of the port's descriptors (the parent's port
 * goes on listening, its socket file stays), and fsim_disconnect_all and fsim_close_client on
 * its connections do nothing (the parent's connections go on); nothing else may be called on
 * them there. */
void fsim_close_server(fsim_server *server);

/* Disconnect every client of the server (filter unload). */
void fsim_disconnect_all(fsim_server *server);

/* What the socket transport refused or cut off to protect a server port from hostile or broken
 * local peers (all 0 on inproc). The bounds behind them: the top of sock_kernel.c (and the
 * README's "The socket transport's bounds"). */
typedef struct fsim_server_stats {
    uint64_t peers_timed_out;     /* connections hung up on: no HELLO, or not the rest of a frame,
                                     within the frame deadline */
    uint64_t connections_refused; /* connections closed unheard: too many handshakes at once */
    uint64_t sends_dropped;       /* FilterSendMessage requests answered E_OUTOFMEMORY at once: the
                                     connection's queue was full */
    uint64_t slow_peers_dropped;  /* connections hung up on: too many answers left unread */
} fsim_server_stats;
void fsim_server_stats_get(fsim_server *server, fsim_server_stats *out);

/* Connected clients: fills up to cap referenced pointers (release each with fsim_client_release),
 * returns how many are connected (may exceed cap). */
size_t fsim_server_clients(fsim_server *server, fsim_client **out, size_t cap);

/* FltSendMessage. reply == NULL: no reply expected (ReplyLength 0 in the header), returns once
 * delivered. Otherwise *reply_length is the reply buffer's size in and the reply payload's length
 * out. timeout_ns < 0: forever; it bounds delivery plus reply together. reply_status (optional)
 * receives FILTER_REPLY_HEADER.Status. Returns STATUS_SUCCESS, STATUS_TIMEOUT (success code),
 * STATUS_PORT_DISCONNECTED, STATUS_BUFFER_OVERFLOW (reply too long: nothing copied),
 * STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER (NULL/oversized buffer). */
fp_ntstatus fsim_send(fsim_client *client, const void *data, uint32_t length, void *reply,
                      uint32_t *reply_length, int64_t timeout_ns, int32_t *reply_status);

/* ---- asynchronous kernel-side sends (emulator extension) ----
 * FltSendMessage blocks its thread until the reply: a kernel under load has a thread asleep per
 * message in flight, on other cores. A load generator on a small machine cannot pay that (each
 * message would cost a thread's sleep and wake-up), so one thread may keep many sends in flight
 * with fsim_send_async. Each such send takes exactly fsim_send's path: the same MessageId counter,
 * the same queue and FIFO delivery to pending gets (or the socket peer's credits), the same
 * reply checks and STATUS codes, the same timeout rule (withdrawn from the queue, or a late reply
 * finds no waiter); a client cannot tell the two kinds apart. Only the sender's side differs:
 * the outcome goes to a completion queue (fsim_sendq) instead of waking a blocked thread.
 *
 * Timeouts are enforced by the threads waiting in fsim_sendq_wait (they wake at the earliest
 * deadline of the queue's sends, as the blocked sender's own timed wait does): a driver keeps a
 * thread waiting while it has timed sends in flight. */
typedef struct fsim_sendq fsim_sendq;
typedef struct fsim_send_req {
    /* in: what fsim_send takes. reply NULL: no reply expected (done once delivered). */
    const void *data;
    uint32_t length;
    uint32_t reply_cap;   /* reply buffer bytes (payload, header excluded) */
    void *reply;
    int64_t timeout_ns;   /* < 0: forever; bounds delivery plus reply together */
    void *user;           /* the caller's */
    /* out, once fsim_sendq_wait handed the request back: what fsim_send would have returned and
     * written (reply_length 0 unless STATUS_SUCCESS with a reply) */
    fp_ntstatus status;
    uint32_t reply_length;
    int32_t reply_status;
    uint64_t message_id;  /* 0 if the send never got one (the client was disconnected) */
    /* emulator-private: caller-owned memory that must stay put until handed back */
    uint64_t _private[20];
} fsim_send_req;

/* A completion queue for asynchronous sends (any number of clients, any number of waiters).
 * STATUS_SUCCESS or STATUS_INSUFFICIENT_RESOURCES. Destroy only with no send in flight. */
fp_ntstatus fsim_sendq_create(fsim_sendq **out);
void fsim_sendq_destroy(fsim_sendq *q);

/* Submits req (its `in` fields set) on client c; its outcome goes to q. STATUS_SUCCESS: in flight,
 * handed back exactly once by fsim_sendq_wait (also when the client is disconnected: then with
 * STATUS_PORT_DISCONNECTED, as fsim_send returns). STATUS_INVALID_PARAMETER (what fsim_send
 * returns for the same arguments): not submitted, nothing will be handed back. */
fp_ntstatus fsim_send_async(fsim_client *c, fsim_send_req *req, fsim_sendq *q);

/* Waits up to timeout_ns (< 0: forever, 0: poll) for finished sends and hands back up to cap of
 * them (oldest completion first, at most 64 per call) in out[]; returns how many (0: timed
 * out).
 * Meanwhile it times out the queue's sends whose deadline passed. */
uint32_t fsim_sendq_wait(fsim_sendq *q, fsim_send_req **out, uint32_t cap, int64_t timeout_ns);

/* Sends submitted on q and not yet handed back. */
uint32_t fsim_sendq_inflight(fsim_sendq *q);

/* Gives up on req (submitted, not handed back yet) now, as its timeout would: a message not
 * delivered yet is withdrawn (never delivered later), a delivered one's reply finds no waiter
 * (ERROR_FLT_NO_WAITER_FOR_REPLY for the replier); it is then handed back with STATUS_TIMEOUT.
 * A send already finished is handed back as it finished. For a sender that is interrupted. */
void fsim_send_abandon(fsim_send_req *req);

/* FltCloseClientPort: disconnect this connection. Safe to call more than once. Nothing in a
 * forked child (see fsim_close_server). */
void fsim_close_client(fsim_client *client);

/* Reference counting of client pointers handed to callbacks or by fsim_server_clients. A client
 * pointer received in connect_notify is valid (without an extra reference) until
 * disconnect_notify for it returns. */
void fsim_client_retain(fsim_client *client);
void fsim_client_release(fsim_client *client);
void *fsim_client_cookie(const fsim_client *client);
uint64_t fsim_client_id(const fsim_client *client);   /* unique per process, never 0 */
int fsim_client_connected(const fsim_client *client); /* 1 while connected */
uint32_t fsim_client_peer_pid(const fsim_client *client);
uint32_t fsim_client_peer_uid(const fsim_client *client);
/* Gets currently waiting at the kernel for this connection (for tests: wait on state, not time). */
uint32_t fsim_client_pending_gets(fsim_client *client);
/* Sends waiting on this connection: queued for want of a get, and delivered awaiting their reply
 * (for tests, like the above). */
uint32_t fsim_client_queued(fsim_client *client);
uint32_t fsim_client_awaiting_reply(fsim_client *client);

/* ---- user side (fltuser.h) ---- */
typedef uint64_t SIM_HANDLE; /* generation-checked handle, a multiple of 4; 0 is never valid */

/* FilterConnectCommunicationPort. context/context_size: both set or both empty, size <= 65535.
 * options: 0 or FLT_PORT_FLAG_SYNC_HANDLE. security_attributes must be NULL. */
fp_hresult SimFilterConnectCommunicationPort(const char *port_name, uint32_t options,
                                             const void *context, uint32_t context_size,
                                             const void *security_attributes, SIM_HANDLE *port);

/* ---- overlapped gets ----
 * A get is an I/O request that stays pending after the call returns, as an overlapped
 * FilterGetMessage does. The kernel's send copies the message straight into the OLDEST pending
 * get's buffer (FIFO, as Windows completes IRPs) and completes it. Every get whose submission
 * returned FP_E_IO_PENDING completes exactly once, through `done`:
 *   S_OK                     a message: header + payload copied, bytes = header included
 *   FP_E_INSUFFICIENT_BUFFER a longer message: header + what fits copied; it counts as delivered
 *                            (the sender waits for a reply to its MessageId)
 *   FP_E_OPERATION_ABORTED   cancelled (SimFilterCancelIo) before a message reached it; a get that
 *                            a message reached first completes normally despite the cancel
 *   FP_E_INVALID_HANDLE      the connection ended: either side disconnected or the handle was
 *                            closed (SimFilterClose completes every pending get before returning)
 * `done` runs with no emulator lock held, on whichever thread completed the get (the sender's,
 * the canceller's, the closer's, or the socket transport's receiver thread), possibly before
 * SimFilterGetMessageAsync has returned. It may submit a new get; it must not close the handle
 * (on the socket transport the close waits for the thread that runs done). */
typedef struct fsim_io fsim_io;
typedef void (*fsim_io_done)(fsim_io *io, fp_hresult hr, uint32_t bytes);
struct fsim_io {
    FP_MESSAGE_HEADER *buffer; /* in: starts with the header; size >= 16 */
    uint32_t size;
    const void *key;           /* in: what SimFilterCancelIo matches (the Win32 face: the OVERLAPPED) */
    fsim_io_done done;         /* in: called exactly once */
    void *user;                /* in: the caller's */
    /* emulator-private: caller-owned memory that must stay put until done() has returned */
    struct fsim_io *_next, *_prev;
    uint64_t _tag;
    fp_hresult _hr;
    uint32_t _bytes;
    int _cancelled;
};

/* Submits one get. FP_E_IO_PENDING: pending (done will be called). Otherwise a failure and done is
 * never called: FP_E_INVALIDARG (NULL io/buffer/done, size < 16, or a FLT_PORT_FLAG_SYNC_HANDLE
 * handle), FP_E_INVALID_HANDLE (not a live handle, or the connection has ended). */
fp_hresult SimFilterGetMessageAsync(SIM_HANDLE port, fsim_io *io);

/* CancelIoEx: completes the gets pending on this handle whose key equals `key` (NULL: all of them)
 * with FP_E_OPERATION_ABORTED. S_OK if any was pending, FP_E_NOT_FOUND if none. */
fp_hresult SimFilterCancelIo(SIM_HANDLE port, const void *key);

/* FilterGetMessage, synchronous: one get, waited for. timeout_ms is an emulator extension that
 * FltLib lacks: FSIM_INFINITE blocks; on expiry the get is withdrawn (cancelled; a message that
 * reached it first is returned) and FP_E_TIMEOUT returned; 0 polls. buffer starts with
 * FP_MESSAGE_HEADER; size >= 16. *bytes_copied (optional) = header + payload bytes written.
 * Returns what the get completed with (see above), FP_E_TIMEOUT, or a submission failure. */
fp_hresult SimFilterGetMessage(SIM_HANDLE port, FP_MESSAGE_HEADER *buffer, uint32_t size,
                               uint32_t timeout_ms, uint32_t *bytes_copied);


/* FilterReplyMessage. buffer starts with FP_REPLY_HEADER; size = 16 + payload (padding rule).
 * FP_E_FLT_NO_WAITER_FOR_REPLY when nobody waits for that MessageId on this connection;
 * FP_E_INSUFFICIENT_BUFFER when the payload exceeds the sender's reply buffer (the sender gets
 * STATUS_BUFFER_OVERFLOW). */
fp_hresult SimFilterReplyMessage(SIM_HANDLE port, const FP_REPLY_HEADER *buffer, uint32_t size);

/* Emulator extension (the Win32 face's FltSimReplyMessages): one lock round (one round trip on
 * the socket transport) for `count` replies.
 * Each entry's hr receives what SimFilterReplyMessage would have returned; the call returns S_OK
 * unless the handle itself is bad (then every entry is left untouched). */
typedef struct SIM_REPLY_ENTRY {
    const FP_REPLY_HEADER *buffer;
    uint32_t size;
    fp_hresult hr; /* out */
} SIM_REPLY_ENTRY;
fp_hresult SimFilterReplyMessages(SIM_HANDLE port, SIM_REPLY_ENTRY *entries, uint32_t count);

/* FilterSendMessage: served by the server's MessageNotify. bytes_returned is required. */
fp_hresult SimFilterSendMessage(SIM_HANDLE port, const void *in_buffer, uint32_t in_size,
                                void *out_buffer, uint32_t out_size, uint32_t *bytes_returned);

/* Emulator extension: a SimFilterSendMessage that its caller may walk away from (an interrupted
 * caller: Ctrl-C). Start copies the input and runs the send on a thread of its own; Wait waits up
 * to timeout_ms (FSIM_INFINITE: forever) for it and then copies the output into out_buffer (up
 * to out_size bytes) and sets *hr and *bytes_returned: 1 = done, 0 = still running. End is the
 * caller's last call on op, done or not: a send still running is abandoned (it goes on, served
 * by the kernel side as any other, and its output is discarded when it ends). Start returns
 * FP_E_INVALIDARG for what SimFilterSendMessage refuses, FP_E_OUTOFMEMORY, or S_OK. */
typedef struct SIM_SEND_OP SIM_SEND_OP;
fp_hresult SimFilterSendMessageStart(SIM_HANDLE port, const void *in_buffer, uint32_t in_size,
                                     uint32_t out_size, SIM_SEND_OP **op);
int SimFilterSendMessageWait(SIM_SEND_OP *op, uint32_t timeout_ms, void *out_buffer,
                             uint32_t out_size, uint32_t *bytes_returned, fp_hresult *hr);
void SimFilterSendMessageEnd(SIM_SEND_OP *op);

/* Emulator extension: lets this thread's long waits on a kernel side wake for signals (Ctrl-C in
 * Python). While fn is set (NULL clears it; per thread), the socket transport's waits made by
 * this thread (connect's handshake, while ConnectNotify runs; a reply's or a send's
 * acknowledgement) call fn(arg) every FSIM_INTERRUPT_SLICE_MS, without any lock held, and give
 * up when it returns nonzero: the call returns FP_E_OPERATION_ABORTED. A connect given up on is
 * not made (the kernel side sees the connection end). Replies and sends given up on were handed
 * to the kernel side and may or may not have been taken: their outcome is not known. The inproc
 * transport never waits on a kernel side. */
#define FSIM_INTERRUPT_SLICE_MS 100u
void SimSetInterruptHook(int (*fn)(void *arg), void *arg);

/* Not in FltLib: the transport this connection runs on. FP_E_INVALID_HANDLE if `port` is not a
 * live handle. */
fp_hresult SimFilterGetTransport(SIM_HANDLE port, enum fsim_transport *transport);

/* CloseHandle: disconnects. Every pending get completes with FP_E_INVALID_HANDLE before it
 * returns (emulator's choice: the connection is gone). */
fp_hresult SimFilterClose(SIM_HANDLE port);

/* ---- misc ---- */
/* Socket transport: where this process's ports go: $FASTPORT_RUNTIME_DIR, else
 * $XDG_RUNTIME_DIR/fastport, else /tmp/fastport-<euid> (the rules: sock_proto.h). */
const char *fsim_runtime_dir(void);
/* Why this thread's last fsim_create_port or SimFilterConnectCommunicationPort failed, beyond its
 * code, e.g. "refusing the runtime directory /tmp/fastport-1000: it is owned by uid 1001, not by
 * uid 1000 (...)"; "" when there is nothing more to say. */
const char *fsim_error_detail(void);

/* Live object counts, for leak checks (always compiled in). */
int64_t fsim_debug_live_clients(void);
int64_t fsim_debug_live_servers(void);
/* Calls of this process waiting for a socket-transport kernel side's answer now (an ack, a
 * handshake, a get's cancel). */
int64_t fsim_debug_peer_waits(void);

#ifdef __cplusplus
}
#endif
#endif
