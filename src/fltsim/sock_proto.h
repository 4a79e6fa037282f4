/* The socket transport's wire protocol and the helpers both of its sides share (sock_common.c).
 *
 * One connection = one AF_UNIX SOCK_SEQPACKET socket between a user process (sock_user.c) and the
 * process holding the kernel side (sock_kernel.c). Everything on it is a FRAME: an sk_hdr, then a
 * body whose layout depends on the type. Both sides are little-endian x64 processes of one host,
 * so structs go on the wire as they are (sizes are checked below).
 *
 * Records and frames. A SEQPACKET record must fit the sender's socket buffer, and a non-root
 * process cannot raise SO_SNDBUF beyond net.core.wmem_max (often 208 KiB). Emulator's choice: a
 * frame is sent as consecutive records of at most rec_max bytes (64 KiB, less if the buffer is
 * smaller); the first record starts with the header, whose `len` says how many bytes to gather.
 * Writers of one socket hold a lock for the whole frame, so records of two frames never
 * interleave and a record never spans two frames. A frame is at most SK_FRAME_MAX bytes: batches
 * (messages, replies) are split into several frames when they would be larger.
 *
 * Frames, user -> kernel:
 *   HELLO      count = SK_MAGIC, hr = SK_VERSION; body = sk_hello, port name, connection context
 *   GET        count = n; body = n x uint64 tag, oldest first: n pending gets, one credit each
 *   REVOKE     count = n; body = n x uint64 tag: withdraw those gets' credits (their cancel),
 *              answered by one REVOKE_ACK per tag, in the order given
 *   REPLY      req = request id, count = n; body = n x (sk_reply_ent + reply bytes, 8-aligned)
 *   SEND       req = request id, count = output buffer size; body = input (FilterSendMessage)
 * Frames, kernel -> user:
 *   HELLO_ACK  hr = the connect's HRESULT (then the connection is closed unless S_OK)
 *   MSGS       count = n; body = n x (sk_msg_ent + message bytes, 8-aligned)
 *   REVOKE_ACK req = tag; count = 1 if the get's credit was withdrawn before a message went to
 *              it, 0 if it had already been closed by a delivery (its message precedes this ack)
 *   QUEUED     a message is queued at the kernel for want of a waiting get
 * MSGS and REVOKE_ACK carry SK_F_EMPTY when the kernel's queue is empty after them. QUEUED and
 * SK_F_EMPTY are written under the client's lock, in the order of the queue's changes, so the
 * user side always knows whether something is queued as of the last frame it read: a get with
 * timeout 0 (the pump's "anything more right now?") answers FP_E_TIMEOUT locally when nothing is,
 * where the round trip would cost as much as the get it saves. (Emulator's choice: a message
 * queued during the few microseconds its QUEUED frame is in flight is not seen by such a poll.)
 *   REPLY_ACK  req; hr = S_OK or the connection's error; count = n; body = n x int32 HRESULT
 *   SEND_ACK   req; hr; count = bytes returned; body = the output bytes
 * The credit accounting behind GET / MSGS / REVOKE is described at the top of sock_kernel.c.
 */
#ifndef FLTSIM_SOCK_PROTO_H
#define FLTSIM_SOCK_PROTO_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include "internal.h"

/* How long the user side waits for the kernel side's answer to a request before it hangs up
 * (a live kernel side answers at once; this only ends waits on a stopped process). */
#define SK_PEER_TIMEOUT_MS 30000u
#define SK_MAGIC     0x31505346u /* "FSP1" */
#define SK_VERSION   2 /* 2: overlapped gets, GET / REVOKE frames carry tags */
#define SK_REC_MAX   (64u * 1024u)
#define SK_FRAME_MAX (FSIM_MAX_MESSAGE + 64u * 1024u) /* one 1 MiB message or reply always fits */
#define SK_ALIGN8(n) (((n) + 7u) & ~(size_t)7u)

enum {
    SK_HELLO = 1,
    SK_HELLO_ACK,
    SK_GET,
    SK_REVOKE,
    SK_REVOKE_ACK,
    SK_REPLY,
    SK_REPLY_ACK,
    SK_SEND,
    SK_SEND_ACK,
    SK_MSGS,
    SK_QUEUED,
};
#define SK_F_EMPTY 1u /* sk_hdr.flags of MSGS / REVOKE_ACK: nothing queued at the kernel now */

typedef struct sk_hdr {
    uint32_t len;   /* bytes of the frame, this header included */
    uint16_t type;
    uint16_t flags; /* SK_F_* */
    uint32_t count;
    int32_t hr;
    uint64_t req;
} sk_hdr;

