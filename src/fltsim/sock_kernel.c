/* Kernel side of the socket transport: a listening socket per FSIM_SOCKET server port and, per
 * accepted connection, the remote client that core.c drives through fsim_sock_kernel_transport.
 *
 * Credit accounting (what makes a remote get behave like a FilterGetMessage pending in the kernel)
 * ------------------------------------------------------------------------------------------------
 * core.c delivers a message to a remote client only against a credit (c->credits), one credit per
 * message; without credits messages stay queued, and a queued message whose sender times out is
 * withdrawn and never delivered. Credits must therefore stand for gets that are really pending.
 * They are kept PER PENDING GET, never pooled per handle:
 *
 * - Every overlapped get on the user side is one "group" of one credit, tagged with a
 *   connection-unique id; a GET frame carries the tags of the gets submitted together. Groups queue FIFO here (guarded by the client's lock, like
 *   c->credits), and c->credits == the number of groups.
 * - A delivery (deliver(), under the client's lock) gives each message to the oldest group, which
 *   it closes (SK_LAST); the user side copies it straight into that get's buffer and completes it.
 * - A cancelled get's tag goes in a REVOKE frame. Under the client's lock the group is either still waiting
 *   (removed with its credit: REVOKE_ACK count 1, the get completes as aborted) or already closed
 *   by a delivery (REVOKE_ACK count 0). Frames of one connection leave in order, and every
 *   delivery frame is queued for sending under the client's lock, so the message of a closed
 *   group precedes the REVOKE_ACK: the get completed with it (a cancel racing a completion).
 * - A poll (a waited get with timeout 0) is GET then REVOKE. The user side skips even that round
 *   trip when it knows nothing is queued: core's `queued` hook sends QUEUED when a message has to
 *   wait and the user may believe the queue empty; MSGS / REVOKE_ACK say SK_F_EMPTY once it is.
 * - This file takes c->lock itself (the groups live under it, and a group's credit must leave
 *   c->credits in the same critical section as the group: a pooled count cannot say WHOSE
 *   credit it took). deliver() and the queued hook are called with it held.
 *
 * Threads and lifetimes
 * - One accept thread per listening server (joined by unlisten).
 * - One thread per connection: handshake, then reads the user's frames. It owns the reference
 *   fsim_server_connect returned. When the connection ends (EOF, error, garbage, or a kernel-side
 *   fsim_close_client that shut the socket down) it calls fsim_close_client, hangs up only then
 *   (the user's SimFilterClose waits for that: DisconnectNotify has run when it returns, as with
 *   FltLib), joins the writer and the FilterSendMessage workers, and drops its reference as its
 *   very last act. The table's release runs when the last reference goes: on the connection
 *   thread itself it detaches the thread, anywhere else it joins it (already past its last
 *   access), then frees the state.
 * - Frames are written without blocking: deliver() runs under the client's lock and must not wait
 *   for a slow or stopped peer. What the socket does not take is copied to a backlog that a writer
 *   thread (started on first need) sends; while a backlog exists every frame goes behind it, so
 *   frames never reorder.
 * - FilterSendMessage (SEND) runs MessageNotify on a small pool of worker threads, so a slow or
 *   re-entrant MessageNotify never stalls the connection's replies and gets.
 *
 * What a hostile local peer can take (emulator's choices; what was refused is counted in the
 * server's fsim_server_stats)
 * - Time: a peer has SK_FRAME_TIMEOUT_MS ($FASTPORT_SOCK_FRAME_TIMEOUT_MS, read when the port is
 *   created) to send its HELLO once connected, and as long for the rest of any frame once its first
 *   record is in; then it is hung up on (peers_timed_out). A connection still in its handshake
 *   holds a thread; at most SK_MAX_HANDSHAKES do at once per port, later ones are closed unheard
 *   (connections_refused), and closing the port hangs up on all of them, so it returns at once.
 * - Memory: FilterSendMessage requests wait for a worker in a queue of at most SK_MAX_QUEUED_JOBS
 *   requests and SK_MAX_QUEUED_BYTES input bytes per connection; one more is answered
 *   E_OUTOFMEMORY at once (sends_dropped). Output the peer does not read waits in the backlog.
 *   Messages there are bounded by the peer's credits (gets it asked for: SK_MAX_GROUPS). Answers
 *   to its requests (acks) are not, so a peer that keeps asking without reading is hung up on once
 *   more than SK_MAX_UNREAD_ANSWERS bytes of them wait ($FASTPORT_SOCK_MAX_UNREAD_ANSWERS, read
 *   when the port is created; slow_peers_dropped). The kernel side never stops reading a peer to
 *   push back: the user side's receiver may wait for its own writers (a get submitted from a
 *   completion), so a kernel that stopped reading could deadlock a connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sock_proto.h"

#define K_BATCH 64

typedef struct kgroup { /* the credit of one pending remote get */
    struct kgroup *next;
    uint64_t tag;
} kgroup;

