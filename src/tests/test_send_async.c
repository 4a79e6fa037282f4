/* C test program of the emulator's asynchronous kernel-side sends (fsim_send_async), no Python.
 *
 * The same script runs against blocked senders (fsim_send, a thread per message) and against
 * asynchronous ones (fsim_send_async, one thread and a completion queue), on both transports.
 * Everything the user side sees (headers, MessageIds relative to the first, payloads, every
 * HRESULT) and everything the senders get back (STATUS, reply length, reply status) is written to
 * a transcript; the two kinds of sends must produce the same transcript. Last line:
 * "N passed, M failed". */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fltsim/fltsim.h"
#include "fltsim/internal.h" /* the client's queue, to know a blocked sender has queued */

#include "check.h"

#define MS 1000000LL

/* ---- the transcript ---- */
typedef struct transcript {
    char text[8192];
    size_t n;
    uint64_t first_id;
} transcript;

static void say(transcript *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(t->text + t->n, sizeof t->text - t->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        t->n += (size_t)k < sizeof t->text - t->n ? (size_t)k : sizeof t->text - t->n - 1;
}

/* ---- the kernel side ---- */
typedef struct kstate {
    pthread_mutex_t lock;
    fsim_client *last;
} kstate;

static fp_ntstatus on_connect(void *cookie, fsim_client *c, const void *ctx, uint32_t n, void **cc)
{
    kstate *k = cookie;
    (void)ctx;
    (void)n;
    pthread_mutex_lock(&k->lock);
    k->last = c;
    fsim_client_retain(c);
    pthread_mutex_unlock(&k->lock);
    *cc = k;
    return FP_STATUS_SUCCESS;
}

static void on_disconnect(void *cookie, fsim_client *c)
{
    (void)cookie;
    (void)c;
}

static int kqueued(fsim_client *c)
{
    int n = 0;
    pthread_mutex_lock(&c->lock);
    for (fsim_msg *m = c->q_head; m; m = m->next)
        n++;
    pthread_mutex_unlock(&c->lock);
    return n;
}

/* ---- one send of either kind ---- */
typedef struct send {
    int async;
    fsim_client *c;
    char data[32];
    uint32_t len;
    char reply[32];
    uint32_t reply_cap; /* 0 with want_reply 0: no reply */
    int want_reply;
    int64_t timeout_ns;
    /* outcome */
    atomic_int done;
    fp_ntstatus st;
    uint32_t reply_len;
    int32_t reply_status;
    pthread_t t;
    fsim_send_req req;
} send;

static fsim_sendq *q; /* the async sends' completion queue */

static void *blocked_main(void *p)
{
    send *s = p;
    uint32_t rl = s->reply_cap;
    int32_t rs = 0;
    s->st = fsim_send(s->c, s->data, s->len, s->want_reply ? s->reply : NULL,
                      s->want_reply ? &rl : NULL, s->timeout_ns, &rs);
    s->reply_len = s->want_reply ? rl : 0;
    s->reply_status = s->st == FP_STATUS_SUCCESS && s->want_reply ? rs : 0;
    atomic_store(&s->done, 1);
    return NULL;
}

/* Starts s; returns once it is queued at the kernel (or finished), as fsim_send_async does. */
static void start(send *s, int async, fsim_client *c, const char *text, int want_reply,
                  uint32_t reply_cap, int64_t timeout_ns)
{
    memset(s, 0, sizeof *s);
    s->async = async;
    s->c = c;
    s->len = (uint32_t)strlen(text);
    memcpy(s->data, text, s->len);
    s->want_reply = want_reply;
    s->reply_cap = reply_cap;
    s->timeout_ns = timeout_ns;
    if (async) {
        s->req.data = s->data;
        s->req.length = s->len;
        s->req.reply = want_reply ? s->reply : NULL;
        s->req.reply_cap = reply_cap;
        s->req.timeout_ns = timeout_ns;
        s->req.user = s;
        CHECK_EQ(fsim_send_async(c, &s->req, q), FP_STATUS_SUCCESS);
        return;
    }
    int before = kqueued(c);
    CHECK_EQ(pthread_create(&s->t, NULL, blocked_main, s), 0);
    CHECK(WAIT_UNTIL(kqueued(c) > before || atomic_load(&s->done), 2000));
}

/* Hands back async completions until s is done (the waiter also enforces deadlines). */
static void finish(send *s, transcript *t, const char *name)
{
    if (s->async) {
        for (int i = 0; i < 5000 && !atomic_load(&s->done); i++) {
            fsim_send_req *out[8];
            uint32_t n = fsim_sendq_wait(q, out, 8, 10 * MS);
            for (uint32_t k = 0; k < n; k++) {
                send *o = out[k]->user;
                o->st = out[k]->status;
                o->reply_len = out[k]->reply_length;
                o->reply_status = out[k]->reply_status;
                atomic_store(&o->done, 1);
            }
        }
    } else {
        pthread_join(s->t, NULL);
    }
    CHECK(atomic_load(&s->done));
    say(t, "send %s: status 0x%08x reply %u bytes status %d '%.*s'\n", name, (unsigned)s->st,
        s->reply_len, s->reply_status, (int)s->reply_len, s->reply);
}

/* One get on the user side, described in the transcript. */
static uint64_t get(SIM_HANDLE h, transcript *t, uint32_t size, uint32_t timeout_ms)
{
    struct {
        FP_MESSAGE_HEADER h;
        char data[32];
    } m;
    memset(&m, 0, sizeof m);
    uint32_t bytes = 0;
    fp_hresult hr = SimFilterGetMessage(h, &m.h, size, timeout_ms, &bytes);
    if (hr != FP_S_OK && hr != FP_E_INSUFFICIENT_BUFFER) {
        say(t, "get: 0x%08x\n", (unsigned)hr);
        return 0;
    }
    if (!t->first_id)
        t->first_id = m.h.MessageId;
    say(t, "get: 0x%08x bytes %u reply_length %u id +%llu '%.*s'\n", (unsigned)hr, bytes,
        m.h.ReplyLength, (unsigned long long)(m.h.MessageId - t->first_id),
        (int)(bytes - sizeof m.h), m.data);
    return m.h.MessageId;
}

static void reply(SIM_HANDLE h, transcript *t, uint64_t id, const char *text, int32_t status)
{
    struct {
        FP_REPLY_HEADER h;
        char data[32];
    } r;
    r.h.Status = status;
    r.h.MessageId = id;
    uint32_t n = (uint32_t)strlen(text);
    memcpy(r.data, text, n);
    fp_hresult hr = SimFilterReplyMessage(h, &r.h, (uint32_t)sizeof r.h + n);
    say(t, "reply %s: 0x%08x\n", text, (unsigned)hr);
}

/* The script: queueing and FIFO delivery, no-reply sends, replies (right size, too long,
 * truncated message), timeouts while queued and while waiting for the reply, disconnect. */
static void script(enum fsim_transport tr, int async, transcript *t)
{
    static int seq;
    char name[64];
    snprintf(name, sizeof name, "\\async-%d-%d-%d", (int)getpid(), (int)tr, seq++);
    kstate k = {PTHREAD_MUTEX_INITIALIZER, NULL};
    fsim_callbacks cb = {on_connect, on_disconnect, NULL, &k};
    fsim_server *srv = NULL;
    CHECK_EQ(fsim_create_port(name, tr, 4, FSIM_ACCESS_OWNER, &cb, &srv), FP_STATUS_SUCCESS);
    SIM_HANDLE h = 0;
    CHECK_EQ(SimFilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &h), FP_S_OK);
    fsim_client *c = k.last;
    CHECK(c != NULL);
    enum fsim_transport got;
    CHECK_EQ(SimFilterGetTransport(h, &got), FP_S_OK);
    CHECK_EQ(got, tr);

    send a, b, cc, d, e, f, g, x;
    start(&a, async, c, "alpha", 1, 8, -1);
    start(&b, async, c, "bravo", 0, 0, -1);
    start(&cc, async, c, "charlie-long", 1, 4, -1);
    CHECK_EQ(kqueued(c), 3);
    uint64_t ida = get(h, t, 16 + 32, FSIM_INFINITE);
    get(h, t, 16 + 32, FSIM_INFINITE); /* bravo: no reply wanted, done once delivered */
    finish(&b, t, "bravo");
    uint64_t idc = get(h, t, 16 + 6, FSIM_INFINITE); /* truncated, still delivered */
    reply(h, t, idc, "toolong", 7);                  /* more than its 4 bytes */
    reply(h, t, ida, "ok-alpha", 3);
    reply(h, t, ida, "again", 0); /* answered already: no waiter */
    finish(&a, t, "alpha");
    finish(&cc, t, "charlie");

    /* timed out while queued: withdrawn, never delivered */
    start(&d, async, c, "delta", 1, 8, 20 * MS);
    finish(&d, t, "delta");
    get(h, t, 16 + 32, 30);
    /* timed out while waiting for the reply: a late reply finds no waiter */
    start(&e, async, c, "echo", 1, 8, 200 * MS);
    uint64_t ide = get(h, t, 16 + 32, FSIM_INFINITE);
    finish(&e, t, "echo");
    reply(h, t, ide, "late", 0);

    /* disconnect: one queued, one waiting for its reply; then a send on the closed port */
    start(&f, async, c, "foxtrot", 1, 8, -1);
    get(h, t, 16 + 32, FSIM_INFINITE);
    start(&g, async, c, "golf", 1, 8, -1);
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    finish(&f, t, "foxtrot");
    finish(&g, t, "golf");
    start(&x, async, c, "xray", 1, 8, -1);
    finish(&x, t, "xray");
    CHECK_EQ(fsim_sendq_inflight(q), 0);

    fsim_client_release(c);
    fsim_close_server(srv);
}