/* One message in a MSGS frame, followed by `length` bytes and padding to 8. */
typedef struct sk_msg_ent {
    uint64_t tag;          /* the get (GET frame's req) this message goes to */
    uint64_t id;           /* MessageId */
    uint32_t reply_length; /* FP_MESSAGE_HEADER.ReplyLength */
    uint32_t length;
    uint32_t flags;        /* SK_LAST: the get is closed by this message (always: one credit) */
    uint32_t _pad;
} sk_msg_ent;
#define SK_LAST 1u

/* One reply in a REPLY frame, followed by `size` bytes (FP_REPLY_HEADER + payload), padded to 8. */
typedef struct sk_reply_ent {
    uint32_t size;
    uint32_t _pad;
} sk_reply_ent;

_Static_assert(sizeof(sk_hdr) == 24, "sk_hdr is 24 bytes");
_Static_assert(sizeof(sk_msg_ent) == 32, "sk_msg_ent is 32 bytes");
_Static_assert(sizeof(sk_reply_ent) == 8, "sk_reply_ent is 8 bytes");

/* HELLO's body: this, the port name (the kernel checks it: a hashed file name may collide), then
 * the connection context. */
typedef struct sk_hello {
    uint32_t name_len;
    uint32_t ctx_len;
} sk_hello;

/* Limits on what one connection may ask of the kernel side (emulator's choice; sock_kernel.c says
 * what happens at each). */
#define SK_MAX_TAGS   4096u  /* tags in one GET / REVOKE frame (more go in several frames) */
#define SK_MAX_GROUPS 16384u /* gets waiting at once on one connection */
#define SK_FRAME_TIMEOUT_MS 10000u /* for the HELLO, and for a frame's rest once begun */
#define SK_MAX_HANDSHAKES 128u     /* connections in their handshake at once, per port */
#define SK_MAX_WORKERS 16u         /* threads running MessageNotify, per connection */
#define SK_MAX_QUEUED_JOBS 64u     /* FilterSendMessage requests waiting for them, per connection */
#define SK_MAX_QUEUED_BYTES (8u << 20) /* and those requests' input bytes */
#define SK_MAX_UNREAD_ANSWERS ((size_t)128 << 20) /* unread answers: beyond, hung up on */

/* ---- sockets ---- */

/* Sets CLOEXEC-created socket's buffers as high as allowed (or $FASTPORT_SOCK_BUFSIZE, a test knob
 * that simulates a capped non-root process) and returns the record size to use on it. */
uint32_t sk_tune_socket(int fd);

/* Sends iov[0..iovcnt) (total bytes) as records of at most rec_max bytes, from byte *done on
 * (*done must be 0 or a record boundary of an earlier call); *done advances by whole records.
 * flags: 0 (blocking) or MSG_DONTWAIT. EINTR is retried, SIGPIPE never raised. Returns 0 when
 * everything was sent, -1 with errno otherwise (EAGAIN: try again from *done). */
int sk_send_records(int fd, const struct iovec *iov, int iovcnt, size_t total, uint32_t rec_max,
                    int flags, size_t *done);

/* Reassembles frames from the records of one socket. */
typedef struct sk_reader {
    int fd;
    uint8_t *buf;
    uint32_t cap;
    /* How long the rest of a frame may take once its first record is in, in ms; 0: no bound.
     * The kernel side: SK_FRAME_TIMEOUT_MS (a peer that sends half a frame must not pin a thread
     * forever); the user side: SK_PEER_TIMEOUT_MS (a kernel side stuck inside a frame is hung up
     * on, as one that does not answer a request). */
    uint32_t rest_timeout_ms;
} sk_reader;
/* Reads one frame into r->buf (*out points at it). Returns 1, 0 at EOF before a frame starts, -1
 * on an error, a truncated or oversized frame, or EOF inside a frame (errno EPROTO for the peer's
 * protocol violations), or a frame whose rest did not come in time (errno ETIMEDOUT). The frame's
 * header and size are checked (sk_frame_start); its body is not (sk_parse_frame). */
int sk_read_frame(sk_reader *r, sk_hdr **out);
/* Waits until fd is ready for `events` (poll(2)'s) or the CLOCK_MONOTONIC time end_ns passes:
 * 1 (also on a poll error: the I/O call that follows reports it), or 0 with errno ETIMEDOUT.
 * With `stop`, it is asked every slice_ms whether to give up: -1 when it says so. */
int sk_wait_fd(int fd, short events, uint64_t end_ns, int (*stop)(void), uint32_t slice_ms);
void sk_reader_free(sk_reader *r);

/* ---- parsing (sock_frame.c: pure functions, no I/O; the fuzz target's subject) ---- */

/* The first record of a frame: n bytes. Returns the frame's length (its header's `len`), or 0 if
 * the record cannot start a frame (shorter than a header, longer than its frame, or a frame
 * shorter than a header or longer than SK_FRAME_MAX). */
uint32_t sk_frame_start(const void *rec, size_t n);

