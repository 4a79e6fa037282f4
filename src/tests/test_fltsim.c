/* C test program of the emulated Filter Manager (inproc transport), no Python. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fltsim/fltsim.h"
#include "fltsim/internal.h" /* a remote transport whose peer is gone, for the nested-send test */

#include "check.h"

#define MS 1000000LL

/* ---- a kernel side with callbacks that record what they saw ---- */
typedef struct kstate {
    pthread_mutex_t lock;
    fsim_client *last;
    int connects, disconnects;
    char ctx[16];
    uint32_t ctx_size;
    int reject;
} kstate;

static fp_ntstatus on_connect(void *cookie, fsim_client *c, const void *ctx, uint32_t n, void **cc)
{
    kstate *k = cookie;
    pthread_mutex_lock(&k->lock);
    if (k->reject) {
        pthread_mutex_unlock(&k->lock);
        return FP_STATUS_ACCESS_DENIED;
    }
    k->connects++;
    k->last = c;
    k->ctx_size = n;
    if (n)
        memcpy(k->ctx, ctx, n < sizeof k->ctx ? n : sizeof k->ctx);
    *cc = k;
    pthread_mutex_unlock(&k->lock);
    return FP_STATUS_SUCCESS;
}

static void on_disconnect(void *cookie, fsim_client *c)
{
    kstate *k = cookie;
    pthread_mutex_lock(&k->lock);
    k->disconnects++;
    if (k->last == c)
        k->last = NULL;
    pthread_mutex_unlock(&k->lock);
}

static fp_ntstatus on_message(void *cookie, fsim_client *c, const void *in, uint32_t in_size,
                              void *out, uint32_t out_size, uint32_t *returned)
{
    (void)cookie;
    (void)c;
    /* echo reversed */
    uint32_t n = in_size < out_size ? in_size : out_size;
    for (uint32_t i = 0; i < n; i++)
        ((char *)out)[i] = ((const char *)in)[in_size - 1 - i];
    *returned = n;
    return FP_STATUS_SUCCESS;
}

static fsim_server *make_port(const char *name, uint32_t maxc, kstate *k)
{
    memset(k, 0, sizeof *k);
    pthread_mutex_init(&k->lock, NULL);
    fsim_callbacks cb = {on_connect, on_disconnect, on_message, k};
    fsim_server *s = NULL;
    fp_ntstatus st = fsim_create_port(name, FSIM_INPROC, maxc, FSIM_ACCESS_OWNER, &cb, &s);
    CHECK_EQ(st, FP_STATUS_SUCCESS);
    return s;
}

/* a sender on its own thread */
typedef struct sender {
    pthread_t t;
    fsim_client *c;
    char data[64];
    uint32_t len;
    char reply[64];
    uint32_t reply_len;
    int want_reply;
    int64_t timeout_ns;
    int32_t reply_status;
    fp_ntstatus st;
} sender;

static void *sender_main(void *p)
{
    sender *s = p;
    s->st = fsim_send(s->c, s->data, s->len, s->want_reply ? s->reply : NULL, &s->reply_len,
                      s->timeout_ns, &s->reply_status);
    return NULL;
}

static void start_sender(sender *s, fsim_client *c, const char *text, int want_reply,
                         uint32_t reply_cap, int64_t timeout_ns)
{
    memset(s, 0, sizeof *s);
    s->c = c;
    s->len = (uint32_t)strlen(text);
    memcpy(s->data, text, s->len);
    s->want_reply = want_reply;
    s->reply_len = reply_cap;
    s->timeout_ns = timeout_ns;
    pthread_create(&s->t, NULL, sender_main, s);
}

typedef struct {
    FP_MESSAGE_HEADER h;
    char body[256];
} msgbuf;
typedef struct {
    FP_REPLY_HEADER h;
    char body[256];
} replybuf;