static void test_same_transcript(enum fsim_transport tr)
{
    static transcript blocked, async;
    memset(&blocked, 0, sizeof blocked);
    memset(&async, 0, sizeof async);
    script(tr, 0, &blocked);
    script(tr, 1, &async);
    CHECK(blocked.n > 0);
    CHECK(strcmp(blocked.text, async.text) == 0);
    if (strcmp(blocked.text, async.text) != 0)
        fprintf(stderr, "transport %d\n-- blocked:\n%s-- async:\n%s", (int)tr, blocked.text,
                async.text);
    /* and the transcript says what a FltSendMessage gets */
    CHECK(strstr(async.text, "send alpha: status 0x00000000 reply 8 bytes status 3 'ok-alpha'"));
    CHECK(strstr(async.text, "send charlie: status 0x80000005")); /* STATUS_BUFFER_OVERFLOW */
    CHECK(strstr(async.text, "send delta: status 0x00000102"));   /* STATUS_TIMEOUT */
    CHECK(strstr(async.text, "send echo: status 0x00000102"));
    CHECK(strstr(async.text, "reply late: 0x801f0020"));          /* no waiter for reply */
    CHECK(strstr(async.text, "send golf: status 0xc0000037"));    /* STATUS_PORT_DISCONNECTED */
    CHECK(strstr(async.text, "send xray: status 0xc0000037"));
}