/* Who sent a frame: the rules differ by direction. */
enum sk_from { SK_FROM_USER, SK_FROM_KERNEL };

/* A frame whose header and body obey the rules of its type (the list at the top of this file,
 * plus the limits: SK_MAX_TAGS, FSIM_MAX_MESSAGE, FSIM_MAX_NAME, FSIM_MAX_CONTEXT, SK_LAST on
 * every message). Pointers point into the parsed buffer; nothing in it is aligned. */
typedef struct sk_frame {
    sk_hdr h;
    const uint8_t *body; /* h.len - sizeof(sk_hdr) bytes */
    size_t body_len;
    /* HELLO */
    sk_hello hello;
    const uint8_t *name, *ctx; /* hello.name_len, hello.ctx_len bytes */
} sk_frame;

/* Checks len bytes (one whole frame) sent by `from`. Returns 0 and fills *f, or -1 (errno EPROTO)
 * for anything the receiver must hang up on: a header that does not match the length, a type
 * that side does not send, a body that breaks its type's rules. */
int sk_parse_frame(const void *buf, size_t len, enum sk_from from, sk_frame *f);

/* Tag i (< h.count) of a parsed GET / REVOKE frame. */
uint64_t sk_frame_tag(const sk_frame *f, uint32_t i);
/* The entries of a parsed REPLY / MSGS frame, in order: *off starts at 0; each call returns 1
 * with the next entry, or 0 after the last. */
int sk_next_reply(const sk_frame *f, size_t *off, const uint8_t **data, uint32_t *size);
int sk_next_msg(const sk_frame *f, size_t *off, sk_msg_ent *ent, const uint8_t **data);

/* pthread_create with every blockable signal blocked in the new thread. */
int sk_thread_create(pthread_t *t, void *(*fn)(void *), void *arg);

/* ---- names and places ---- */

/* The socket file of a port: dir + "/" + the name with bytes outside [A-Za-z0-9._-] (and a
 * leading '.') percent-escaped, or dir + "/h-<FNV-1a 64 hex>" when that does not fit sun_path.
 * Returns -1 if even the hashed form does not fit. */
int sk_port_path(const char *dir, const char *name, struct sockaddr_un *addr);

/* The runtime directories (the emulator's rules; the README's "Runtime directory")
 * ---------------------------------------------------------------------------------
 * A port's socket file lives in its creator's runtime directory: $FASTPORT_RUNTIME_DIR when set,
 * else $XDG_RUNTIME_DIR/fastport when $XDG_RUNTIME_DIR is set (an absolute path), else
 * /tmp/fastport-<euid>. The directory is created 0711 (others may reach an "everyone" port's
 * socket, not list the directory) and used only if it is a directory owned by the creator that
 * neither group nor others may write to (for the default ones: not a symlink).
 * A connect looks in $FASTPORT_RUNTIME_DIR only, when it is set (a directory nobody but its owner
 * may write to; any owner: the caller chose it). Otherwise in its own directories, the XDG one and
 * then /tmp/fastport-<euid> (each, if it exists, checked as strictly as above: a directory there
 * that is not ours, or that others may write to, is refused with E_ACCESSDENIED, not skipped), and
 * then in other users' /tmp/fastport-<uid> (root's first), skipping any that is not theirs or that
 * others may write to. In every directory the socket file must belong to the directory's owner
 * (or root), so a port found there is one its owner created. */
#define SK_DIR_MAX 108 /* sizeof sun_path: a longer directory cannot hold a socket */

/* The caller's own runtime directories, in the order above: $FASTPORT_RUNTIME_DIR alone, or the
 * XDG one (if any) and /tmp/fastport-<euid>. Returns how many, or -1 when $FASTPORT_RUNTIME_DIR
 * is too long. */
int sk_own_dirs(char dirs[2][SK_DIR_MAX]);

/* Checks that dir is a directory (with nofollow: not a symlink), owned by uid (< 0: any owner),
 * not writable by group or others; *owner (optional) receives its owner. STATUS_SUCCESS,
 * STATUS_OBJECT_NAME_NOT_FOUND (absent), or STATUS_ACCESS_DENIED with the reason in
 * fsim_error_detail(). */
fp_ntstatus sk_check_dir(const char *dir, int64_t uid, int nofollow, uint32_t *owner);

/* Creates (0711) or checks the caller's first runtime directory and puts its path in dir. Returns
 * STATUS_SUCCESS or the NTSTATUS fsim_create_port should return (the reason in
 * fsim_error_detail()). */
fp_ntstatus sk_prepare_dir(char *dir, size_t cap);

/* Another user's runtime directory: /tmp/fastport-<uid>. */
void sk_default_dir(uint32_t uid, char *dir, size_t cap);

/* Sets this thread's fsim_error_detail() (printf-style). */
void sk_set_detail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