typedef struct kchunk { /* backlog: the unsent rest of one frame */
    struct kchunk *next;
    size_t len, done;
    int answer; /* an answer to the peer's request (not a delivery): counts in o_answer_bytes */
    uint8_t data[];
} kchunk;

typedef struct kjob { /* one FilterSendMessage */
    struct kjob *next;
    uint64_t req;
    uint32_t out_size, in_size;
    uint8_t in[];
} kjob;

typedef struct kpending kpending;

typedef struct kconn {
    int fd;
    uint32_t rec_max;
    fsim_server *server; /* during the handshake */
    fsim_server *srv;    /* for its stats: the same server, held by the client after the handshake */
    kpending *pend;      /* during the handshake: its listener's list (see kpending) */
    struct kconn *p_next, *p_prev;
    fsim_client *client;
    pthread_t thread;
    pthread_mutex_t start_mu; /* orders the store of `thread` before the thread runs */
    sk_reader rd;

    /* guarded by client->lock */
    kgroup *g_head, *g_tail, *g_free;
    uint32_t ngroups;
    int hinted; /* the user knows something may be queued (QUEUED sent, no SK_F_EMPTY since) */

    /* output: guarded by out_mu */
    pthread_mutex_t out_mu;
    pthread_cond_t out_cv;
    kchunk *o_head, *o_tail;
    size_t o_answer_bytes, max_answer_bytes; /* answers in the backlog, and their bound */
    int o_dead, o_stop, hello_sent, shut_pending, defer_shut, writer_started;
    pthread_t writer;

    /* FilterSendMessage workers: guarded by w_mu */
    pthread_mutex_t w_mu;
    pthread_cond_t w_cv;
    kjob *j_head, *j_tail;
    uint32_t njobs, idle, nworkers;
    size_t jbytes; /* input bytes of the queued jobs */
    int w_stop;
    pthread_t workers[SK_MAX_WORKERS];
} kconn;

/* The connections of one listener still in their handshake: closing the port hangs up on them.
 * Shared by the listener and those connections (freed by whoever leaves last). */
struct kpending {
    pthread_mutex_t mu;
    uint32_t refs, n;
    int closed;
    kconn *head;
};

typedef struct klistener {
    int fd, wake;
    pthread_t thread;
    fsim_server *server;
    kpending *pend;
    uint32_t frame_timeout_ms;
    size_t max_answer_bytes;
    struct sockaddr_un addr;
    dev_t dev;
    ino_t ino;
    char lockpath[sizeof(struct sockaddr_un) + 16];
} klistener;

static __thread kconn *tl_conn; /* the connection whose thread this is */
static const uint8_t zeros[8];

/* ---- output ---- */

/* The connection is unusable: stop writing, wake the writer (it drops the backlog) and make both
 * the peer and our reader see the end. */
static void out_dead_locked(kconn *k)
{
    k->o_dead = 1;
    pthread_cond_signal(&k->out_cv);
    (void)shutdown(k->fd, SHUT_RDWR);
}

static void *writer_main(void *p)
{
    kconn *k = p;
    pthread_mutex_lock(&k->out_mu);
    for (;;) {
        if (k->o_dead)
            while (k->o_head) {
                kchunk *ch = k->o_head;
                k->o_head = ch->next;
                k->o_answer_bytes -= ch->answer ? ch->len : 0;
                free(ch);
            }
        if (k->o_head) {
            kchunk *ch = k->o_head; /* stays at the head (and ours) while we send it */
            pthread_mutex_unlock(&k->out_mu);
            struct iovec v = {ch->data, ch->len};
            int rc = sk_send_records(k->fd, &v, 1, ch->len, k->rec_max, 0, &ch->done);
            pthread_mutex_lock(&k->out_mu);
            if (rc != 0) {
                out_dead_locked(k);
                continue;
            }
            k->o_head = ch->next;
            k->o_answer_bytes -= ch->answer ? ch->len : 0;
            free(ch);
            continue;
        }
        k->o_tail = NULL;
        if (k->o_stop)
            break;
        pthread_cond_wait(&k->out_cv, &k->out_mu);
    }
    pthread_mutex_unlock(&k->out_mu);
    return NULL;
}

