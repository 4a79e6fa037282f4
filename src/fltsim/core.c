/* Kernel side of the emulated Filter Manager: server ports, client ports, FltSendMessage, and the
 * per-connection state that user-side calls (inproc directly, socket through sock_kernel.c)
 * operate on. */
#define _GNU_SOURCE /* sem_clockwait */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

static atomic_llong live_clients, live_servers;
int64_t fsim_debug_live_clients(void) { return atomic_load(&live_clients); }
int64_t fsim_debug_live_servers(void) { return atomic_load(&live_servers); }
#define DEBUG_COUNT(var, d) atomic_fetch_add(&(var), (d))

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static fsim_server *registry;
static atomic_uint_fast64_t next_client_id = 1;

/* ---- thread-local condition variables and semaphores ---- */

static __thread pthread_cond_t tl_cond;
static __thread int tl_cond_ready;

pthread_cond_t *fsim_thread_cond(void)
{
    if (!tl_cond_ready) {
        fsim_cond_init_mono(&tl_cond);
        tl_cond_ready = 1;
    }
    return &tl_cond;
}

static __thread sem_t tl_sem;
static __thread int tl_sem_ready;

sem_t *fsim_thread_sem(void)
{
    if (!tl_sem_ready) {
        sem_init(&tl_sem, 0, 0);
        tl_sem_ready = 1;
    }
    return &tl_sem;
}

/* sem_timedwait against an absolute CLOCK_MONOTONIC deadline. Not sem_clockwait under
 * ThreadSanitizer, which does not intercept it (gcc 12's): it would not see the sem_post that the
 * wait returned for, and report the data that post publishes as a race. */
static int sem_wait_mono(sem_t *s, uint64_t deadline_ns)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30)) && \
    !defined(__SANITIZE_THREAD__)
    struct timespec ts = fp_timespec_at(deadline_ns);
    return sem_clockwait(s, CLOCK_MONOTONIC, &ts);
#else
    /* no sem_clockwait: the same distance from now on CLOCK_REALTIME (a clock step moves it) */
    uint64_t now = fp_now_ns(), left = deadline_ns > now ? deadline_ns - now : 0;
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    rt = fp_timespec_at((uint64_t)rt.tv_sec * FP_NS_PER_S + (uint64_t)rt.tv_nsec + left);
    return sem_timedwait(s, &rt);
#endif
}

int fsim_sem_take(sem_t *s, uint64_t deadline_ns)
{
    for (;;) {
        int r = deadline_ns ? sem_wait_mono(s, deadline_ns) : sem_wait(s);
        if (r == 0)
            return 0;
        if (errno == ETIMEDOUT)
            return ETIMEDOUT;
        if (errno != EINTR)
            abort(); /* EINVAL: the semaphore or the deadline is corrupt */
    }
}

/* Senders to wake once the client lock is released: a woken thread then never blocks
 * straight away on the lock its waker still holds. */
#define WAKE_LIST_CAP 64u
typedef struct wake_list {
    uint32_t n;
    sem_t *sem[WAKE_LIST_CAP];
} wake_list;

static void wake_all(wake_list *wl)
{
    for (uint32_t i = 0; i < wl->n; i++)
        sem_post(wl->sem[i]);
    wl->n = 0;
}

/* Wakes the owner of s once the caller has unlocked (given a list with room), else now. */
static void wake_later(wake_list *wl, sem_t *s)
{
    if (wl && wl->n < WAKE_LIST_CAP)
        wl->sem[wl->n++] = s;
    else
        sem_post(s);
}

/* ---- completions ---- */

void fsim_done_add(fsim_done_list *l, fsim_io *io, fp_hresult hr, uint32_t bytes)
{
    io->_hr = hr;
    io->_bytes = bytes;
    io->_next = io->_prev = NULL;
    if (l->tail)
        l->tail->_next = io;
    else
        l->head = io;
    l->tail = io;
}

void fsim_done_run(fsim_done_list *l)
{
    fsim_io *io = l->head;
    l->head = l->tail = NULL;
    while (io) {
        fsim_io *next = io->_next; /* io belongs to its owner again once done() is called */
        io->done(io, io->_hr, io->_bytes);
        io = next;
    }
}

/* ---- status mapping ---- */

fp_hresult fsim_hresult_from_ntstatus(fp_ntstatus st)
{
    if (FP_NT_SUCCESS(st))
        return FP_S_OK;
    switch (st) {
    case FP_STATUS_ACCESS_DENIED: return FP_E_ACCESSDENIED;
    case FP_STATUS_INSUFFICIENT_RESOURCES: return FP_E_OUTOFMEMORY;
    case FP_STATUS_CONNECTION_COUNT_LIMIT: return FP_E_CONNECTION_COUNT_LIMIT;
    case FP_STATUS_PORT_DISCONNECTED: return FP_E_INVALID_HANDLE;
    case FP_STATUS_BUFFER_OVERFLOW: return FP_E_INSUFFICIENT_BUFFER;
    default: return FP_E_INVALIDARG; /* what a rejecting ConnectNotify usually surfaces as */
    }
}