/* Many sends in flight from one thread: each handed back exactly once, with its own reply. */
typedef struct echo_user {
    SIM_HANDLE h;
    uint32_t n;
} echo_user;

static void *echo_main(void *p)
{
    echo_user *u = p;
    for (uint32_t i = 0; i < u->n; i++) {
        struct {
            FP_MESSAGE_HEADER h;
            uint32_t v;
        } m;
        uint32_t bytes;
        if (SimFilterGetMessage(u->h, &m.h, 16 + 4, 5000, &bytes) != FP_S_OK)
            break;
        struct {
            FP_REPLY_HEADER h;
            uint32_t v;
        } r;
        memset(&r, 0, sizeof r);
        r.h.MessageId = m.h.MessageId;
        r.v = m.v * 3u;
        SimFilterReplyMessage(u->h, &r.h, 16 + 4);
    }
    return NULL;
}

/* A port named "\\async-<what>-<pid>-<transport>" whose connections k records, and one
 * connection to it in *h. */
static fsim_server *open_port(const char *what, enum fsim_transport tr, kstate *k, SIM_HANDLE *h)
{
    char name[64];
    snprintf(name, sizeof name, "\\async-%s-%d-%d", what, (int)getpid(), (int)tr);
    fsim_callbacks cb = {on_connect, on_disconnect, NULL, k};
    fsim_server *srv = NULL;
    CHECK_EQ(fsim_create_port(name, tr, 4, FSIM_ACCESS_OWNER, &cb, &srv), FP_STATUS_SUCCESS);
    CHECK_EQ(SimFilterConnectCommunicationPort(name, 0, NULL, 0, NULL, h), FP_S_OK);
    return srv;
}

static void test_many_in_flight(enum fsim_transport tr)
{
    enum { N = 2000, INFLIGHT = 64 };
    kstate k = {PTHREAD_MUTEX_INITIALIZER, NULL};
    echo_user u = {0, N};
    fsim_server *srv = open_port("many", tr, &k, &u.h);
    pthread_t t;
    pthread_create(&t, NULL, echo_main, &u);
    static fsim_send_req reqs[INFLIGHT];
    static uint32_t vals[INFLIGHT], replies[INFLIGHT];
    uint32_t sent = 0, good = 0, handed = 0;
    for (uint32_t i = 0; i < INFLIGHT; i++) {
        vals[i] = sent++;
        reqs[i] = (fsim_send_req){.data = &vals[i], .length = 4, .reply = &replies[i],
                                  .reply_cap = 4, .timeout_ns = 5000 * MS, .user = NULL};
        CHECK_EQ(fsim_send_async(k.last, &reqs[i], q), FP_STATUS_SUCCESS);
    }
    while (handed < N) {
        fsim_send_req *out[INFLIGHT];
        uint32_t n = fsim_sendq_wait(q, out, INFLIGHT, 5000 * MS);
        if (!n)
            break;
        for (uint32_t j = 0; j < n; j++) {
            uint32_t i = (uint32_t)(out[j] - reqs);
            handed++;
            good += out[j]->status == FP_STATUS_SUCCESS && out[j]->reply_length == 4 &&
                    replies[i] == vals[i] * 3u;
            if (sent < N) {
                vals[i] = sent++;
                CHECK_EQ(fsim_send_async(k.last, out[j], q), FP_STATUS_SUCCESS);
            }
        }
    }
    CHECK_EQ(handed, N);
    CHECK_EQ(good, N);
    CHECK_EQ(fsim_sendq_inflight(q), 0);
    pthread_join(t, NULL);
    CHECK_EQ(fsim_sendq_wait(q, (fsim_send_req *[1]){0}, 1, 0), 0); /* nothing more */
    CHECK_EQ(SimFilterClose(u.h), FP_S_OK);
    fsim_client_release(k.last);
    fsim_close_server(srv);
}

