/* User side of the socket transport: SimFilterConnectCommunicationPort to a port whose kernel side
 * lives in another process (or in this one, but on FSIM_SOCKET), and the handle ops over the
 * connection. See sock_proto.h for the frames and sock_kernel.c for the credit accounting.
 *
 * A get is an overlapped request: registered under a connection-unique tag, announced by a GET
 * frame of one credit, completed by the receiver thread when the message for its tag arrives
 * (copied straight into its buffer) or when a REVOKE_ACK says its credit was withdrawn (cancel).
 * Every other call that needs an answer registers a waiter under an id BEFORE writing its frame,
 * then sleeps on its thread's condition variable; the receiver copies acks into the caller's
 * arrays. So any number of threads may get, reply and send at once on one handle. When the
 * connection ends (EOF: the kernel closed the client port or its process died; or this handle was
 * closed) the receiver marks it dead, completes every pending get with FP_E_INVALID_HANDLE and
 * wakes every waiter: later calls return FP_E_INVALID_HANDLE. Completions run after the
 * receiver has released the connection's lock.
 *
 * Writes are whole frames under `wlock`; the kernel side never stops reading (it never blocks on
 * its own writes), so they cannot deadlock. A failed write shuts the socket down, which the
 * receiver sees as the end of the connection: nobody waits for an answer that cannot come. A
 * kernel side that takes nothing for the peer timeout (its process stopped, our socket buffer
 * full) is hung up on, as one that does not answer is.
 *
 * Waits that can last (a kernel side whose process is stopped answers nothing until the peer
 * timeout) wake every FSIM_INTERRUPT_SLICE_MS for the calling thread's interrupt hook
 * (SimSetInterruptHook) when it has one: Ctrl-C in Python. A call it stops returns
 * FP_E_OPERATION_ABORTED. A frame it stopped before any of it was written was not sent; one it
 * stopped halfway ends the connection (the stream would be out of step); for one sent whole a
 * tombstone stays under its id, which the ack that comes later removes (an ack for nobody is
 * otherwise a protocol error).
 *
 * fork(): a child inherits the socket, shared with the parent, but not the receiver thread. The
 * connection stays the parent's: in the child every call fails with FP_E_INVALID_HANDLE without
 * writing a frame (the answer would reach the parent's receiver), and a close just closes the
 * child's descriptor: no shutdown(), which would end the parent's connection too, and no wait
 * for a receiver that is not there.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sock_proto.h"

#define U_BUCKETS 64
#define U_STACK 64          /* entries handled without malloc */
#define U_REPLY_CHUNK 4096u /* replies per REPLY frame at most */
#define U_CLOSE_WAIT_MS 2000

enum { UW_REPLY = 1, UW_SEND, UW_CLOSE };

typedef struct uwait { /* a call waiting for its answer */
    struct uwait *next, *prev;
    uint64_t id;
    int kind;
    int done; /* ack received */
    int interrupted; /* given up on by the caller's interrupt hook: its ack is not awaited */
    int tomb;        /* a heap copy standing for an interrupted call until its ack comes */
    pthread_cond_t *cv;
    /* reply */
    int32_t *hrs;
    uint32_t nhrs;
    fp_hresult hr;
    /* send */
    void *out;
    uint32_t out_size, returned;
} uwait;

typedef struct ucon {
    int fd;
    uint32_t fork_gen; /* fsim_fork_generation() of the process that connected */
    uint32_t rec_max;
    pthread_mutex_t lock; /* guards dead, queued, next_id, the waiters, the gets */
    int dead;
    int queued; /* the kernel may have messages queued (QUEUED seen, no SK_F_EMPTY since) */
    uint64_t next_id;
    uwait *b[U_BUCKETS];
    fsim_io *g[U_BUCKETS]; /* pending gets by tag */
    uint32_t npending;
    pthread_mutex_t wlock; /* one frame at a time on the socket */
    pthread_t rx;
    int rx_started;
    sk_reader rd;
} ucon;

static const uint8_t zeros[8];

/* Inherited through fork(): the parent's connection (see the top of this file). */
static int foreign(const ucon *u) { return u->fork_gen != fsim_fork_generation(); }

/* ---- waiters (u->lock held) ---- */

static void w_insert(ucon *u, uwait *w) /* under its id */
{
    uwait **b = &u->b[w->id % U_BUCKETS];
    w->prev = NULL;
    w->next = *b;
    if (*b)
        (*b)->prev = w;
    *b = w;
}

static void w_link(ucon *u, uwait *w)
{
    w->id = u->next_id++;
    w_insert(u, w);
}

static void w_unlink(ucon *u, uwait *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        u->b[w->id % U_BUCKETS] = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
}