/* Copies bytes [done, total) of the frame to the backlog. out_mu held. */
static int backlog(kconn *k, const struct iovec *iov, int iovcnt, size_t total, size_t done,
                   int answer)
{
    if (answer && k->o_answer_bytes + (total - done) > k->max_answer_bytes) {
        atomic_fetch_add(&k->srv->slow_peers_dropped, 1); /* it asks and never reads */
        return -1;
    }
    kchunk *ch = malloc(sizeof *ch + (total - done));
    if (!ch)
        return -1;
    ch->next = NULL;
    ch->len = total - done;
    ch->done = 0;
    ch->answer = answer;
    size_t skip = done, at = 0;
    for (int i = 0; i < iovcnt; i++) {
        size_t l = iov[i].iov_len, o = 0;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        o = skip;
        skip = 0;
        memcpy(ch->data + at, (const char *)iov[i].iov_base + o, l - o);
        at += l - o;
    }
    if (!k->writer_started) {
        if (sk_thread_create(&k->writer, writer_main, k) != 0) {
            free(ch);
            return -1;
        }
        k->writer_started = 1;
    }
    if (k->o_head)
        k->o_tail->next = ch;
    else
        k->o_head = ch;
    k->o_tail = ch;
    k->o_answer_bytes += answer ? ch->len : 0;
    pthread_cond_signal(&k->out_cv);
    return 0;
}

/* Sends one frame after every frame written before it, without blocking. answer: the frame
 * answers the peer (anything but a delivery). -1: connection dead. */
static int k_write(kconn *k, const struct iovec *iov, int iovcnt, size_t total, int answer)
{
    int rc = 0;
    pthread_mutex_lock(&k->out_mu);
    if (k->o_dead) {
        rc = -1;
    } else {
        size_t done = 0;
        if (!k->o_head) {
            if (sk_send_records(k->fd, iov, iovcnt, total, k->rec_max, MSG_DONTWAIT, &done) == 0)
                goto out;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                out_dead_locked(k);
                rc = -1;
                goto out;
            }
        }
        if (backlog(k, iov, iovcnt, total, done, answer) != 0) {
            out_dead_locked(k);
            rc = -1;
        }
    }
out:
    pthread_mutex_unlock(&k->out_mu);
    return rc;
}

static int k_write_frame(kconn *k, uint16_t type, uint16_t flags, uint64_t req, uint32_t count,
                         int32_t hr, const void *body, size_t body_len)
{
    sk_hdr h = {(uint32_t)(sizeof h + body_len), type, flags, count, hr, req};
    struct iovec v[2] = {{&h, sizeof h}, {(void *)body, body_len}};
    return k_write(k, v, body_len ? 2 : 1, sizeof h + body_len, 1);
}

static int k_write_hdr(kconn *k, uint16_t type, uint64_t req, uint32_t count, int32_t hr,
                       const void *body, size_t body_len)
{
    return k_write_frame(k, type, 0, req, count, hr, body, body_len);
}

/* ---- the transport table's connection functions (called by core.c) ---- */

/* Client lock held. Gives the messages to the oldest waiting gets (see the top of the file) and
 * writes them, K_BATCH messages or SK_FRAME_MAX bytes per frame at most. */
static int k_deliver(void *remote, fsim_msg *const *msgs, uint32_t n)
{
    kconn *k = remote;
    fsim_client *c = k->client;
    sk_msg_ent stack_ents[K_BATCH];
    sk_msg_ent *ents = n <= K_BATCH ? stack_ents : malloc(n * sizeof *ents);
    if (!ents)
        return -1;
    int rc = 0;
    for (uint32_t i = 0; i < n; i++) {
        kgroup *g = k->g_head;
        if (!g) { /* credits without a waiting get: cannot happen while the counts agree */
            rc = -1;
            goto out;
        }
        const fsim_msg *m = msgs[i];
        ents[i] = (sk_msg_ent){g->tag, m->id, fsim_message_reply_length(m), m->length, SK_LAST, 0};
        k->g_head = g->next;
        if (!k->g_head)
            k->g_tail = NULL;
        k->ngroups--;
        g->next = k->g_free;
        k->g_free = g;
    }
    for (uint32_t i = 0; i < n && rc == 0;) {
        struct iovec iov[1 + 3 * K_BATCH];
        sk_hdr h = {0, SK_MSGS, 0, 0, 0, 0};
        size_t total = sizeof h;
        int nv = 1;
        iov[0] = (struct iovec){&h, sizeof h};
        while (i < n && h.count < K_BATCH) {
            size_t add = sizeof(sk_msg_ent) + SK_ALIGN8(ents[i].length);
            if (h.count && total + add > SK_FRAME_MAX)
                break;
            iov[nv++] = (struct iovec){&ents[i], sizeof ents[i]};
            if (ents[i].length)
                iov[nv++] = (struct iovec){(void *)msgs[i]->data, ents[i].length};
            if (SK_ALIGN8(ents[i].length) != ents[i].length)
                iov[nv++] = (struct iovec){(void *)zeros,
                                           SK_ALIGN8(ents[i].length) - ents[i].length};
            total += add;
            h.count++;
            i++;
        }
        h.len = (uint32_t)total;
        if (i == n && !c->q_head) { /* core's queue is drained: polls may answer locally */
            h.flags = SK_F_EMPTY;
            k->hinted = 0;
        }
        rc = k_write(k, iov, nv, total, 0);
    }
out:
    if (ents != stack_ents)
        free(ents);
    return rc;
}