static void test_connect_rules(void)
{
    kstate k;
    fsim_server *s = make_port("\\ConnectRules", 2, &k);
    SIM_HANDLE a = 0, b = 0, c = 0;
    CHECK_EQ(SimFilterConnectCommunicationPort("\\NoSuchPort", 0, NULL, 0, NULL, &a),
             FP_E_FILE_NOT_FOUND);
    CHECK_EQ(SimFilterConnectCommunicationPort(NULL, 0, NULL, 0, NULL, &a), FP_E_INVALIDARG);
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, NULL, 0, NULL, NULL),
             FP_E_INVALIDARG);
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, "x", 0, NULL, &a),
             FP_E_INVALIDARG); /* pointer without size */
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, NULL, 4, NULL, &a),
             FP_E_INVALIDARG); /* size without pointer */
    static char big[70000];
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, big, 65536, NULL, &a),
             FP_E_INVALIDARG);
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0x2, NULL, 0, NULL, &a),
             FP_E_INVALIDARG);
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK_EQ(SimFilterConnectCommunicationPort(longname, 0, NULL, 0, NULL, &a),
             FP_E_FILENAME_EXCED_RANGE);

    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, big, 65535, NULL, &a), FP_S_OK);
    CHECK_EQ(k.ctx_size, 65535);
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, "hello", 5, NULL, &b), FP_S_OK);
    CHECK(memcmp(k.ctx, "hello", 5) == 0);
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, NULL, 0, NULL, &c),
             FP_E_CONNECTION_COUNT_LIMIT);
    fsim_client *list[4];
    size_t n = fsim_server_clients(s, list, 4);
    CHECK_EQ(n, 2);
    for (size_t i = 0; i < n && i < 4; i++)
        fsim_client_release(list[i]);
    CHECK_EQ(SimFilterClose(a), FP_S_OK);
    CHECK_EQ(SimFilterClose(a), FP_E_INVALID_HANDLE); /* closed handle */
    CHECK_EQ(k.disconnects, 1);
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, NULL, 0, NULL, &c), FP_S_OK);
    k.reject = 1;
    SIM_HANDLE d = 0;
    CHECK_EQ(SimFilterClose(c), FP_S_OK);
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, NULL, 0, NULL, &d),
             FP_E_ACCESSDENIED);
    CHECK_EQ(d, 0);

    /* a second port of the same name collides; closing the server stops new connections only */
    fsim_server *dup = NULL;
    fsim_callbacks none = {0};
    CHECK_EQ(fsim_create_port("\\ConnectRules", FSIM_INPROC, 1, FSIM_ACCESS_OWNER, &none, &dup),
             FP_STATUS_OBJECT_NAME_COLLISION);
    CHECK_EQ(fsim_create_port("", FSIM_INPROC, 1, FSIM_ACCESS_OWNER, &none, &dup),
             FP_STATUS_OBJECT_NAME_INVALID);
    CHECK_EQ(fsim_create_port("\\Zero", FSIM_INPROC, 0, FSIM_ACCESS_OWNER, &none, &dup),
             FP_STATUS_INVALID_PARAMETER);
    fsim_close_server(s);
    k.reject = 0;
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, NULL, 0, NULL, &d),
             FP_E_FILE_NOT_FOUND);
    /* b is still connected and works */
    uint32_t ret = 0;
    char out[8];
    CHECK_EQ(SimFilterSendMessage(b, "abc", 3, out, sizeof out, &ret), FP_S_OK);
    CHECK_EQ(ret, 3);
    CHECK(memcmp(out, "cba", 3) == 0);
    CHECK_EQ(SimFilterSendMessage(b, "abc", 3, out, sizeof out, NULL), FP_E_INVALIDARG);
    CHECK_EQ(SimFilterClose(b), FP_S_OK);
    CHECK_EQ(SimFilterSendMessage(b, "abc", 3, out, sizeof out, &ret), FP_E_INVALID_HANDLE);
    CHECK_EQ(SimFilterSendMessage(0, "abc", 3, out, sizeof out, &ret), FP_E_INVALID_HANDLE);
    CHECK_EQ(SimFilterSendMessage(12345678901ull, "abc", 3, out, sizeof out, &ret),
             FP_E_INVALID_HANDLE);
}