static uwait *w_find(ucon *u, uint64_t id)
{
    for (uwait *w = u->b[id % U_BUCKETS]; w; w = w->next)
        if (w->id == id)
            return w;
    return NULL;
}

/* ---- pending gets (u->lock held) ---- */

static void g_link(ucon *u, fsim_io *io)
{
    io->_tag = u->next_id++;
    fsim_io **b = &u->g[io->_tag % U_BUCKETS];
    io->_prev = NULL;
    io->_next = *b;
    if (*b)
        (*b)->_prev = io;
    *b = io;
    u->npending++;
}

static void g_unlink(ucon *u, fsim_io *io)
{
    if (io->_prev)
        io->_prev->_next = io->_next;
    else
        u->g[io->_tag % U_BUCKETS] = io->_next;
    if (io->_next)
        io->_next->_prev = io->_prev;
    io->_next = io->_prev = NULL;
    u->npending--;
}

static fsim_io *g_find(ucon *u, uint64_t tag)
{
    for (fsim_io *io = u->g[tag % U_BUCKETS]; io; io = io->_next)
        if (io->_tag == tag)
            return io;
    return NULL;
}

/* ---- the interrupt hook and the peer timeout ---- */

/* The calling thread's interrupt hook (SimSetInterruptHook). */
static __thread int (*tl_hook)(void *);
static __thread void *tl_hook_arg;

void SimSetInterruptHook(int (*fn)(void *arg), void *arg)
{
    tl_hook = fn;
    tl_hook_arg = fn ? arg : NULL;
}

static int interrupted(void) { return tl_hook && tl_hook(tl_hook_arg); }

/* When one wait ends: at `until`, or a slice from now when the hook is to be asked before. */
static uint64_t slice_end(uint64_t until)
{
    uint64_t s = fp_now_ns() + FSIM_INTERRUPT_SLICE_MS * FP_NS_PER_MS;
    return tl_hook && s < until ? s : until;
}

/* A kernel side that does not answer (or take what we write) within SK_PEER_TIMEOUT_MS
 * ($FASTPORT_SOCK_PEER_TIMEOUT_MS; a stopped process: a live one answers at once) is hung up on,
 * so no call waits forever: the receiver ends the connection. */
static uint32_t peer_timeout_ms(void)
{
    const char *e = getenv("FASTPORT_SOCK_PEER_TIMEOUT_MS"); /* tests shorten it */
    long v = e ? strtol(e, NULL, 10) : 0;
    return v > 0 && v < 3600000 ? (uint32_t)v : SK_PEER_TIMEOUT_MS;
}

/* ---- writing ---- */

#define U_INTERRUPTED (-2)

/* Writes a frame (wlock held): 0; -1 when the connection ended (a failed write, or no room for
 * the peer timeout: the socket is shut down, the receiver ends the connection); U_INTERRUPTED
 * when the interrupt hook gave up (nothing written; or part, and then the connection is ended
 * as above: the stream would be out of step). */