static void k_disconnected(void *remote)
{
    kconn *k = remote;
    pthread_mutex_lock(&k->out_mu);
    if (k->defer_shut)
        k->o_dead = 1; /* the connection thread hangs up once DisconnectNotify is done */
    else if (k->hello_sent)
        out_dead_locked(k);
    else
        k->shut_pending = 1; /* the user hears of it right after its connect succeeds */
    pthread_mutex_unlock(&k->out_mu);
}

static void k_free(kconn *k)
{
    if (k->fd >= 0)
        close(k->fd);
    for (kgroup *g = k->g_head, *n; g; g = n) {
        n = g->next;
        free(g);
    }
    for (kgroup *g = k->g_free, *n; g; g = n) {
        n = g->next;
        free(g);
    }
    for (kchunk *ch = k->o_head, *n; ch; ch = n) {
        n = ch->next;
        free(ch);
    }
    for (kjob *j = k->j_head, *n; j; j = n) {
        n = j->next;
        free(j);
    }
    sk_reader_free(&k->rd);
    pthread_mutex_destroy(&k->start_mu);
    pthread_mutex_destroy(&k->out_mu);
    pthread_cond_destroy(&k->out_cv);
    pthread_mutex_destroy(&k->w_mu);
    pthread_cond_destroy(&k->w_cv);
    free(k);
}

static void k_release(void *remote)
{
    kconn *k = remote;
    if (tl_conn == k)
        pthread_detach(pthread_self()); /* our own last reference: nothing runs after this */
    else
        pthread_join(k->thread, NULL); /* it dropped its reference: it is on its way out */
    k_free(k);
}

/* Client lock held: the first message queued since the user last heard "empty". */
static void k_queued(void *remote)
{
    kconn *k = remote;
    if (!k->hinted) {
        k->hinted = 1;
        (void)k_write_hdr(k, SK_QUEUED, 0, 0, FP_S_OK, NULL, 0);
    }
}


/* ---- FilterSendMessage workers ---- */

static void run_job(kconn *k, kjob *j)
{
    void *out = NULL;
    uint32_t ret = 0;
    fp_hresult hr;
    if (j->out_size && !(out = malloc(j->out_size)))
        hr = FP_E_OUTOFMEMORY;
    else
        hr = fsim_client_user_send(k->client, j->in, j->in_size, out, j->out_size, &ret);
    if (!FP_SUCCEEDED(hr) || ret > j->out_size)
        ret = FP_SUCCEEDED(hr) ? j->out_size : 0;
    (void)k_write_hdr(k, SK_SEND_ACK, j->req, ret, hr, out, ret);
    free(out);
    free(j);
}

static void *worker_main(void *p)
{
    kconn *k = p;
    pthread_mutex_lock(&k->w_mu);
    for (;;) {
        while (!k->j_head && !k->w_stop) {
            k->idle++;
            pthread_cond_wait(&k->w_cv, &k->w_mu);
            k->idle--;
        }
        if (!k->j_head)
            break;
        kjob *j = k->j_head;
        k->j_head = j->next;
        if (!k->j_head)
            k->j_tail = NULL;
        k->njobs--;
        k->jbytes -= j->in_size;
        pthread_mutex_unlock(&k->w_mu);
        run_job(k, j);
        pthread_mutex_lock(&k->w_mu);
    }
    pthread_mutex_unlock(&k->w_mu);
    return NULL;
}

/* Queues j for a worker; -1 (j not taken) when the connection's queue is full. */
static int submit_job(kconn *k, kjob *j)
{
    pthread_mutex_lock(&k->w_mu);
    if (k->njobs && (k->njobs >= SK_MAX_QUEUED_JOBS ||
                     k->jbytes + j->in_size > SK_MAX_QUEUED_BYTES)) {
        pthread_mutex_unlock(&k->w_mu);
        return -1;
    }
    j->next = NULL;
    if (k->j_tail)
        k->j_tail->next = j;
    else
        k->j_head = j;
    k->j_tail = j;
    k->njobs++;
    k->jbytes += j->in_size;
    if (k->njobs > k->idle && k->nworkers < SK_MAX_WORKERS &&
        sk_thread_create(&k->workers[k->nworkers], worker_main, k) == 0)
        k->nworkers++;
    if (k->nworkers == 0) { /* no thread to be had: serve it here */
        k->j_head = k->j_tail = NULL;
        k->njobs = 0;
        k->jbytes = 0;
        pthread_mutex_unlock(&k->w_mu);
        run_job(k, j);
        return 0;
    }
    pthread_cond_signal(&k->w_cv);
    pthread_mutex_unlock(&k->w_mu);
    return 0;
}