int fsim_name_valid(const char *name)
{
    if (!name)
        return 0;
    size_t n = strnlen(name, FSIM_MAX_NAME + 1);
    if (n == 0 || n > FSIM_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return 0;
    return 1;
}

/* ---- servers ---- */

void fsim_server_retain(fsim_server *s) { atomic_fetch_add(&s->refs, 1); }

void fsim_server_release(fsim_server *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s);
    DEBUG_COUNT(live_servers, -1);
}

fsim_server *fsim_registry_find(const char *name)
{
    fsim_server *found = NULL;
    pthread_mutex_lock(&registry_lock);
    for (fsim_server *s = registry; s; s = s->reg_next)
        if (strcmp(s->name, name) == 0) {
            found = s;
            fsim_server_retain(s);
            break;
        }
    pthread_mutex_unlock(&registry_lock);
    return found;
}

fp_ntstatus fsim_create_port(const char *name, enum fsim_transport transport,
                             uint32_t max_connections, enum fsim_access access,
                             const fsim_callbacks *callbacks, fsim_server **out)
{
    fsim_error_detail_clear();
    if (!out)
        return FP_STATUS_INVALID_PARAMETER;
    *out = NULL;
    if (!fsim_name_valid(name))
        return FP_STATUS_OBJECT_NAME_INVALID;
    if (max_connections == 0 || (access != FSIM_ACCESS_OWNER && access != FSIM_ACCESS_EVERYONE) ||
        (transport != FSIM_INPROC && transport != FSIM_SOCKET))
        return FP_STATUS_INVALID_PARAMETER;
    fsim_server *s = calloc(1, sizeof *s);
    if (!s)
        return FP_STATUS_INSUFFICIENT_RESOURCES;
    atomic_init(&s->refs, 1);
    s->fork_gen = fsim_fork_generation();
    strcpy(s->name, name);
    s->transport = transport;
    s->max_connections = max_connections;
    s->access = access;
    s->owner_uid = (uint32_t)geteuid();
    s->kt = transport == FSIM_SOCKET ? &fsim_sock_kernel_transport : NULL;
    if (callbacks)
        s->cb = *callbacks;
    atomic_init(&s->next_message_id, 1);
    pthread_mutex_init(&s->lock, NULL);
    s->open = 1;
    DEBUG_COUNT(live_servers, 1);

    pthread_mutex_lock(&registry_lock);
    for (fsim_server *o = registry; o; o = o->reg_next)
        if (strcmp(o->name, name) == 0) {
            pthread_mutex_unlock(&registry_lock);
            fsim_server_release(s);
            return FP_STATUS_OBJECT_NAME_COLLISION;
        }
    s->reg_next = registry;
    registry = s;
    pthread_mutex_unlock(&registry_lock);

    if (s->kt) {
        fp_ntstatus st = s->kt->listen(s);
        if (!FP_NT_SUCCESS(st)) {
            fsim_close_server(s);
            return st;
        }
    }
    *out = s;
    return FP_STATUS_SUCCESS;
}