static int u_write_locked(ucon *u, const struct iovec *iov, int iovcnt, size_t total,
                          int may_interrupt)
{
    uint64_t end = fp_now_ns() + peer_timeout_ms() * FP_NS_PER_MS;
    size_t done = 0;
    int rc;
    for (;;) {
        rc = sk_send_records(u->fd, iov, iovcnt, total, u->rec_max, MSG_DONTWAIT, &done);
        if (rc == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            break;
        int w = sk_wait_fd(u->fd, POLLOUT, end, may_interrupt && tl_hook ? interrupted : NULL,
                           FSIM_INTERRUPT_SLICE_MS);
        if (w <= 0) { /* no room for the peer timeout, or interrupted */
            rc = w < 0 ? U_INTERRUPTED : -1;
            break;
        }
    }
    if (rc == -1 || (rc == U_INTERRUPTED && done))
        (void)shutdown(u->fd, SHUT_RDWR);
    return rc;
}

/* u_write_locked under wlock, which another writer may hold while it waits for room: that wait
 * is bounded by the peer timeout, and ours wakes for the hook (U_INTERRUPTED, nothing written). */
static int u_write(ucon *u, const struct iovec *iov, int iovcnt, size_t total)
{
    int locked = 0;
    while (tl_hook && !locked) {
        struct timespec now, dl;
        clock_gettime(CLOCK_REALTIME, &now); /* timedlock's clock: it only measures a slice */
        uint64_t ns = (uint64_t)now.tv_nsec + FSIM_INTERRUPT_SLICE_MS * FP_NS_PER_MS;
        dl.tv_sec = now.tv_sec + (time_t)(ns / 1000000000u);
        dl.tv_nsec = (long)(ns % 1000000000u);
        locked = pthread_mutex_timedlock(&u->wlock, &dl) == 0;
        if (!locked && interrupted())
            return U_INTERRUPTED;
    }
    if (!locked)
        pthread_mutex_lock(&u->wlock);
    int rc = u_write_locked(u, iov, iovcnt, total, 1);
    pthread_mutex_unlock(&u->wlock);
    return rc;
}

static atomic_llong peer_waits; /* calls waiting for the kernel side now */
int64_t fsim_debug_peer_waits(void) { return atomic_load(&peer_waits); }

/* Gives up on w (u->lock held): a tombstone takes its place under its id until its ack comes.
 * 0 if there is no memory for one (then w goes on waiting). */
static int w_bury(ucon *u, uwait *w)
{
    uwait *t = calloc(1, sizeof *t);
    if (!t)
        return 0;
    t->id = w->id;
    t->kind = w->kind;
    t->tomb = 1;
    w_unlink(u, w);
    w_insert(u, t);
    w->interrupted = 1;
    return 1;
}

/* Waits (u->lock held) until w is done, the connection dead, or the interrupt hook gives up (then
 * w->interrupted is set and w is no longer linked). */
static void wait_done(ucon *u, uwait *w)
{
    uint64_t end = fp_now_ns() + peer_timeout_ms() * FP_NS_PER_MS;
    atomic_fetch_add(&peer_waits, 1);
    while (!w->done && !u->dead) {
        if (end != UINT64_MAX && fp_now_ns() >= end) {
            (void)shutdown(u->fd, SHUT_RDWR); /* no answer: hang up, the receiver ends it */
            end = UINT64_MAX;
        }
        uint64_t until = slice_end(end);
        if (until == UINT64_MAX) {
            pthread_cond_wait(w->cv, &u->lock);
            continue;
        }
        struct timespec dl = fp_timespec_at(until);
        if (pthread_cond_timedwait(w->cv, &u->lock, &dl) != ETIMEDOUT || w->done || u->dead ||
            !tl_hook)
            continue;
        pthread_mutex_unlock(&u->lock); /* the hook may take its time (Python's GIL) */
        int stop = interrupted();
        pthread_mutex_lock(&u->lock);
        if (stop && !w->done && !u->dead && w_bury(u, w))
            break;
    }
    atomic_fetch_sub(&peer_waits, 1);
}

/* ---- the receiver ---- */

/* Every message goes to the get named by its tag, which it completes (a get is one credit). */
static int on_msgs(ucon *u, const sk_frame *f, fsim_done_list *dl)
{
    size_t off = 0;
    sk_msg_ent me;
    const uint8_t *data;
    while (sk_next_msg(f, &off, &me, &data)) {
        fsim_io *io = g_find(u, me.tag);
        if (!io)
            return -1; /* a message nobody asked for: the kernel side broke the protocol */
        uint32_t bytes;
        fp_hresult hr = fsim_copy_to(io->buffer, io->size, me.reply_length, me.id, data,
                                     me.length, &bytes);
        g_unlink(u, io);
        fsim_done_add(dl, io, hr, bytes);
    }
    return 0;
}

/* A frame from the kernel side (u->lock held); -1: garbage, hang up. */
static int dispatch(ucon *u, const sk_hdr *hdr, fsim_done_list *dl)
{
    sk_frame f;
    if (sk_parse_frame(hdr, hdr->len, SK_FROM_KERNEL, &f) != 0)
        return -1;
    const sk_hdr *h = &f.h;
    uwait *w;
    fsim_io *io;
    switch (h->type) {
    case SK_MSGS:
        if (h->flags & SK_F_EMPTY)
            u->queued = 0;
        return on_msgs(u, &f, dl);
    case SK_QUEUED:
        u->queued = 1;
        return 0;
    case SK_REVOKE_ACK:
        /* count 1: withdrawn before any message reached it. 0: its message came first and has
         * completed it already. */
        if (h->flags & SK_F_EMPTY)
            u->queued = 0;
        io = g_find(u, h->req);
        if (h->count == 1) {
            if (!io)
                return -1;
            g_unlink(u, io);
            fsim_done_add(dl, io, FP_E_OPERATION_ABORTED, 0);
        }
        return 0;
    case SK_REPLY_ACK:
        w = w_find(u, h->req);
        if (w && w->tomb && w->kind == UW_REPLY) { /* for a call that was interrupted */
            w_unlink(u, w);
            free(w);
            return 0;
        }
        if (!w || w->tomb || w->kind != UW_REPLY || w->done || h->count != w->nhrs)
            return -1;
        memcpy(w->hrs, f.body, (size_t)h->count * sizeof(int32_t));
        w->hr = h->hr;
        w->done = 1;
        pthread_cond_signal(w->cv);
        return 0;
    case SK_SEND_ACK:
        w = w_find(u, h->req);
        if (w && w->tomb && w->kind == UW_SEND) {
            w_unlink(u, w);
            free(w);
            return 0;
        }
        if (!w || w->tomb || w->kind != UW_SEND || w->done || h->count > w->out_size)
            return -1;
        if (h->count)
            memcpy(w->out, f.body, h->count);
        w->returned = h->count;
        w->hr = h->hr;
        w->done = 1;
        pthread_cond_signal(w->cv);
        return 0;
    default:
        return -1; /* a second HELLO_ACK */
    }
}

static void *rx_main(void *p)
{
    ucon *u = p;
    sk_hdr *h;
    fsim_done_list dl = {0};
    while (sk_read_frame(&u->rd, &h) == 1) {
        pthread_mutex_lock(&u->lock);
        int rc = dispatch(u, h, &dl);
        pthread_mutex_unlock(&u->lock);
        fsim_done_run(&dl);
        if (rc != 0)
            break;
    }
    (void)shutdown(u->fd, SHUT_RDWR); /* garbage from the peer: hang up on it */
    pthread_mutex_lock(&u->lock);
    u->dead = 1;
    for (uint32_t i = 0; i < U_BUCKETS; i++) {
        for (uwait *w = u->b[i]; w; w = w->next)
            if (!w->tomb)
                pthread_cond_signal(w->cv);
        while (u->g[i]) {
            fsim_io *io = u->g[i];
            g_unlink(u, io);
            fsim_done_add(&dl, io, FP_E_INVALID_HANDLE, 0);
        }
    }
    pthread_mutex_unlock(&u->lock);
    fsim_done_run(&dl);
    return NULL;
}

/* ---- handle ops ---- */

/* Sends the tags as frames of `type` (GET or REVOKE), SK_MAX_TAGS at most each. wlock held. A
 * failure ends the connection: the receiver then completes every pending get. */
static void write_tags(ucon *u, uint16_t type, const uint64_t *tags, uint32_t n)
{
    for (uint32_t i = 0; i < n;) {
        uint32_t k = n - i < SK_MAX_TAGS ? n - i : SK_MAX_TAGS;
        sk_hdr h = {(uint32_t)(sizeof h + k * sizeof *tags), type, 0, k, 0, 0};
        struct iovec v[2] = {{&h, sizeof h}, {(void *)(tags + i), k * sizeof *tags}};
        if (u_write_locked(u, v, 2, h.len, 0) != 0) /* not interruptible: gets wait on it */
            return;
        i += k;
    }
}

/* One credit per get, their tags in one GET frame. wlock is taken before the tags exist, so the
 * GET leaves before any REVOKE of them can. */
static fp_hresult u_get_async(void *impl, fsim_io *ios, uint32_t n)
{
    ucon *u = impl;
    if (foreign(u))
        return FP_E_INVALID_HANDLE;
    uint64_t stack_tags[U_STACK], *tags = n <= U_STACK ? stack_tags : malloc(n * sizeof *tags);
    if (!tags)
        return FP_E_OUTOFMEMORY;
    pthread_mutex_lock(&u->wlock);
    pthread_mutex_lock(&u->lock);
    if (u->dead) {
        pthread_mutex_unlock(&u->lock);
        pthread_mutex_unlock(&u->wlock);
        if (tags != stack_tags)
            free(tags);
        return FP_E_INVALID_HANDLE;
    }
    for (uint32_t i = 0; i < n; i++) {
        g_link(u, &ios[i]);
        tags[i] = ios[i]._tag; /* the ios may complete once unlocked */
    }
    pthread_mutex_unlock(&u->lock);
    write_tags(u, SK_GET, tags, n);
    pthread_mutex_unlock(&u->wlock);
    if (tags != stack_tags)
        free(tags);
    return FP_E_IO_PENDING;
}

static int tag_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* REVOKE of the matching gets, newest first: a message arriving meanwhile goes to the oldest get
 * still waiting, so the gets that receive messages stay the oldest (a pump that posts in slot
 * order relies on it). Each REVOKE_ACK completes its get, unless its message came first. */
static fp_hresult u_cancel(void *impl, const void *key)
{
    ucon *u = impl;
    uint64_t stack_tags[U_STACK], *tags = stack_tags;
    uint32_t n = 0, any = 0;
    if (foreign(u))
        return FP_E_INVALID_HANDLE;
    pthread_mutex_lock(&u->lock);
    if (u->npending > U_STACK && !(tags = malloc(u->npending * sizeof *tags))) {
        pthread_mutex_unlock(&u->lock);
        return FP_E_OUTOFMEMORY;
    }
    for (uint32_t i = 0; i < U_BUCKETS; i++)
        for (fsim_io *io = u->g[i]; io; io = io->_next)
            if (!key || io->key == key) {
                any = 1;
                if (!io->_cancelled) {
                    io->_cancelled = 1;
                    tags[n++] = io->_tag;
                }
            }
    pthread_mutex_unlock(&u->lock);
    qsort(tags, n, sizeof *tags, tag_desc);
    pthread_mutex_lock(&u->wlock);
    write_tags(u, SK_REVOKE, tags, n);
    pthread_mutex_unlock(&u->wlock);
    if (tags != stack_tags)
        free(tags);
    return any ? FP_S_OK : FP_E_NOT_FOUND;
}

static int u_idle(void *impl)
{
    ucon *u = impl;
    if (foreign(u))
        return 0; /* then a get fails at once */
    pthread_mutex_lock(&u->lock);
    int idle = !u->queued && !u->dead; /* a dead connection answers FP_E_INVALID_HANDLE */
    pthread_mutex_unlock(&u->lock);
    return idle;
}

/* What fsim_client_reply refuses with E_INVALIDARG is refused here, without a round trip. */
static int reply_ok(const SIM_REPLY_ENTRY *x)
{
    return x->buffer && x->size >= sizeof(FP_REPLY_HEADER) &&
           x->size - sizeof(FP_REPLY_HEADER) <= FSIM_MAX_MESSAGE;
}

static fp_hresult u_reply(void *impl, SIM_REPLY_ENTRY *e, uint32_t n)
{
    ucon *u = impl;
    if (foreign(u))
        return FP_E_INVALID_HANDLE;
    pthread_mutex_lock(&u->lock);
    int dead = u->dead;
    pthread_mutex_unlock(&u->lock);
    if (dead)
        return FP_E_INVALID_HANDLE; /* entries untouched, as on inproc */
    for (uint32_t i = 0; i < n;) {
        /* One frame: as many replies as fit SK_FRAME_MAX (always at least one). */
        uint32_t j = i, nv = 0;
        size_t total = sizeof(sk_hdr);
        while (j < n && j - i < U_REPLY_CHUNK) {
            const SIM_REPLY_ENTRY *x = &e[j];
            if (reply_ok(x)) {
                size_t add = sizeof(sk_reply_ent) + SK_ALIGN8(x->size);
                if (nv && total + add > SK_FRAME_MAX)
                    break;
                total += add;
                nv++;
            }
            j++;
        }
        if (nv == 0) {
            for (uint32_t k = i; k < j; k++)
                e[k].hr = FP_E_INVALIDARG;
            i = j;
            continue;
        }
        sk_reply_ent stack_re[U_STACK];
        struct iovec stack_iov[1 + 3 * U_STACK];
        int32_t stack_hr[U_STACK];
        sk_reply_ent *re = nv <= U_STACK ? stack_re : malloc(nv * sizeof *re);
        struct iovec *iov = nv <= U_STACK ? stack_iov : malloc((1 + 3 * (size_t)nv) * sizeof *iov);
        int32_t *hrs = nv <= U_STACK ? stack_hr : malloc(nv * sizeof *hrs);
        fp_hresult hr = FP_S_OK;
        if (!re || !iov || !hrs) {
            hr = FP_E_OUTOFMEMORY;
            goto chunk_done;
        }
        sk_hdr h = {(uint32_t)total, SK_REPLY, 0, nv, 0, 0};
        int iv = 0;
        uint32_t r = 0;
        iov[iv++] = (struct iovec){&h, sizeof h};
        for (uint32_t k = i; k < j; k++) {
            const SIM_REPLY_ENTRY *x = &e[k];
            if (!reply_ok(x))
                continue;
            re[r] = (sk_reply_ent){x->size, 0};
            iov[iv++] = (struct iovec){&re[r], sizeof re[r]};
            iov[iv++] = (struct iovec){(void *)x->buffer, x->size};
            if (SK_ALIGN8(x->size) != x->size)
                iov[iv++] = (struct iovec){(void *)zeros, SK_ALIGN8(x->size) - x->size};
            r++;
        }
        uwait w;
        memset(&w, 0, sizeof w);
        w.kind = UW_REPLY;
        w.hrs = hrs;
        w.nhrs = nv;
        w.cv = fsim_thread_cond();
        pthread_mutex_lock(&u->lock);
        if (u->dead) {
            pthread_mutex_unlock(&u->lock);
            hr = FP_E_INVALID_HANDLE;
            goto chunk_done;
        }
        w_link(u, &w);
        h.req = w.id;
        pthread_mutex_unlock(&u->lock);
        int wr = u_write(u, iov, iv, total);
        pthread_mutex_lock(&u->lock);
        if (wr == 0)
            wait_done(u, &w);
        if (!w.interrupted)
            w_unlink(u, &w);
        pthread_mutex_unlock(&u->lock);
        hr = w.interrupted || wr == U_INTERRUPTED ? FP_E_OPERATION_ABORTED
             : !w.done                            ? FP_E_INVALID_HANDLE
                                                  : w.hr;
        if (FP_SUCCEEDED(hr)) {
            r = 0;
            for (uint32_t k = i; k < j; k++)
                e[k].hr = reply_ok(&e[k]) ? hrs[r++] : FP_E_INVALIDARG;
        }
    chunk_done:
        if (re != stack_re)
            free(re);
        if (iov != stack_iov)
            free(iov);
        if (hrs != stack_hr)
            free(hrs);
        if (!FP_SUCCEEDED(hr))
            return hr;
        i = j;
    }
    return FP_S_OK;
}

static fp_hresult u_send(void *impl, const void *in, uint32_t in_size, void *out,
                         uint32_t out_size, uint32_t *returned)
{
    ucon *u = impl;
    uwait w;
    memset(&w, 0, sizeof w);
    w.kind = UW_SEND;
    w.out = out;
    w.out_size = out_size;
    w.cv = fsim_thread_cond();
    *returned = 0;
    if (foreign(u))
        return FP_E_INVALID_HANDLE;
    pthread_mutex_lock(&u->lock);
    if (u->dead) {
        pthread_mutex_unlock(&u->lock);
        return FP_E_INVALID_HANDLE;
    }
    w_link(u, &w);
    pthread_mutex_unlock(&u->lock);
    sk_hdr h = {(uint32_t)(sizeof h + in_size), SK_SEND, 0, out_size, 0, w.id};
    struct iovec v[2] = {{&h, sizeof h}, {(void *)in, in_size}};
    int wr = u_write(u, v, in_size ? 2 : 1, sizeof h + in_size);
    pthread_mutex_lock(&u->lock);
    if (wr == 0)
        wait_done(u, &w);
    if (!w.interrupted)
        w_unlink(u, &w);
    pthread_mutex_unlock(&u->lock);
    if (!w.done)
        return w.interrupted || wr == U_INTERRUPTED ? FP_E_OPERATION_ABORTED : FP_E_INVALID_HANDLE;
    *returned = w.returned;
    return w.hr;
}

/* The kernel side answers a cancel at once when it runs. One that does not within the peer
 * timeout (its process stopped), or when the caller's interrupt hook gives up, is hung up on: the
 * connection ends, and the receiver completes every pending get, this one included. */
static void u_settle(void *impl, sem_t *sem)
{
    ucon *u = impl;
    uint64_t end = fp_now_ns() + peer_timeout_ms() * FP_NS_PER_MS;
    atomic_fetch_add(&peer_waits, 1);
    while (fsim_sem_take(sem, slice_end(end)) != 0) {
        if (fp_now_ns() >= end || interrupted()) {
            (void)shutdown(u->fd, SHUT_RDWR);
            fsim_sem_take(sem, 0);
            break;
        }
    }
    atomic_fetch_sub(&peer_waits, 1);
}

/* CloseHandle. Like FltLib's, it returns once the kernel side has disconnected the client port
 * (DisconnectNotify has run): we stop writing, the kernel reads EOF, closes the client and then
 * hangs up, which our receiver sees. A kernel that does not answer within U_CLOSE_WAIT_MS (its
 * process stopped, say) is hung up on without waiting further. */
static void u_hangup(ucon *u)
{
    if (foreign(u)) { /* the parent's: leave the socket alone, let our descriptor go */
        if (u->fd >= 0)
            close(u->fd);
        u->fd = -1;
        return;
    }
    if (u->rx_started) {
        uwait w;
        memset(&w, 0, sizeof w);
        w.kind = UW_CLOSE;
        w.cv = fsim_thread_cond();
        struct timespec dl = fp_timespec_at(fp_now_ns() + U_CLOSE_WAIT_MS * FP_NS_PER_MS);
        pthread_mutex_lock(&u->lock);
        w_link(u, &w);
        pthread_mutex_unlock(&u->lock);
        (void)shutdown(u->fd, SHUT_WR);
        pthread_mutex_lock(&u->lock);
        while (!u->dead && pthread_cond_timedwait(w.cv, &u->lock, &dl) != ETIMEDOUT)
            ;
        w_unlink(u, &w);
        pthread_mutex_unlock(&u->lock);
    }
    (void)shutdown(u->fd, SHUT_RDWR);
    if (u->rx_started)
        pthread_join(u->rx, NULL);
}

static void u_free(ucon *u)
{
    for (uint32_t i = 0; i < U_BUCKETS; i++) /* only tombstones are left: every call returned */
        while (u->b[i]) {
            uwait *t = u->b[i];
            w_unlink(u, t);
            free(t);
        }
    if (u->fd >= 0)
        close(u->fd);
    sk_reader_free(&u->rd);
    if (!foreign(u)) { /* a child's copies may be locked by threads that are not there */
        pthread_mutex_destroy(&u->lock);
        pthread_mutex_destroy(&u->wlock);
    }
    free(u);
}

static void u_close(fsim_hobj *o) { u_hangup(o->impl); }
static void u_release(fsim_hobj *o) { u_free(o->impl); }

static const fsim_handle_ops sock_handle_ops = {
    .type = FSIM_H_PORT, .transport = FSIM_SOCKET, .get_async = u_get_async, .cancel = u_cancel,
    .idle = u_idle, .reply = u_reply, .send = u_send, .settle = u_settle, .close = u_close,
    .release = u_release,
};

/* ---- connecting ---- */

/* Waits until fd can be read (S_OK; also on an error, for the read to report), `end` passes
 * (FP_E_TIMEOUT) or the interrupt hook gives up (FP_E_OPERATION_ABORTED). */
static fp_hresult readable_within(int fd, uint64_t end)
{
    atomic_fetch_add(&peer_waits, 1);
    int r = sk_wait_fd(fd, POLLIN, end, tl_hook ? interrupted : NULL, FSIM_INTERRUPT_SLICE_MS);
    atomic_fetch_sub(&peer_waits, 1);
    return r > 0 ? FP_S_OK : r < 0 ? FP_E_OPERATION_ABORTED : FP_E_TIMEOUT;
}

/* Connects to the port's socket in dir, a directory owned by dir_uid. FP_E_FILE_NOT_FOUND if
 * there is none (or a stale one); FP_E_ACCESSDENIED if the socket file belongs to neither the
 * directory's owner nor root (nobody else can have put it there: the directory was checked), or
 * we may not reach it. With must_exist, a dir we cannot look into counts as not having it. */
static fp_hresult try_dir(const char *dir, uint32_t dir_uid, const char *name, int must_exist,
                          int *fdp)
{
    struct sockaddr_un a;
    if (sk_port_path(dir, name, &a) != 0)
        return FP_E_FILE_NOT_FOUND;
    struct stat st;
    if (lstat(a.sun_path, &st) != 0) {
        if (errno != EACCES || must_exist)
            return FP_E_FILE_NOT_FOUND;
        sk_set_detail("cannot reach %s: %s", a.sun_path, strerror(EACCES));
        return FP_E_ACCESSDENIED;
    }
    if (!S_ISSOCK(st.st_mode))
        return FP_E_FILE_NOT_FOUND;
    if (st.st_uid != dir_uid && st.st_uid != 0) {
        sk_set_detail("refusing %s: the socket file is owned by uid %u, not by the directory's "
                      "owner (uid %u)", a.sun_path, (unsigned)st.st_uid, (unsigned)dir_uid);
        return FP_E_ACCESSDENIED;
    }
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return FP_E_OUTOFMEMORY;
    int r;
    do
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
        *fdp = fd;
        return FP_S_OK;
    }
    int e = errno;
    close(fd);
    return e == EACCES || e == EPERM ? FP_E_ACCESSDENIED : FP_E_FILE_NOT_FOUND;
}