/* ---- the user's frames ---- */

/* Client lock held. Withdraws the group `tag` if it still waits (1), and answers REVOKE_ACK: under
 * the lock, so the answer's SK_F_EMPTY is in order with QUEUED and deliveries. */
static int revoke_locked(kconn *k, uint64_t tag)
{
    fsim_client *c = k->client;
    uint32_t found = 0;
    kgroup *prev = NULL;
    for (kgroup *g = k->g_head; g; prev = g, g = g->next) {
        if (g->tag != tag)
            continue;
        if (prev)
            prev->next = g->next;
        else
            k->g_head = g->next;
        if (k->g_tail == g)
            k->g_tail = prev;
        k->ngroups--;
        c->credits -= c->credits ? 1 : 0;
        g->next = k->g_free;
        k->g_free = g;
        found = 1;
        break;
    }
    uint16_t flags = 0;
    if (!c->q_head) {
        flags = SK_F_EMPTY;
        k->hinted = 0;
    }
    return k_write_frame(k, SK_REVOKE_ACK, flags, tag, found, FP_S_OK, NULL, 0);
}

static int on_get(kconn *k, const sk_frame *f)
{
    fsim_client *c = k->client;
    pthread_mutex_lock(&c->lock);
    for (uint32_t i = 0; i < f->h.count; i++) {
        kgroup *g = k->g_free;
        if (g)
            k->g_free = g->next;
        else
            g = malloc(sizeof *g);
        if (!g || k->ngroups >= SK_MAX_GROUPS) {
            if (g) {
                g->next = k->g_free;
                k->g_free = g;
            }
            pthread_mutex_unlock(&c->lock);
            return -1;
        }
        *g = (kgroup){NULL, sk_frame_tag(f, i)};
        if (k->g_tail)
            k->g_tail->next = g;
        else
            k->g_head = g;
        k->g_tail = g;
        k->ngroups++;
    }
    pthread_mutex_unlock(&c->lock);
    /* The groups are queued behind every earlier one before their credits exist, so no delivery
     * can reach them before they do. */
    fsim_client_grant(c, f->h.count);
    return 0;
}