static void test_round_trip(void)
{
    kstate k;
    fsim_server *s = make_port("\\RoundTrip", 1, &k);
    SIM_HANDLE h;
    CHECK_EQ(SimFilterConnectCommunicationPort("\\RoundTrip", 0, NULL, 0, NULL, &h), FP_S_OK);
    fsim_client *c = k.last;

    /* send first (message queues), then get */
    sender sd;
    start_sender(&sd, c, "ping", 1, 8, -1);
    msgbuf m;
    uint32_t got = 0;
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_S_OK);
    CHECK_EQ(got, 16 + 4);
    CHECK_EQ(m.h.ReplyLength, 16 + 8);
    CHECK(memcmp(m.body, "ping", 4) == 0);
    replybuf r;
    memset(&r, 0, sizeof r);
    r.h.MessageId = m.h.MessageId;
    r.h.Status = 0x1234;
    memcpy(r.body, "pong", 4);
    CHECK_EQ(SimFilterReplyMessage(h, &r.h, 16 + 4), FP_S_OK);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_SUCCESS);
    CHECK_EQ(sd.reply_len, 4);
    CHECK_EQ(sd.reply_status, 0x1234);
    CHECK(memcmp(sd.reply, "pong", 4) == 0);
    /* answered once: a second reply finds no waiter */
    CHECK_EQ(SimFilterReplyMessage(h, &r.h, 16 + 4), FP_E_FLT_NO_WAITER_FOR_REPLY);

    /* no reply expected: ReplyLength 0; send returns once delivered; a reply gets no waiter */
    start_sender(&sd, c, "note", 0, 0, -1);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_S_OK);
    CHECK_EQ(m.h.ReplyLength, 0);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_SUCCESS);
    r.h.MessageId = m.h.MessageId;
    CHECK_EQ(SimFilterReplyMessage(h, &r.h, 16), FP_E_FLT_NO_WAITER_FOR_REPLY);

    /* reply longer than the kernel's buffer */
    start_sender(&sd, c, "big", 1, 2, -1);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_S_OK);
    CHECK_EQ(m.h.ReplyLength, 18);
    r.h.MessageId = m.h.MessageId;
    CHECK_EQ(SimFilterReplyMessage(h, &r.h, 16 + 3), FP_E_INSUFFICIENT_BUFFER);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_BUFFER_OVERFLOW);

    /* undersized get buffer: header + what fits, still delivered, sender waits for reply */
    start_sender(&sd, c, "0123456789", 1, 4, -1);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, 16 + 4, FSIM_INFINITE, &got), FP_E_INSUFFICIENT_BUFFER);
    CHECK_EQ(got, 20);
    CHECK(memcmp(m.body, "0123", 4) == 0);
    r.h.MessageId = m.h.MessageId;
    CHECK_EQ(SimFilterReplyMessage(h, &r.h, 16 + 4), FP_S_OK);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_SUCCESS);

    /* argument checks */
    CHECK_EQ(SimFilterGetMessage(h, NULL, 100, 0, &got), FP_E_INVALIDARG);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, 15, 0, &got), FP_E_INVALIDARG);
    CHECK_EQ(SimFilterReplyMessage(h, NULL, 16), FP_E_INVALIDARG);
    CHECK_EQ(SimFilterReplyMessage(h, &r.h, 15), FP_E_INVALIDARG);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got), FP_E_TIMEOUT);
    CHECK_EQ(fsim_send(NULL, "x", 1, NULL, NULL, 0, NULL), FP_STATUS_INVALID_PARAMETER);
    uint32_t cap = 4;
    CHECK_EQ(fsim_send(c, NULL, 5, sd.reply, &cap, 0, NULL), FP_STATUS_INVALID_PARAMETER);

    SimFilterClose(h);
    fsim_close_server(s);
}

static void test_timeouts(void)
{
    kstate k;
    fsim_server *s = make_port("\\Timeouts", 1, &k);
    SIM_HANDLE h;
    CHECK_EQ(SimFilterConnectCommunicationPort("\\Timeouts", 0, NULL, 0, NULL, &h), FP_S_OK);
    fsim_client *c = k.last;
    char rep[8];
    uint32_t cap = sizeof rep;

    /* nobody gets: withdrawn, STATUS_TIMEOUT, never delivered later */
    CHECK_EQ(fsim_send(c, "lost", 4, rep, &cap, 20 * MS, NULL), FP_STATUS_TIMEOUT);
    cap = 0;
    CHECK_EQ(fsim_send(c, "lost2", 5, NULL, &cap, 20 * MS, NULL), FP_STATUS_TIMEOUT);
    msgbuf m;
    uint32_t got;
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 30, &got), FP_E_TIMEOUT);

    /* delivered but not answered in time: STATUS_TIMEOUT, late reply gets NO_WAITER */
    sender sd;
    start_sender(&sd, c, "slow", 1, 8, 30 * MS);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_S_OK);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_TIMEOUT);
    replybuf r;
    memset(&r, 0, sizeof r);
    r.h.MessageId = m.h.MessageId;
    CHECK_EQ(SimFilterReplyMessage(h, &r.h, 16 + 1), FP_E_FLT_NO_WAITER_FOR_REPLY);

    /* a get waiting first: delivery is immediate */
    start_sender(&sd, c, "fast", 0, 0, 1000 * MS);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_S_OK);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_SUCCESS);
    SimFilterClose(h);
    fsim_close_server(s);
}