static int cmp_uid(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Looks for the port where sock_proto.h's rules say: $FASTPORT_RUNTIME_DIR alone if set; else our
 * own directories (refusing one that is not ours or that others may write to: someone may have
 * created it first to plant a fake port), then other users' /tmp/fastport-<uid> (root's first),
 * only those that really belong to the uid in their name and that nobody else can write to. */
static fp_hresult find_port(const char *name, int *fdp)
{
    char own[2][SK_DIR_MAX];
    int n = sk_own_dirs(own);
    if (n < 0)
        return FP_E_FILE_NOT_FOUND; /* $FASTPORT_RUNTIME_DIR cannot hold a socket */
    const char *env = getenv("FASTPORT_RUNTIME_DIR");
    int from_env = env && *env;
    uint32_t me = (uint32_t)geteuid();
    fp_hresult hr;
    for (int i = 0; i < n; i++) {
        uint32_t owner;
        fp_ntstatus st = sk_check_dir(own[i], from_env ? -1 : (int64_t)me, !from_env, &owner);
        if (st == FP_STATUS_OBJECT_NAME_NOT_FOUND)
            continue;
        if (!FP_NT_SUCCESS(st))
            return FP_E_ACCESSDENIED;
        hr = try_dir(own[i], owner, name, 0, fdp);
        if (hr != FP_E_FILE_NOT_FOUND)
            return hr;
    }
    if (from_env)
        return FP_E_FILE_NOT_FOUND;
    uint32_t uids[64];
    size_t nu = 0;
    DIR *d = opendir("/tmp");
    if (!d)
        return FP_E_FILE_NOT_FOUND;
    struct dirent *de;
    char dir[SK_DIR_MAX];
    while ((de = readdir(d)) && nu < 64) {
        if (strncmp(de->d_name, "fastport-", 9) != 0)
            continue;
        char *end;
        errno = 0;
        unsigned long uid = strtoul(de->d_name + 9, &end, 10);
        if (errno || *end || end == de->d_name + 9 || uid > UINT32_MAX || uid == me)
            continue;
        struct stat st;
        sk_default_dir((uint32_t)uid, dir, sizeof dir);
        if (strcmp(dir + 5, de->d_name) != 0) /* canonical names only ("fastport-007" is not 7's) */
            continue;
        if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != uid ||
            (st.st_mode & 022))
            continue;
        uids[nu++] = (uint32_t)uid;
    }
    closedir(d);
    qsort(uids, nu, sizeof uids[0], cmp_uid);
    for (size_t i = 0; i < nu; i++) {
        sk_default_dir(uids[i], dir, sizeof dir);
        hr = try_dir(dir, uids[i], name, 1, fdp);
        if (hr != FP_E_FILE_NOT_FOUND)
            return hr;
    }
    return FP_E_FILE_NOT_FOUND;
}