static int on_revoke(kconn *k, const sk_frame *f)
{
    fsim_client *c = k->client;
    int rc = 0;
    pthread_mutex_lock(&c->lock);
    for (uint32_t i = 0; i < f->h.count && rc == 0; i++)
        rc = revoke_locked(k, sk_frame_tag(f, i));
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int on_reply(kconn *k, const sk_frame *f)
{
    uint32_t n = f->h.count;
    SIM_REPLY_ENTRY stack_e[K_BATCH];
    int32_t stack_hr[K_BATCH];
    SIM_REPLY_ENTRY *e = n <= K_BATCH ? stack_e : malloc(n * sizeof *e);
    int32_t *hrs = n <= K_BATCH ? stack_hr : malloc(n * sizeof *hrs);
    int rc = -1;
    if (!e || !hrs)
        goto out;
    size_t off = 0;
    const uint8_t *data;
    uint32_t size;
    for (uint32_t i = 0; i < n && sk_next_reply(f, &off, &data, &size); i++)
        e[i] = (SIM_REPLY_ENTRY){(const FP_REPLY_HEADER *)(const void *)data, size, 0};
    fp_hresult hr = fsim_client_reply(k->client, e, n);
    for (uint32_t i = 0; i < n; i++)
        hrs[i] = FP_SUCCEEDED(hr) ? e[i].hr : hr;
    rc = k_write_hdr(k, SK_REPLY_ACK, f->h.req, n, hr, hrs, n * sizeof *hrs);
out:
    if (e != stack_e)
        free(e);
    if (hrs != stack_hr)
        free(hrs);
    return rc;
}

static int on_send(kconn *k, const sk_frame *f)
{
    uint32_t in_size = (uint32_t)f->body_len;
    kjob *j = malloc(sizeof *j + in_size);
    if (!j)
        return k_write_hdr(k, SK_SEND_ACK, f->h.req, 0, FP_E_OUTOFMEMORY, NULL, 0);
    j->req = f->h.req;
    j->out_size = f->h.count;
    j->in_size = in_size;
    memcpy(j->in, f->body, in_size);
    if (submit_job(k, j) == 0)
        return 0;
    free(j); /* the queue is full: refused at once (what STATUS_INSUFFICIENT_RESOURCES maps to) */
    atomic_fetch_add(&k->srv->sends_dropped, 1);
    return k_write_hdr(k, SK_SEND_ACK, f->h.req, 0, FP_E_OUTOFMEMORY, NULL, 0);
}

static int dispatch(kconn *k, const sk_hdr *h)
{
    sk_frame f;
    if (sk_parse_frame(h, h->len, SK_FROM_USER, &f) != 0)
        return -1; /* garbage: disconnect */
    switch (f.h.type) {
    case SK_GET: return on_get(k, &f);
    case SK_REVOKE: return on_revoke(k, &f);
    case SK_REPLY: return on_reply(k, &f);
    case SK_SEND: return on_send(k, &f);
    default: return -1; /* a second HELLO */
    }
}

/* ---- one connection ---- */


static void pend_free(kpending *p)
{
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Takes k off its listener's list of handshakes. Returns 0 if the port was closed meanwhile. */
static int pend_leave(kconn *k)
{
    kpending *p = k->pend;
    if (!p)
        return 1;
    k->pend = NULL;
    pthread_mutex_lock(&p->mu);
    if (k->p_prev)
        k->p_prev->p_next = k->p_next;
    else
        p->head = k->p_next;
    if (k->p_next)
        k->p_next->p_prev = k->p_prev;
    p->n--;
    int open = !p->closed;
    int last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (last)
        pend_free(p);
    return open;
}

/* Reads HELLO, admits the connection (access rule, MaxConnections, ConnectNotify) and answers.
 * Returns the client, or NULL when refused (the answer, if any, has been sent). */
static fsim_client *handshake(kconn *k)
{
    struct ucred cr;
    socklen_t cl = sizeof cr;
    sk_hdr *h = NULL;
    int rc = -1;
    errno = 0;
    if (getsockopt(k->fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0) {
        if (sk_wait_fd(k->fd, POLLIN, fp_now_ns() + k->rd.rest_timeout_ms * FP_NS_PER_MS, NULL,
                       0))
            rc = sk_read_frame(&k->rd, &h);
    }
    if (rc < 0 && errno == ETIMEDOUT)
        atomic_fetch_add(&k->srv->peers_timed_out, 1);
    sk_frame f;
    if (!pend_leave(k) || rc != 1 || sk_parse_frame(h, h->len, SK_FROM_USER, &f) != 0 ||
        f.h.type != SK_HELLO)
        return NULL; /* not one of ours (or a liveness probe), or the port closed: hang up */
    fp_hresult hr = FP_S_OK;
    if (f.h.hr != SK_VERSION)
        hr = FP_E_INVALIDARG;
    if (hr == FP_S_OK && (f.hello.name_len != strlen(k->server->name) ||
                          memcmp(f.name, k->server->name, f.hello.name_len) != 0))
        hr = FP_E_FILE_NOT_FOUND; /* another port whose hashed file name collided */
    fsim_client *c = NULL;
    if (hr == FP_S_OK)
        hr = fsim_server_connect(k->server, f.hello.ctx_len ? f.ctx : NULL, f.hello.ctx_len,
                                 (uint32_t)cr.pid, (uint32_t)cr.uid, &fsim_sock_kernel_transport,
                                 k, &c);
    if (!c) { /* a refusal: 24 bytes into an empty socket buffer, no backlog needed */
        sk_hdr a = {sizeof a, SK_HELLO_ACK, 0, 0, hr, 0};
        struct iovec v = {&a, sizeof a};
        size_t done = 0;
        (void)sk_send_records(k->fd, &v, 1, sizeof a, k->rec_max, MSG_DONTWAIT, &done);
        return NULL;
    }
    k->client = c;
    (void)k_write_hdr(k, SK_HELLO_ACK, 0, 0, FP_S_OK, NULL, 0);
    pthread_mutex_lock(&k->out_mu);
    k->hello_sent = 1;
    if (k->shut_pending) /* the kernel closed it while ConnectNotify ran */
        out_dead_locked(k);
    pthread_mutex_unlock(&k->out_mu);
    return c;
}

static void *conn_main(void *p)
{
    kconn *k = p;
    pthread_mutex_lock(&k->start_mu);
    pthread_mutex_unlock(&k->start_mu);
    tl_conn = k;
    fsim_client *c = handshake(k);
    fsim_server_release(k->server);
    k->server = NULL;
    if (!c) {
        k_free(k);
        pthread_detach(pthread_self());
        return NULL;
    }
    sk_hdr *h;
    for (;;) {
        int r = sk_read_frame(&k->rd, &h);
        if (r < 0 && errno == ETIMEDOUT)
            atomic_fetch_add(&k->srv->peers_timed_out, 1);
        if (r != 1 || dispatch(k, h) != 0)
            break;
    }
    /* EOF (the user closed or died), an error, garbage, a peer too slow, or our own shutdown. The
     * user's close waits for our hang-up: give it after DisconnectNotify (unless someone else
     * closed first). */
    pthread_mutex_lock(&k->out_mu);
    k->defer_shut = 1;
    pthread_mutex_unlock(&k->out_mu);
    fsim_close_client(c);
    (void)shutdown(k->fd, SHUT_RDWR);

    pthread_mutex_lock(&k->out_mu);
    k->o_stop = 1;
    k->o_dead = 1;
    pthread_cond_signal(&k->out_cv);
    pthread_mutex_unlock(&k->out_mu);
    if (k->writer_started)
        pthread_join(k->writer, NULL);

    pthread_mutex_lock(&k->w_mu);
    k->w_stop = 1;
    pthread_cond_broadcast(&k->w_cv);
    uint32_t nw = k->nworkers;
    pthread_mutex_unlock(&k->w_mu);
    for (uint32_t i = 0; i < nw; i++)
        pthread_join(k->workers[i], NULL);

    fsim_client_release(c); /* may free k (k_release): nothing after this */
    return NULL;
}

static kconn *k_new(int fd, const klistener *l)
{
    kconn *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->fd = fd;
    k->rd.fd = fd;
    k->rd.rest_timeout_ms = l->frame_timeout_ms;
    k->max_answer_bytes = l->max_answer_bytes;
    k->rec_max = sk_tune_socket(fd);
    k->hinted = 1; /* a new user assumes something may be queued until told otherwise */
    fsim_server_retain(l->server);
    k->server = l->server;
    k->srv = l->server;
    pthread_mutex_init(&k->start_mu, NULL);
    pthread_mutex_init(&k->out_mu, NULL);
    pthread_cond_init(&k->out_cv, NULL);
    pthread_mutex_init(&k->w_mu, NULL);
    pthread_cond_init(&k->w_cv, NULL);
    return k;
}

/* Puts k on the listener's list of handshakes; 0 if SK_MAX_HANDSHAKES are there already. */
static int pend_join(kpending *p, kconn *k)
{
    pthread_mutex_lock(&p->mu);
    int ok = p->n < SK_MAX_HANDSHAKES;
    if (ok) {
        k->p_prev = NULL;
        k->p_next = p->head;
        if (p->head)
            p->head->p_prev = k;
        p->head = k;
        p->n++;
        p->refs++;
        k->pend = p;
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* ---- listening ---- */

static void *accept_main(void *p)
{
    klistener *l = p;
    for (;;) {
        struct pollfd pf[2] = {{l->fd, POLLIN, 0}, {l->wake, POLLIN, 0}};
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[1].revents)
            break;
        if (!pf[0].revents)
            continue;
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                struct pollfd w = {l->wake, POLLIN, 0}; /* back off instead of spinning */
                if (poll(&w, 1, 100) > 0)
                    break;
            }
            continue;
        }
        kconn *k = k_new(fd, l);
        if (!k) {
            close(fd);
            continue;
        }
        int r = -1;
        if (pend_join(l->pend, k)) {
            pthread_mutex_lock(&k->start_mu);
            r = sk_thread_create(&k->thread, conn_main, k);
            pthread_mutex_unlock(&k->start_mu);
            if (r != 0)
                (void)pend_leave(k);
        }
        if (r != 0) { /* too many handshakes already (or no thread to be had): closed unheard */
            atomic_fetch_add(&l->server->connections_refused, 1);
            fsim_server_release(k->server);
            k_free(k);
        }
    }
    return NULL;
}

static int lock_dir(const char *lockpath)
{
    int fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    int r;
    do
        r = flock(fd, LOCK_EX);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Is a server listening on this socket file? */
static int live(const struct sockaddr_un *a)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return 1;
    int r;
    do
        r = connect(fd, (const struct sockaddr *)a, sizeof *a);
    while (r < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    return r == 0 || (e != ECONNREFUSED && e != ENOENT);
}

/* A bound from the environment (see the top of the file), or its default when unset or outside
 * [lo, hi]. */
static size_t env_knob(const char *name, size_t lo, size_t hi, size_t dflt)
{
    const char *e = getenv(name);
    unsigned long long v = e && *e ? strtoull(e, NULL, 10) : 0;
    return v >= lo && v <= hi ? (size_t)v : dflt;
}

/* Hangs up on every connection still in its handshake (they see EOF at once: closing a port
 * returns at once whatever its peers do; live connections go on), then frees the listener. */
static void l_free(klistener *l)
{
    kpending *p = l->pend;
    pthread_mutex_lock(&p->mu);
    p->closed = 1;
    for (kconn *k = p->head; k; k = k->p_next)
        (void)shutdown(k->fd, SHUT_RDWR);
    int last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (last)
        pend_free(p);
    free(l);
}

static fp_ntstatus k_listen(fsim_server *s)
{
    char dir[sizeof(struct sockaddr_un)];
    fp_ntstatus st = sk_prepare_dir(dir, sizeof dir);
    if (!FP_NT_SUCCESS(st))
        return st;
    klistener *l = calloc(1, sizeof *l);
    kpending *pend = calloc(1, sizeof *pend);
    if (!l || !pend) {
        free(l);
        free(pend);
        return FP_STATUS_INSUFFICIENT_RESOURCES;
    }
    pthread_mutex_init(&pend->mu, NULL);
    pend->refs = 1;
    l->pend = pend;
    l->fd = l->wake = -1;
    l->server = s;
    l->frame_timeout_ms = (uint32_t)env_knob("FASTPORT_SOCK_FRAME_TIMEOUT_MS", 1, 3600000,
                                             SK_FRAME_TIMEOUT_MS);
    l->max_answer_bytes = env_knob("FASTPORT_SOCK_MAX_UNREAD_ANSWERS", 1, SIZE_MAX / 2,
                                   SK_MAX_UNREAD_ANSWERS);
    if (sk_port_path(dir, s->name, &l->addr) != 0) {
        l_free(l);
        return FP_STATUS_OBJECT_NAME_INVALID; /* the runtime directory's path is too long */
    }
    snprintf(l->lockpath, sizeof l->lockpath, "%s/.lock", dir);
    const char *path = l->addr.sun_path;
    /* Serialise check-and-replace with other processes creating ports in this directory. */
    int lk = lock_dir(l->lockpath);
    if (lk < 0) {
        l_free(l);
        return FP_STATUS_ACCESS_DENIED;
    }
    struct stat sb;
    st = FP_STATUS_SUCCESS;
    if (lstat(path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode) || live(&l->addr))
            st = FP_STATUS_OBJECT_NAME_COLLISION;
        else
            (void)unlink(path); /* stale: its server died without cleaning up */
    }
    if (FP_NT_SUCCESS(st)) {
        l->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (l->fd < 0)
            st = FP_STATUS_INSUFFICIENT_RESOURCES;
        else if (bind(l->fd, (struct sockaddr *)&l->addr, sizeof l->addr) != 0)
            st = errno == EADDRINUSE ? FP_STATUS_OBJECT_NAME_COLLISION
                 : errno == EACCES   ? FP_STATUS_ACCESS_DENIED
                                     : FP_STATUS_INSUFFICIENT_RESOURCES;
        else if (chmod(path, s->access == FSIM_ACCESS_EVERYONE ? 0666 : 0600) != 0 ||
                 lstat(path, &sb) != 0 || listen(l->fd, SOMAXCONN) != 0) {
            (void)unlink(path);
            st = FP_STATUS_INSUFFICIENT_RESOURCES;
        } else {
            l->dev = sb.st_dev;
            l->ino = sb.st_ino;
        }
    }
    close(lk);
    if (FP_NT_SUCCESS(st)) {
        l->wake = eventfd(0, EFD_CLOEXEC);
        if (l->wake < 0 || sk_thread_create(&l->thread, accept_main, l) != 0) {
            (void)unlink(path);
            st = FP_STATUS_INSUFFICIENT_RESOURCES;
        }
    }
    if (!FP_NT_SUCCESS(st)) {
        if (l->fd >= 0)
            close(l->fd);
        if (l->wake >= 0)
            close(l->wake);
        l_free(l);
        return st;
    }
    s->listener = l;
    return FP_STATUS_SUCCESS;
}

static void k_unlisten(fsim_server *s)
{
    klistener *l = s->listener;
    if (!l)
        return;
    s->listener = NULL;
    uint64_t one = 1;
    ssize_t w;
    do
        w = write(l->wake, &one, sizeof one);
    while (w < 0 && errno == EINTR);
    pthread_join(l->thread, NULL);
    /* Remove our socket file, not one that replaced it. */
    int lk = lock_dir(l->lockpath);
    struct stat sb;
    if (lstat(l->addr.sun_path, &sb) == 0 && sb.st_dev == l->dev && sb.st_ino == l->ino)
        (void)unlink(l->addr.sun_path);
    if (lk >= 0)
        close(lk);
    close(l->fd); /* connections waiting in the backlog are refused; live ones go on */
    close(l->wake);
    l_free(l);
}

static void k_forsake(fsim_server *s)
{
    klistener *l = s->listener;
    if (!l)
        return;
    s->listener = NULL;
    close(l->fd); /* this process's copies; the parent's accept thread goes on with its own */
    close(l->wake);
}

const fsim_kernel_transport fsim_sock_kernel_transport = {
    .listen = k_listen,
    .unlisten = k_unlisten,
    .forsake = k_forsake,
    .deliver = k_deliver,
    .disconnected = k_disconnected,
    .release = k_release,
    .queued = k_queued,
};