typedef struct getter {
    pthread_t t;
    SIM_HANDLE h;
    fp_hresult hr;
    uint32_t filled;
    msgbuf m[4];
} getter;

static void *getter_main(void *p)
{
    getter *g = p;
    uint32_t got = 0;
    g->hr = SimFilterGetMessage(g->h, &g->m[0].h, sizeof g->m[0], FSIM_INFINITE, &got);
    g->filled = g->hr == FP_S_OK;
    return NULL;
}

static void test_cancel_and_disconnect(void)
{
    kstate k;
    fsim_server *s = make_port("\\Cancel", 1, &k);
    SIM_HANDLE h;
    CHECK_EQ(SimFilterConnectCommunicationPort("\\Cancel", 0, NULL, 0, NULL, &h), FP_S_OK);
    fsim_client *c = k.last;
    fsim_client_retain(c);
    enum fsim_transport t = FSIM_SOCKET;
    CHECK_EQ(SimFilterGetTransport(h, &t), FP_S_OK);
    CHECK_EQ(t, FSIM_INPROC);
    CHECK_EQ(SimFilterGetTransport(h, NULL), FP_E_INVALIDARG);
    CHECK_EQ(SimFilterGetTransport(0, &t), FP_E_INVALID_HANDLE);

    getter g = {.h = h};
    pthread_create(&g.t, NULL, getter_main, &g);
    CHECK(WAIT_UNTIL(fsim_client_pending_gets(c) == 1, 2000));
    CHECK_EQ(SimFilterCancelIo(h, NULL), FP_S_OK);
    CHECK_EQ(SimFilterCancelIo(h, NULL), FP_E_NOT_FOUND);
    pthread_join(g.t, NULL);
    CHECK_EQ(g.hr, FP_E_OPERATION_ABORTED);
    CHECK_EQ(g.filled, 0);

    /* user closes while a sender waits for a reply and another is queued: both disconnected */
    sender s1, s2;
    start_sender(&s1, c, "one", 1, 8, -1);
    msgbuf m;
    uint32_t got;
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_S_OK);
    start_sender(&s2, c, "two", 1, 8, -1);
    CHECK(WAIT_UNTIL(fsim_client_queued(c) == 1, 2000)); /* "two" waits for a get */
    CHECK_EQ(fsim_client_awaiting_reply(c), 1);         /* "one" for its reply */
    pthread_create(&g.t, NULL, getter_main, &g);         /* takes "two" */
    CHECK(WAIT_UNTIL(fsim_client_awaiting_reply(c) == 2, 2000));
    CHECK_EQ(fsim_client_queued(c), 0);
    CHECK_EQ(SimFilterClose(h), FP_S_OK); /* both delivered, both waiting for replies */
    pthread_join(s1.t, NULL);
    pthread_join(s2.t, NULL);
    pthread_join(g.t, NULL);
    CHECK_EQ(s1.st, FP_STATUS_PORT_DISCONNECTED);
    CHECK_EQ(s2.st, FP_STATUS_PORT_DISCONNECTED);
    CHECK_EQ(g.hr, FP_S_OK);
    CHECK(memcmp(g.m[0].body, "two", 3) == 0);
    CHECK_EQ(k.disconnects, 1);
    CHECK(!fsim_client_connected(c));
    CHECK_EQ(fsim_send(c, "x", 1, NULL, NULL, -1, NULL), FP_STATUS_PORT_DISCONNECTED);
    fsim_client_release(c);

    /* kernel closes the client port: pending get sees ERROR_INVALID_HANDLE */
    CHECK_EQ(SimFilterConnectCommunicationPort("\\Cancel", 0, NULL, 0, NULL, &h), FP_S_OK);
    c = k.last;
    g = (getter){.h = h};
    pthread_create(&g.t, NULL, getter_main, &g);
    CHECK(WAIT_UNTIL(fsim_client_pending_gets(c) == 1, 2000));
    fsim_close_client(c);
    pthread_join(g.t, NULL);
    CHECK_EQ(g.hr, FP_E_INVALID_HANDLE);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got), FP_E_INVALID_HANDLE);
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    CHECK_EQ(k.disconnects, 2);
    fsim_close_server(s);
}