fp_hresult fsim_sock_connect(const char *name, const void *ctx, uint32_t ctx_size, SIM_HANDLE *out)
{
    int fd = -1;
    fp_hresult hr = find_port(name, &fd);
    if (!FP_SUCCEEDED(hr))
        return hr;
    ucon *u = calloc(1, sizeof *u);
    if (!u) {
        close(fd);
        return FP_E_OUTOFMEMORY;
    }
    u->fd = fd;
    u->fork_gen = fsim_fork_generation();
    u->rd.fd = fd;
    u->rd.rest_timeout_ms = peer_timeout_ms(); /* a kernel side stuck inside a frame: hang up */
    u->rec_max = sk_tune_socket(fd);
    u->next_id = 1;
    u->queued = 1; /* until the kernel says otherwise */
    pthread_mutex_init(&u->lock, NULL);
    pthread_mutex_init(&u->wlock, NULL);

    uint32_t name_len = (uint32_t)strlen(name);
    sk_hello hello = {name_len, ctx_size};
    size_t total = sizeof(sk_hdr) + sizeof hello + name_len + ctx_size;
    sk_hdr h = {(uint32_t)total, SK_HELLO, 0, SK_MAGIC, SK_VERSION, 0};
    struct iovec v[4] = {{&h, sizeof h}, {&hello, sizeof hello}, {(void *)name, name_len},
                         {(void *)ctx, ctx_size}};
    sk_hdr *a;
    /* ConnectNotify runs meanwhile; a kernel side that never answers is given up on */
    sk_frame f;
    int wr = u_write(u, v, ctx_size ? 4 : 3, total);
    if (wr != 0) /* hung up on: the port closed meanwhile; or interrupted */
        hr = wr == U_INTERRUPTED ? FP_E_OPERATION_ABORTED : FP_E_FILE_NOT_FOUND;
    else if ((hr = readable_within(fd, fp_now_ns() + peer_timeout_ms() * FP_NS_PER_MS)) != FP_S_OK)
        ; /* no answer in time, or interrupted */
    else if (sk_read_frame(&u->rd, &a) != 1 ||
             sk_parse_frame(a, a->len, SK_FROM_KERNEL, &f) != 0 || f.h.type != SK_HELLO_ACK)
        hr = FP_E_FILE_NOT_FOUND;
    else
        hr = f.h.hr;
    if (FP_SUCCEEDED(hr) && sk_thread_create(&u->rx, rx_main, u) != 0)
        hr = FP_E_OUTOFMEMORY;
    if (!FP_SUCCEEDED(hr)) {
        u_free(u);
        return hr;
    }
    u->rx_started = 1;
    SIM_HANDLE handle = fsim_handle_new(&sock_handle_ops, u);
    if (!handle) {
        u_hangup(u);
        u_free(u);
        return FP_E_OUTOFMEMORY;
    }
    *out = handle;
    return FP_S_OK;
}