/* fsim_send_abandon: what an interrupted sender leaves. Queued: withdrawn, never delivered.
 * Delivered: handed back STATUS_TIMEOUT, the late reply finds no waiter. Finished first: handed
 * back as it finished. */
static void test_abandon(enum fsim_transport tr)
{
    kstate k = {PTHREAD_MUTEX_INITIALIZER, NULL};
    SIM_HANDLE h;
    fsim_server *srv = open_port("abandon", tr, &k, &h);
    fsim_send_req *out[1];
    uint32_t reply = 0;
    struct {
        FP_MESSAGE_HEADER h;
        char body[16];
    } m;
    struct {
        FP_REPLY_HEADER h;
        uint32_t v;
    } r;
    memset(&r, 0, sizeof r);
    r.v = 7;

    fsim_send_req queued = {.data = "q", .length = 1, .reply = &reply, .reply_cap = 4,
                            .timeout_ns = -1};
    CHECK_EQ(fsim_send_async(k.last, &queued, q), FP_STATUS_SUCCESS);
    CHECK(WAIT_UNTIL(kqueued(k.last) == 1, 5000));
    fsim_send_abandon(&queued);
    CHECK_EQ(fsim_sendq_wait(q, out, 1, 5000 * MS), 1);
    CHECK(out[0] == &queued);
    CHECK_EQ(queued.status, FP_STATUS_TIMEOUT);
    CHECK_EQ(kqueued(k.last), 0);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, NULL), FP_E_TIMEOUT); /* withdrawn */

    fsim_send_req delivered = {.data = "d", .length = 1, .reply = &reply, .reply_cap = 4,
                               .timeout_ns = -1};
    CHECK_EQ(fsim_send_async(k.last, &delivered, q), FP_STATUS_SUCCESS);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, NULL), FP_S_OK);
    CHECK_EQ(fsim_client_awaiting_reply(k.last), 1);
    fsim_send_abandon(&delivered);
    CHECK_EQ(fsim_sendq_wait(q, out, 1, 5000 * MS), 1);
    CHECK_EQ(delivered.status, FP_STATUS_TIMEOUT);
    CHECK_EQ(fsim_client_awaiting_reply(k.last), 0);
    r.h.MessageId = m.h.MessageId;
    CHECK_EQ(SimFilterReplyMessage(h, &r.h, 16 + 4), FP_E_FLT_NO_WAITER_FOR_REPLY);

    fsim_send_req done = {.data = "f", .length = 1, .reply = &reply, .reply_cap = 4,
                          .timeout_ns = -1};
    CHECK_EQ(fsim_send_async(k.last, &done, q), FP_STATUS_SUCCESS);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, NULL), FP_S_OK);
    r.h.MessageId = m.h.MessageId;
    CHECK_EQ(SimFilterReplyMessage(h, &r.h, 16 + 4), FP_S_OK); /* finished once accepted */
    fsim_send_abandon(&done); /* too late: nothing changes */
    CHECK_EQ(fsim_sendq_wait(q, out, 1, 5000 * MS), 1);
    CHECK(out[0] == &done);
    CHECK_EQ(done.status, FP_STATUS_SUCCESS);
    CHECK_EQ(reply, 7);
    CHECK_EQ(fsim_sendq_inflight(q), 0);

    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    fsim_client_release(k.last);
    fsim_close_server(srv);
}

int main(void)
{
    char dir[] = "/tmp/fastport-async-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    setenv("FASTPORT_RUNTIME_DIR", dir, 1);
    CHECK_EQ(fsim_sendq_create(&q), FP_STATUS_SUCCESS);
    CHECK_EQ(fsim_send_async(NULL, &(fsim_send_req){0}, q), FP_STATUS_INVALID_PARAMETER);
    test_same_transcript(FSIM_INPROC);
    test_same_transcript(FSIM_SOCKET);
    test_many_in_flight(FSIM_INPROC);
    test_many_in_flight(FSIM_SOCKET);
    test_abandon(FSIM_INPROC);
    test_abandon(FSIM_SOCKET);
    fsim_sendq_destroy(q);
    rmdir(dir);
    CHECK_EQ(fsim_debug_live_clients(), 0);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