/* ---- many senders, many getters: none lost, each reply matches its message ---- */
#define NSEND 32
#define NGET 8
#define TOTAL 100000

typedef struct stress {
    fsim_client *c;
    SIM_HANDLE h;
    int id;
    int bad;
    atomic_int *stop;
} stress;

static void *stress_sender(void *p)
{
    stress *s = p;
    for (int i = 0; i < TOTAL / NSEND; i++) {
        uint32_t v[2] = {(uint32_t)s->id, (uint32_t)i}, r[2] = {0, 0}, cap = sizeof r;
        fp_ntstatus st = fsim_send(s->c, v, sizeof v, r, &cap, -1, NULL);
        if (st != FP_STATUS_SUCCESS || cap != sizeof r || r[0] != ~v[0] || r[1] != ~v[1])
            s->bad++;
    }
    return NULL;
}

/* A getter keeps 1 + id % 8 overlapped gets pending on the shared handle; their completions
 * come back through a list and a semaphore, in any order. */
typedef struct sg_io {
    fsim_io io;
    msgbuf m;
    struct sg_io *next;
    fp_hresult hr;
} sg_io;

typedef struct sg_done {
    pthread_mutex_t mu;
    sem_t sem;
    sg_io *head;
} sg_done;

static void sg_complete(fsim_io *io, fp_hresult hr, uint32_t bytes)
{
    (void)bytes;
    sg_io *g = (sg_io *)(void *)io;
    sg_done *d = io->user;
    g->hr = hr;
    pthread_mutex_lock(&d->mu);
    g->next = d->head;
    d->head = g;
    pthread_mutex_unlock(&d->mu);
    sem_post(&d->sem);
}

static void *stress_getter(void *p)
{
    stress *s = p;
    uint32_t k = (uint32_t)(1 + s->id % 8), pending = 0;
    sg_io ios[8];
    sg_done d = {.head = NULL};
    pthread_mutex_init(&d.mu, NULL);
    sem_init(&d.sem, 0, 0);
    replybuf r[1];
    SIM_REPLY_ENTRY re[1];
    int stopping = 0;
    for (uint32_t i = 0; i < k; i++) {
        ios[i].io = (fsim_io){.buffer = &ios[i].m.h, .size = sizeof ios[i].m, .key = s,
                              .done = sg_complete, .user = &d};
        if (SimFilterGetMessageAsync(s->h, &ios[i].io) == FP_E_IO_PENDING)
            pending++;
        else
            s->bad++;
    }
    while (pending) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (sem_timedwait(&d.sem, &ts) != 0) {
            if (!stopping && atomic_load(s->stop)) {
                stopping = 1;
                SimFilterCancelIo(s->h, s); /* this getter's gets only */
            }
            continue;
        }
        pthread_mutex_lock(&d.mu);
        sg_io *g = d.head;
        d.head = g->next;
        pthread_mutex_unlock(&d.mu);
        pending--;
        if (g->hr == FP_E_OPERATION_ABORTED && stopping)
            continue;
        if (g->hr != FP_S_OK) {
            s->bad++;
            continue;
        }
        uint32_t v[2];
        memcpy(v, g->m.body, sizeof v);
        r[0].h.MessageId = g->m.h.MessageId;
        r[0].h.Status = 0;
        v[0] = ~v[0];
        v[1] = ~v[1];
        memcpy(r[0].body, v, sizeof v);
        if (g->m.h.MessageId % 2) { /* mix the single and the batch reply */
            if (SimFilterReplyMessage(s->h, &r[0].h, 16 + 8) != FP_S_OK)
                s->bad++;
        } else {
            re[0] = (SIM_REPLY_ENTRY){&r[0].h, 16 + 8, 0};
            if (SimFilterReplyMessages(s->h, re, 1) != FP_S_OK || re[0].hr != FP_S_OK)
                s->bad++;
        }
        if (SimFilterGetMessageAsync(s->h, &g->io) == FP_E_IO_PENDING)
            pending++;
        else
            s->bad++;
        if (stopping) /* the cancel may have run before this get existed */
            SimFilterCancelIo(s->h, s);
    }
    sem_destroy(&d.sem);
    pthread_mutex_destroy(&d.mu);
    return NULL;
}