static void registry_remove(fsim_server *s)
{
    pthread_mutex_lock(&registry_lock);
    for (fsim_server **p = &registry; *p; p = &(*p)->reg_next)
        if (*p == s) {
            *p = s->reg_next;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
}

/* A port inherited through fork(): it is the parent's (its threads are not here, its locks may
 * be held by threads that are not here either). */
static int forked_server(const fsim_server *s) { return s->fork_gen != fsim_fork_generation(); }

void fsim_close_server(fsim_server *s)
{
    if (!s)
        return;
    if (forked_server(s)) {
        if (s->kt)
            s->kt->forsake(s);
        return;
    }
    pthread_mutex_lock(&s->lock);
    s->open = 0;
    pthread_mutex_unlock(&s->lock);
    registry_remove(s);
    if (s->kt)
        s->kt->unlisten(s);
    fsim_server_release(s);
}

void fsim_server_stats_get(fsim_server *s, fsim_server_stats *out)
{
    out->peers_timed_out = atomic_load(&s->peers_timed_out);
    out->connections_refused = atomic_load(&s->connections_refused);
    out->sends_dropped = atomic_load(&s->sends_dropped);
    out->slow_peers_dropped = atomic_load(&s->slow_peers_dropped);
}

size_t fsim_server_clients(fsim_server *s, fsim_client **out, size_t cap)
{
    size_t n = 0;
    pthread_mutex_lock(&s->lock);
    for (fsim_client *c = s->clients; c; c = c->srv_next) {
        if (n < cap) {
            fsim_client_retain(c);
            out[n] = c;
        }
        n++;
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

void fsim_disconnect_all(fsim_server *s)
{
    if (forked_server(s))
        return;
    for (;;) {
        fsim_client *c = NULL;
        pthread_mutex_lock(&s->lock);
        if (s->clients) {
            c = s->clients;
            fsim_client_retain(c);
        }
        pthread_mutex_unlock(&s->lock);
        if (!c)
            return;
        fsim_close_client(c);
        fsim_client_release(c);
    }
}

/* ---- clients ---- */

void fsim_client_retain(fsim_client *c) { atomic_fetch_add(&c->refs, 1); }

void fsim_client_release(fsim_client *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (c->kt && c->kt->release)
        c->kt->release(c->remote);
    pthread_mutex_destroy(&c->lock);
    fsim_server_release(c->server);
    free(c);
    DEBUG_COUNT(live_clients, -1);
}

void *fsim_client_cookie(const fsim_client *c) { return c->cookie; }
uint64_t fsim_client_id(const fsim_client *c) { return c->id; }
uint32_t fsim_client_peer_pid(const fsim_client *c) { return c->peer_pid; }
uint32_t fsim_client_peer_uid(const fsim_client *c) { return c->peer_uid; }

int fsim_client_connected(const fsim_client *c)
{
    fsim_client *m = (fsim_client *)c;
    pthread_mutex_lock(&m->lock);
    int r = m->connected;
    pthread_mutex_unlock(&m->lock);
    return r;
}

fp_hresult fsim_server_connect(fsim_server *s, const void *ctx, uint32_t ctx_size, uint32_t pid,
                               uint32_t uid, const fsim_kernel_transport *kt, void *remote,
                               fsim_client **out)
{
    *out = NULL;
    if (s->access == FSIM_ACCESS_OWNER && uid != 0 && uid != s->owner_uid)
        return FP_E_ACCESSDENIED;
    pthread_mutex_lock(&s->lock);
    if (!s->open) {
        pthread_mutex_unlock(&s->lock);
        return FP_E_FILE_NOT_FOUND;
    }
    if (s->nclients >= s->max_connections) {
        pthread_mutex_unlock(&s->lock);
        return FP_E_CONNECTION_COUNT_LIMIT;
    }
    s->nclients++; /* reserve the connection while ConnectNotify runs */
    pthread_mutex_unlock(&s->lock);

    fsim_client *c = calloc(1, sizeof *c);
    if (!c) {
        pthread_mutex_lock(&s->lock);
        s->nclients--;
        pthread_mutex_unlock(&s->lock);
        return FP_E_OUTOFMEMORY;
    }
    DEBUG_COUNT(live_clients, 1);
    atomic_init(&c->refs, 1);
    c->id = atomic_fetch_add(&next_client_id, 1);
    fsim_server_retain(s);
    c->server = s;
    c->peer_pid = pid;
    c->peer_uid = uid;
    pthread_mutex_init(&c->lock, NULL);
    c->kt = kt;
    c->remote = remote;

    fp_ntstatus st = FP_STATUS_SUCCESS;
    if (s->cb.connect_notify) {
        /* The kernel copies the context; a callee may keep nothing of ours. */
        void *copy = NULL;
        if (ctx_size) {
            copy = malloc(ctx_size);
            if (!copy)
                st = FP_STATUS_INSUFFICIENT_RESOURCES;
            else
                memcpy(copy, ctx, ctx_size);
        }
        if (FP_NT_SUCCESS(st))
            st = s->cb.connect_notify(s->cb.cookie, c, copy, ctx_size, &c->cookie);
        free(copy);
    }
    pthread_mutex_lock(&s->lock);
    if (FP_NT_SUCCESS(st) && s->open) {
        c->connected = 1;
        c->srv_next = s->clients;
        if (s->clients)
            s->clients->srv_prev = c;
        s->clients = c;
        fsim_client_retain(c); /* the server list's reference */
        pthread_mutex_unlock(&s->lock);
        *out = c;
        return FP_S_OK;
    }
    s->nclients--;
    int was_open = s->open;
    pthread_mutex_unlock(&s->lock);
    if (FP_NT_SUCCESS(st) && !was_open) {
        /* The port closed while ConnectNotify ran: the connection is refused, but it was accepted
         * by the callback, so the callback hears of its end. */
        if (s->cb.disconnect_notify)
            s->cb.disconnect_notify(s->cb.cookie, c);
        c->kt = NULL; /* the transport still owns `remote` */
        fsim_client_release(c);
        return FP_E_FILE_NOT_FOUND;
    }
    c->kt = NULL;
    fsim_client_release(c);
    return fsim_hresult_from_ntstatus(st);
}

/* ---- the message queue and the reply table (client lock held) ---- */

static void q_push(fsim_client *c, fsim_msg *m)
{
    m->next = NULL;
    m->prev = c->q_tail;
    if (c->q_tail)
        c->q_tail->next = m;
    else
        c->q_head = m;
    c->q_tail = m;
    m->state = FSIM_MSG_QUEUED;
}

static void q_unlink(fsim_client *c, fsim_msg *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        c->q_head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else
        c->q_tail = m->prev;
    m->next = m->prev = NULL;
}

static void rt_insert(fsim_client *c, fsim_msg *m)
{
    fsim_msg **b = &c->replies[m->id % FSIM_REPLY_BUCKETS];
    m->next = *b;
    *b = m;
    c->in_reply_table++;
}

static fsim_msg *rt_remove(fsim_client *c, uint64_t id)
{
    for (fsim_msg **p = &c->replies[id % FSIM_REPLY_BUCKETS]; *p; p = &(*p)->next)
        if ((*p)->id == id) {
            fsim_msg *m = *p;
            *p = m->next;
            m->next = NULL;
            c->in_reply_table--;
            return m;
        }
    return NULL;
}

/* The message is answered (client lock held). Its sender is woken now, or, given a wake list
 * with room, once the caller has unlocked; either way exactly once. */
static void async_finished(struct fsim_areq *a);

static void finish_later(fsim_msg *m, fp_ntstatus result, wake_list *wl)
{
    m->state = FSIM_MSG_DONE;
    m->result = result;
    if (m->async)
        async_finished(m->async);
    else
        wake_later(wl, m->sem);
}

static void finish(fsim_msg *m, fp_ntstatus result) { finish_later(m, result, NULL); }

/* The message has reached the user side: it now waits for a reply, or is done. */
static void mark_delivered(fsim_client *c, fsim_msg *m)
{
    if (m->wants_reply) {
        m->state = FSIM_MSG_DELIVERED;
        rt_insert(c, m);
    } else {
        finish(m, FP_STATUS_SUCCESS);
    }
}

uint32_t fsim_message_reply_length(const fsim_msg *m)
{
    return m->wants_reply ? m->reply_cap + (uint32_t)sizeof(FP_REPLY_HEADER) : 0;
}

fp_hresult fsim_copy_to(FP_MESSAGE_HEADER *buf, uint32_t size, uint32_t reply_length, uint64_t id,
                        const void *data, uint32_t length, uint32_t *bytes)
{
    FP_MESSAGE_HEADER h = {reply_length, 0, id};
    memcpy(buf, &h, sizeof h);
    uint32_t room = size - (uint32_t)sizeof h;
    uint32_t n = length < room ? length : room;
    if (n)
        memcpy((char *)buf + sizeof h, data, n);
    *bytes = (uint32_t)sizeof h + n;
    return n < length ? FP_E_INSUFFICIENT_BUFFER : FP_S_OK;
}

/* Completes io with message m (client lock held; io unlinked): done() runs after unlocking. */
static void complete_with(fsim_client *c, fsim_io *io, fsim_msg *m, fsim_done_list *dl)
{
    uint32_t bytes;
    fp_hresult hr = fsim_copy_to(io->buffer, io->size, fsim_message_reply_length(m), m->id,
                                 m->data, m->length, &bytes);
    mark_delivered(c, m);
    fsim_done_add(dl, io, hr, bytes);
}

static void io_unlink(fsim_client *c, fsim_io *io)
{
    if (io->_prev)
        io->_prev->_next = io->_next;
    else
        c->io_head = io->_next;
    if (io->_next)
        io->_next->_prev = io->_prev;
    else
        c->io_tail = io->_prev;
    io->_next = io->_prev = NULL;
    c->io_pending--;
}

static void io_append(fsim_client *c, fsim_io *io)
{
    io->_next = NULL;
    io->_prev = c->io_tail;
    if (c->io_tail)
        c->io_tail->_next = io;
    else
        c->io_head = io;
    c->io_tail = io;
    c->io_pending++;
}

/* Delivers a new message to a waiting get, the peer's credits, or the queue. Returns -1 if the
 * remote peer is gone (caller disconnects after unlocking). */
static int deliver_or_queue(fsim_client *c, fsim_msg *m, fsim_done_list *dl)
{
    fsim_io *io = c->io_head;
    if (io) {
        /* Oldest get first, as Windows completes pending gets (IRPs) in FIFO order. */
        io_unlink(c, io);
        complete_with(c, io, m, dl);
        return 0;
    }
    if (c->credits) {
        /* Marked only once written (the lock is held, so no reply can overtake it): a message
         * the peer never got is not reported as delivered. */
        c->credits--;
        if (c->kt->deliver(c->remote, &m, 1) != 0) {
            finish(m, FP_STATUS_PORT_DISCONNECTED);
            return -1;
        }
        mark_delivered(c, m);
        return 0;
    }
    q_push(c, m);
    if (c->q_head == m && c->kt && c->kt->queued)
        c->kt->queued(c->remote);
    return 0;
}

/* ---- FltSendMessage ---- */

fp_ntstatus fsim_send(fsim_client *c, const void *data, uint32_t length, void *reply,
                      uint32_t *reply_length, int64_t timeout_ns, int32_t *reply_status)
{
    if (!c || (!data && length) || length > FSIM_MAX_MESSAGE || (reply && !reply_length) ||
        (reply && *reply_length > FSIM_MAX_MESSAGE))
        return FP_STATUS_INVALID_PARAMETER;
    fsim_msg m;
    memset(&m, 0, sizeof m);
    m.data = data;
    m.length = length;
    m.wants_reply = reply != NULL;
    m.reply = reply;
    m.reply_cap = reply ? *reply_length : 0;
    m.sem = fsim_thread_sem();
    uint64_t deadline = timeout_ns >= 0 ? fp_now_ns() + (uint64_t)timeout_ns : 0; /* 0: none */
    fsim_done_list dl = {0};
    pthread_mutex_lock(&c->lock);
    if (!c->connected) {
        pthread_mutex_unlock(&c->lock);
        if (reply)
            *reply_length = 0; /* as for every other failure */
        return FP_STATUS_PORT_DISCONNECTED;
    }
    m.id = atomic_fetch_add(&c->server->next_message_id, 1);
    int gone = deliver_or_queue(c, &m, &dl) != 0;
    pthread_mutex_unlock(&c->lock);
    fsim_done_run(&dl);
    /* Whoever finishes m posts m.sem exactly once; a timeout withdraws m unless it was finished
     * first, in which case that post is taken too. */
    if (gone) {
        /* m was finished with STATUS_PORT_DISCONNECTED and posted: take the post before the
         * close runs DisconnectNotify on this thread (which may send, on this semaphore). */
        fsim_sem_take(m.sem, 0);
        fsim_close_client(c);
    } else if (fsim_sem_take(m.sem, deadline) == ETIMEDOUT) {
        pthread_mutex_lock(&c->lock);
        int finished = m.state == FSIM_MSG_DONE;
        if (!finished) {
            if (m.state == FSIM_MSG_QUEUED)
                q_unlink(c, &m); /* withdrawn: never delivered later */
            else
                rt_remove(c, m.id); /* a late reply finds no waiter */
            m.state = FSIM_MSG_DONE;
            m.result = FP_STATUS_TIMEOUT;
        }
        pthread_mutex_unlock(&c->lock);
        if (finished)
            fsim_sem_take(m.sem, 0);
    }
    if (m.result == FP_STATUS_SUCCESS && reply) {
        *reply_length = m.reply_len;
        if (reply_status)
            *reply_status = m.reply_status;
    } else if (reply && m.result != FP_STATUS_SUCCESS) {
        *reply_length = 0;
    }
    return m.result;
}

/* ---- user-side operations on a connection ---- */

fp_hresult fsim_client_get_async(fsim_client *c, fsim_io *ios, uint32_t n)
{
    fsim_done_list dl = {0};
    pthread_mutex_lock(&c->lock);
    if (!c->connected) {
        pthread_mutex_unlock(&c->lock);
        return FP_E_INVALID_HANDLE;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (c->q_head) {
            fsim_msg *m = c->q_head;
            q_unlink(c, m);
            complete_with(c, &ios[i], m, &dl);
        } else {
            io_append(c, &ios[i]);
        }
    }
    pthread_mutex_unlock(&c->lock);
    fsim_done_run(&dl);
    return FP_E_IO_PENDING;
}

uint32_t fsim_client_pending_gets(fsim_client *c)
{
    pthread_mutex_lock(&c->lock);
    uint32_t n = c->io_pending + c->credits;
    pthread_mutex_unlock(&c->lock);
    return n;
}

uint32_t fsim_client_queued(fsim_client *c)
{
    uint32_t n = 0;
    pthread_mutex_lock(&c->lock);
    for (const fsim_msg *m = c->q_head; m; m = m->next)
        n++;
    pthread_mutex_unlock(&c->lock);
    return n;
}

uint32_t fsim_client_awaiting_reply(fsim_client *c)
{
    pthread_mutex_lock(&c->lock);
    uint32_t n = c->in_reply_table;
    pthread_mutex_unlock(&c->lock);
    return n;
}

fp_hresult fsim_client_reply(fsim_client *c, SIM_REPLY_ENTRY *e, uint32_t n)
{
    wake_list wl = {0};
    pthread_mutex_lock(&c->lock);
    if (!c->connected) {
        pthread_mutex_unlock(&c->lock);
        return FP_E_INVALID_HANDLE;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (wl.n == WAKE_LIST_CAP) {
            /* wake a full list's senders without the lock, then go on */
            pthread_mutex_unlock(&c->lock);
            wake_all(&wl);
            pthread_mutex_lock(&c->lock);
            if (!c->connected) { /* the rest were answered by the disconnect */
                for (; i < n; i++)
                    e[i].hr = FP_E_INVALID_HANDLE;
                break;
            }
        }
        if (!e[i].buffer || e[i].size < sizeof(FP_REPLY_HEADER) ||
            e[i].size - sizeof(FP_REPLY_HEADER) > FSIM_MAX_MESSAGE) {
            e[i].hr = FP_E_INVALIDARG;
            continue;
        }
        FP_REPLY_HEADER h;
        memcpy(&h, e[i].buffer, sizeof h);
        fsim_msg *m = rt_remove(c, h.MessageId);
        if (!m) {
            e[i].hr = FP_E_FLT_NO_WAITER_FOR_REPLY;
            continue;
        }
        uint32_t len = e[i].size - (uint32_t)sizeof h;
        if (len > m->reply_cap) {
            e[i].hr = FP_E_INSUFFICIENT_BUFFER;
            finish_later(m, FP_STATUS_BUFFER_OVERFLOW, &wl);
            continue;
        }
        if (len)
            memcpy(m->reply, (const char *)e[i].buffer + sizeof h, len);
        m->reply_len = len;
        m->reply_status = h.Status;
        e[i].hr = FP_S_OK;
        finish_later(m, FP_STATUS_SUCCESS, &wl);
    }
    pthread_mutex_unlock(&c->lock);
    wake_all(&wl);
    return FP_S_OK;
}

fp_hresult fsim_client_user_send(fsim_client *c, const void *in, uint32_t in_size, void *out,
                                 uint32_t out_size, uint32_t *returned)
{
    fsim_server *s = c->server;
    *returned = 0;
    if (!fsim_client_connected(c))
        return FP_E_INVALID_HANDLE;
    if (!s->cb.message_notify)
        return FP_E_INVALIDARG;
    uint32_t r = 0;
    fp_ntstatus st = s->cb.message_notify(s->cb.cookie, c, in, in_size, out, out_size, &r);
    if (!FP_NT_SUCCESS(st))
        return fsim_hresult_from_ntstatus(st);
    *returned = r > out_size ? out_size : r;
    return FP_S_OK;
}

fp_hresult fsim_client_cancel(fsim_client *c, const void *key)
{
    fsim_done_list dl = {0};
    pthread_mutex_lock(&c->lock);
    for (fsim_io *io = c->io_head; io;) {
        fsim_io *next = io->_next;
        if (!key || io->key == key) {
            io_unlink(c, io);
            fsim_done_add(&dl, io, FP_E_OPERATION_ABORTED, 0);
        }
        io = next;
    }
    pthread_mutex_unlock(&c->lock);
    int any = dl.head != NULL;
    fsim_done_run(&dl);
    return any ? FP_S_OK : FP_E_NOT_FOUND;
}

void fsim_client_grant(fsim_client *c, uint32_t n)
{
    fsim_msg *batch[64];
    int gone = 0;
    pthread_mutex_lock(&c->lock);
    if (!c->connected) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    c->credits += n;
    while (c->credits && c->q_head && !gone) {
        uint32_t k = 0;
        while (k < 64 && c->credits && c->q_head) {
            fsim_msg *m = c->q_head;
            q_unlink(c, m);
            c->credits--;
            batch[k++] = m;
        }
        /* Marked only once written (the lock is held, so no reply can overtake them). */
        if (c->kt->deliver(c->remote, batch, k) != 0) {
            gone = 1;
            for (uint32_t i = 0; i < k; i++)
                finish(batch[i], FP_STATUS_PORT_DISCONNECTED);
        } else {
            for (uint32_t i = 0; i < k; i++)
                mark_delivered(c, batch[i]);
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (gone)
        fsim_close_client(c);
}

/* ---- disconnect (either side) ---- */

void fsim_close_client(fsim_client *c)
{
    if (!c || forked_server(c->server)) /* the parent's connection: left alone */
        return;
    pthread_mutex_lock(&c->lock);
    if (!c->connected) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    c->connected = 0;
    c->credits = 0;
    while (c->q_head) {
        fsim_msg *m = c->q_head;
        q_unlink(c, m);
        finish(m, FP_STATUS_PORT_DISCONNECTED);
    }
    for (uint32_t b = 0; b < FSIM_REPLY_BUCKETS; b++)
        while (c->replies[b]) {
            fsim_msg *m = c->replies[b];
            c->replies[b] = m->next;
            m->next = NULL;
            finish(m, FP_STATUS_PORT_DISCONNECTED);
        }
    c->in_reply_table = 0;
    fsim_done_list dl = {0};
    while (c->io_head) {
        fsim_io *io = c->io_head;
        io_unlink(c, io);
        fsim_done_add(&dl, io, FP_E_INVALID_HANDLE, 0);
    }
    pthread_mutex_unlock(&c->lock);
    fsim_done_run(&dl);

    fsim_server *s = c->server;
    pthread_mutex_lock(&s->lock);
    if (c->srv_prev)
        c->srv_prev->srv_next = c->srv_next;
    else
        s->clients = c->srv_next;
    if (c->srv_next)
        c->srv_next->srv_prev = c->srv_prev;
    c->srv_next = c->srv_prev = NULL;
    s->nclients--;
    pthread_mutex_unlock(&s->lock);

    if (c->kt && c->kt->disconnected)
        c->kt->disconnected(c->remote);
    if (s->cb.disconnect_notify)
        s->cb.disconnect_notify(s->cb.cookie, c);
    fsim_client_release(c); /* the server list's reference */
}

/* ---- asynchronous sends (fsim_send_async) ----
 * An fsim_areq lives in its fsim_send_req's private area. Its message takes fsim_send's path
 * (deliver_or_queue, the reply table, finish_later); only the wake-up differs: finish_later puts
 * it on its queue's completed list. Lock order: client lock, then queue lock. */

typedef struct fsim_areq {
    fsim_msg m;
    fsim_send_req *req;
    fsim_client *c;       /* retained until handed back */
    fsim_sendq *q;
    uint64_t deadline;    /* CLOCK_MONOTONIC ns; 0: none */
    struct fsim_areq *tnext, *tprev; /* the queue's deadline list (queue lock) */
    struct fsim_areq *cnext;         /* the queue's completed list (queue lock) */
    int in_tlist;         /* queue lock */
    int claimed;          /* queue lock: a waiter is timing it out (it pushes it, not finish) */
} fsim_areq;

_Static_assert(sizeof(fsim_areq) <= sizeof(((fsim_send_req *)0)->_private),
               "fsim_send_req._private is too small");

struct fsim_sendq {
    pthread_mutex_t lock;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    fsim_areq *t_head, *t_tail; /* in flight with a deadline, earliest first */
    fsim_areq *c_head, *c_tail; /* finished, not handed back, oldest first */
    uint32_t inflight;
    uint32_t waiters;
};

fp_ntstatus fsim_sendq_create(fsim_sendq **out)
{
    if (!out)
        return FP_STATUS_INVALID_PARAMETER;
    fsim_sendq *q = calloc(1, sizeof *q);
    *out = q;
    if (!q)
        return FP_STATUS_INSUFFICIENT_RESOURCES;
    pthread_mutex_init(&q->lock, NULL);
    fsim_cond_init_mono(&q->cv);
    return FP_STATUS_SUCCESS;
}

void fsim_sendq_destroy(fsim_sendq *q)
{
    if (!q)
        return;
    if (q->inflight)
        abort(); /* sends in flight would complete into freed memory */
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cv);
    free(q);
}

static void t_unlink(fsim_sendq *q, fsim_areq *a)
{
    if (a->tprev)
        a->tprev->tnext = a->tnext;
    else
        q->t_head = a->tnext;
    if (a->tnext)
        a->tnext->tprev = a->tprev;
    else
        q->t_tail = a->tprev;
    a->tnext = a->tprev = NULL;
    a->in_tlist = 0;
}

/* Sorted insert from the tail: with one timeout for every send, deadlines arrive in order. */
static void t_insert(fsim_sendq *q, fsim_areq *a)
{
    fsim_areq *p = q->t_tail;
    while (p && p->deadline > a->deadline)
        p = p->tprev;
    a->tprev = p;
    a->tnext = p ? p->tnext : q->t_head;
    if (a->tnext)
        a->tnext->tprev = a;
    else
        q->t_tail = a;
    if (p)
        p->tnext = a;
    else
        q->t_head = a;
    a->in_tlist = 1;
    if (!p && q->waiters)
        pthread_cond_broadcast(&q->cv); /* an earlier deadline than any waiter sleeps towards */
}

static void c_push(fsim_sendq *q, fsim_areq *a)
{
    a->cnext = NULL;
    if (q->c_tail)
        q->c_tail->cnext = a;
    else
        q->c_head = a;
    q->c_tail = a;
    if (q->waiters)
        pthread_cond_signal(&q->cv);
}

/* finish_later of an async message (client lock held). */
static void async_finished(fsim_areq *a)
{
    fsim_sendq *q = a->q;
    pthread_mutex_lock(&q->lock);
    if (!a->claimed) {
        if (a->in_tlist)
            t_unlink(q, a);
        c_push(q, a);
    }
    pthread_mutex_unlock(&q->lock);
}

fp_ntstatus fsim_send_async(fsim_client *c, fsim_send_req *req, fsim_sendq *q)
{
    if (!c || !req || !q || (!req->data && req->length) || req->length > FSIM_MAX_MESSAGE ||
        (req->reply && req->reply_cap > FSIM_MAX_MESSAGE))
        return FP_STATUS_INVALID_PARAMETER;
    fsim_areq *a = (fsim_areq *)(void *)req->_private;
    memset(a, 0, sizeof *a);
    a->req = req;
    a->c = c;
    a->q = q;
    a->m.data = req->data;
    a->m.length = req->length;
    a->m.wants_reply = req->reply != NULL;
    a->m.reply = req->reply;
    a->m.reply_cap = req->reply ? req->reply_cap : 0;
    a->m.async = a;
    a->deadline = req->timeout_ns >= 0 ? fp_now_ns() + (uint64_t)req->timeout_ns : 0;
    if (a->deadline == 0 && req->timeout_ns >= 0)
        a->deadline = 1;
    req->status = FP_STATUS_SUCCESS;
    req->reply_length = 0;
    req->reply_status = 0;
    req->message_id = 0;
    fsim_client_retain(c);
    pthread_mutex_lock(&q->lock);
    q->inflight++;
    pthread_mutex_unlock(&q->lock);

    fsim_done_list dl = {0};
    int gone = 0;
    pthread_mutex_lock(&c->lock);
    if (!c->connected) {
        finish(&a->m, FP_STATUS_PORT_DISCONNECTED);
    } else {
        a->m.id = atomic_fetch_add(&c->server->next_message_id, 1);
        gone = deliver_or_queue(c, &a->m, &dl) != 0;
        if (a->deadline && a->m.state != FSIM_MSG_DONE) {
            /* under the client lock: no finish can run before it is on the list */
            pthread_mutex_lock(&q->lock);
            t_insert(q, a);
            pthread_mutex_unlock(&q->lock);
        }
    }
    pthread_mutex_unlock(&c->lock);
    /* From here on req may be handed back (and reused) by another thread: only locals. The
     * caller's reference keeps c alive through the close. */
    fsim_done_run(&dl);
    if (gone)
        fsim_close_client(c);
    return FP_STATUS_SUCCESS;
}

/* A claimed send whose deadline passed (no lock held): withdrawn as fsim_send's timeout
 * withdraws, unless it was finished first; then handed to the completed list. */
static void async_expire(fsim_areq *a)
{
    fsim_client *c = a->c;
    pthread_mutex_lock(&c->lock);
    if (a->m.state != FSIM_MSG_DONE) {
        if (a->m.state == FSIM_MSG_QUEUED)
            q_unlink(c, &a->m); /* withdrawn: never delivered later */
        else
            rt_remove(c, a->m.id); /* a late reply finds no waiter */
        a->m.state = FSIM_MSG_DONE;
        a->m.result = FP_STATUS_TIMEOUT;
    }
    /* unlocked first: once pushed, a waiter may hand a back and drop the last reference on c.
     * DONE and off every list of c, nothing else finishes it meanwhile. */
    pthread_mutex_unlock(&c->lock);
    fsim_sendq *q = a->q;
    pthread_mutex_lock(&q->lock);
    a->claimed = 0;
    c_push(q, a);
    pthread_mutex_unlock(&q->lock);
}

uint32_t fsim_sendq_wait(fsim_sendq *q, fsim_send_req **out, uint32_t cap, int64_t timeout_ns)
{
    uint64_t end = timeout_ns >= 0 ? fp_now_ns() + (uint64_t)timeout_ns : UINT64_MAX;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        if (q->c_head || !cap)
            break;
        uint64_t now = fp_now_ns();
        if (q->t_head && q->t_head->deadline <= now) {
            fsim_areq *a = q->t_head;
            t_unlink(q, a);
            a->claimed = 1;
            pthread_mutex_unlock(&q->lock);
            async_expire(a);
            pthread_mutex_lock(&q->lock);
            continue;
        }
        if (now >= end)
            break;
        uint64_t until = end;
        if (q->t_head && q->t_head->deadline < until)
            until = q->t_head->deadline;
        q->waiters++;
        if (until == UINT64_MAX) {
            pthread_cond_wait(&q->cv, &q->lock);
        } else {
            struct timespec ts = fp_timespec_at(until);
            pthread_cond_timedwait(&q->cv, &q->lock, &ts);
        }
        q->waiters--;
    }
    /* the clients' references are dropped once unlocked (a last release frees transport state,
     * which must not wait under the queue lock): so many per call */
    fsim_client *drop[64];
    if (cap > 64)
        cap = 64;
    uint32_t n = 0;
    while (q->c_head && n < cap) {
        fsim_areq *a = q->c_head;
        q->c_head = a->cnext;
        if (!q->c_head)
            q->c_tail = NULL;
        fsim_send_req *r = a->req;
        r->status = a->m.result;
        r->message_id = a->m.id;
        if (a->m.result == FP_STATUS_SUCCESS && a->m.wants_reply) {
            r->reply_length = a->m.reply_len;
            r->reply_status = a->m.reply_status;
        }
        drop[n] = a->c;
        out[n++] = r;
    }
    q->inflight -= n;
    if (q->c_head && q->waiters)
        pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->lock);
    for (uint32_t i = 0; i < n; i++)
        fsim_client_release(drop[i]);
    return n;
}

void fsim_send_abandon(fsim_send_req *req)
{
    fsim_areq *a = (fsim_areq *)(void *)req->_private;
    fsim_client *c = a->c;
    fsim_sendq *q = a->q;
    pthread_mutex_lock(&c->lock);
    if (a->m.state != FSIM_MSG_DONE) { /* as async_expire; finished sends are on their way */
        if (a->m.state == FSIM_MSG_QUEUED)
            q_unlink(c, &a->m);
        else
            rt_remove(c, a->m.id);
        a->m.state = FSIM_MSG_DONE;
        a->m.result = FP_STATUS_TIMEOUT;
        pthread_mutex_lock(&q->lock);
        if (!a->claimed) { /* else the waiter timing it out pushes it */
            if (a->in_tlist)
                t_unlink(q, a);
            c_push(q, a);
        }
        pthread_mutex_unlock(&q->lock);
    }
    pthread_mutex_unlock(&c->lock);
}

uint32_t fsim_sendq_inflight(fsim_sendq *q)
{
    pthread_mutex_lock(&q->lock);
    uint32_t n = q->inflight;
    pthread_mutex_unlock(&q->lock);
    return n;
}