static void test_stress(void)
{
    kstate k;
    fsim_server *s = make_port("\\Stress", 1, &k);
    SIM_HANDLE h;
    CHECK_EQ(SimFilterConnectCommunicationPort("\\Stress", 0, NULL, 0, NULL, &h), FP_S_OK);
    atomic_int stop = 0;
    pthread_t ts[NSEND], tg[NGET];
    stress ss[NSEND], sg[NGET];
    for (int i = 0; i < NGET; i++) {
        sg[i] = (stress){k.last, h, i, 0, &stop};
        pthread_create(&tg[i], NULL, stress_getter, &sg[i]);
    }
    for (int i = 0; i < NSEND; i++) {
        ss[i] = (stress){k.last, h, i, 0, &stop};
        pthread_create(&ts[i], NULL, stress_sender, &ss[i]);
    }
    int bad = 0;
    for (int i = 0; i < NSEND; i++) {
        pthread_join(ts[i], NULL);
        bad += ss[i].bad;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < NGET; i++) {
        pthread_join(tg[i], NULL);
        bad += sg[i].bad;
    }
    CHECK_EQ(bad, 0);
    SimFilterClose(h);
    fsim_close_server(s);
}

/* FltSendMessage finds the peer gone, and the disconnect's DisconnectNotify sends on another
 * connection from the same thread (which sleeps on the same thread-local semaphore). The nested
 * send must wait (and time out: nobody gets), and the outer one return PORT_DISCONNECTED. */
static fsim_client *nested_other;
static fp_ntstatus nested_st;
static int nested_calls;

static int gone_deliver(void *r, fsim_msg *const *m, uint32_t n)
{
    (void)r;
    (void)m;
    (void)n;
    return -1;
}
static void gone_nop(void *r) { (void)r; }
static const fsim_kernel_transport gone_ops = {
    .deliver = gone_deliver, .disconnected = gone_nop, .release = gone_nop};

static void nested_disconnect(void *cookie, fsim_client *c)
{
    (void)cookie;
    if (c == nested_other)
        return;
    nested_calls++;
    char rep[16];
    uint32_t rl = sizeof rep;
    nested_st = fsim_send(nested_other, "hello", 5, rep, &rl, 50 * 1000000LL, NULL);
}

static void test_send_from_disconnect_notify(void)
{
    fsim_callbacks cb = {NULL, nested_disconnect, NULL, NULL};
    fsim_server *s;
    CHECK_EQ(fsim_create_port("\\Nested", FSIM_INPROC, 4, FSIM_ACCESS_EVERYONE, &cb, &s),
             FP_STATUS_SUCCESS);
    fsim_client *remote = NULL, *local = NULL;
    int peer;
    CHECK_EQ(fsim_server_connect(s, NULL, 0, 1, 0, &gone_ops, &peer, &remote), FP_S_OK);
    CHECK_EQ(fsim_server_connect(s, NULL, 0, 1, 0, NULL, NULL, &local), FP_S_OK);
    nested_other = local;
    fsim_client_grant(remote, 1); /* the peer "waits": the send writes to it, and fails */
    CHECK_EQ(fsim_send(remote, "x", 1, NULL, NULL, 1000 * 1000000LL, NULL),
             FP_STATUS_PORT_DISCONNECTED);
    CHECK_EQ(nested_calls, 1);
    CHECK_EQ(nested_st, FP_STATUS_TIMEOUT);
    CHECK(local->q_head == NULL); /* withdrawn, not left queued */
    int v = -1;
    sem_getvalue(fsim_thread_sem(), &v);
    CHECK_EQ(v, 0);
    fsim_close_client(local);
    fsim_client_release(local);
    fsim_client_release(remote);
    fsim_close_server(s);
}

int main(void)
{
    test_connect_rules();
    test_round_trip();
    test_timeouts();
    test_cancel_and_disconnect();
    test_send_from_disconnect_notify();
    test_stress();
#ifdef FASTPORT_DEBUG
    CHECK_EQ(fsim_debug_live_clients(), 0);
    CHECK_EQ(fsim_debug_live_servers(), 0);
#endif
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
