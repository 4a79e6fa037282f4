/* C test program of the emulated Filter Manager's socket transport (FSIM_SOCKET), no Python.
 *
 * Most tests keep both sides in this process, talking over the socket (SimFilterConnect finds the
 * port on the socket transport because it is not an inproc port); the tests about processes
 * fork: a user process killed with -9, a kernel process killed, another uid, the stress run.
 * Ports live in a fresh mkdtemp directory ($FASTPORT_RUNTIME_DIR). Last line: "N passed, M failed". */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "fltsim/fltsim.h"
#include "fltsim/sock_proto.h" /* hand-built frames for the garbage tests */

#include "check.h"
/* Polls `cond` every millisecond for up to `ms`; true if it came true. */

#define MS 1000000LL
#define MIB (1u << 20)

/* ---- n overlapped gets at once, waited for ---- */

typedef struct tget {
    FP_MESSAGE_HEADER *buffer;
    uint32_t size;
    uint32_t length; /* out: bytes written, header included */
    fp_hresult hr;   /* out: how its get completed */
} tget;

#define TGET_MAX 16u

typedef struct tget_batch {
    fsim_io io[TGET_MAX];
    tget *e;
    sem_t sem; /* posted once per completion */
} tget_batch;

static void tget_done(fsim_io *io, fp_hresult hr, uint32_t bytes)
{
    tget_batch *b = io->user;
    tget *e = &b->e[io - b->io];
    e->hr = hr;
    e->length = bytes;
    sem_post(&b->sem);
}

static int tget_wait(sem_t *s, uint32_t timeout_ms)
{
    if (timeout_ms == FSIM_INFINITE) {
        while (sem_wait(s) != 0)
            ;
        return 0;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)timeout_ms * 1000000u;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    int r;
    while ((r = sem_timedwait(s, &ts)) != 0 && errno == EINTR)
        ;
    return r;
}

/* Posts n (<= TGET_MAX) gets, waits up to timeout_ms for the first completion, cancels the others
 * and takes every completion; the messages are moved to e[0..*filled) (another thread's cancel
 * may have hit an older get before a newer one was posted). S_OK when *filled > 0, else
 * FP_E_TIMEOUT, FP_E_OPERATION_ABORTED (another thread's cancel) or FP_E_INVALID_HANDLE. */
static fp_hresult get_n(SIM_HANDLE h, tget *e, uint32_t n, uint32_t timeout_ms, uint32_t *filled)
{
    tget_batch b;
    b.e = e;
    sem_init(&b.sem, 0, 0);
    *filled = 0;
    uint32_t posted = 0;
    fp_hresult hr = FP_S_OK;
    for (; posted < n && posted < TGET_MAX; posted++) {
        b.io[posted] = (fsim_io){.buffer = e[posted].buffer, .size = e[posted].size, .key = &b,
                                 .done = tget_done, .user = &b};
        e[posted].length = 0;
        e[posted].hr = FP_E_OPERATION_ABORTED;
        hr = SimFilterGetMessageAsync(h, &b.io[posted]);
        if (hr != FP_E_IO_PENDING)
            break;
    }
    if (posted) {
        uint32_t taken = tget_wait(&b.sem, timeout_ms) == 0;
        int timed_out = !taken;
        if (taken < posted)
            (void)SimFilterCancelIo(h, &b);
        for (; taken < posted; taken++)
            tget_wait(&b.sem, FSIM_INFINITE);
        uint32_t k = 0, gone = 0;
        for (uint32_t i = 0; i < posted; i++) {
            gone |= e[i].hr == FP_E_INVALID_HANDLE;
            if (e[i].hr != FP_S_OK && e[i].hr != FP_E_INSUFFICIENT_BUFFER)
                continue;
            if (i != k) { /* buffers of one call are alike here */
                memcpy(e[k].buffer, e[i].buffer, e[i].length);
                e[k].length = e[i].length;
                e[k].hr = e[i].hr;
            }
            k++;
        }
        *filled = k;
        hr = k ? FP_S_OK : gone ? FP_E_INVALID_HANDLE : timed_out ? FP_E_TIMEOUT
                                                              : FP_E_OPERATION_ABORTED;
    }
    sem_destroy(&b.sem);
    return hr;
}

static char rundir[64];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- a kernel side whose callbacks record what they saw ---- */
typedef struct kstate {
    pthread_mutex_t lock;
    fsim_client *last;
    int connects, disconnects;
    uint32_t ctx_size;
    uint64_t ctx_sum;
    uint32_t peer_uid, peer_pid;
    fp_ntstatus reject; /* ConnectNotify's answer when not 0 */
    pthread_cond_t cv;
    int inside, max_inside; /* MessageNotify calls running at once ("slow" ones) */
    int gate_open, gated;   /* "gate" MessageNotify calls wait for gate_open; gated: how many came */
} kstate;

static uint64_t checksum(const void *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const uint8_t *)p)[i]) * 1099511628211ull;
    return h;
}

static fp_ntstatus on_connect(void *cookie, fsim_client *c, const void *ctx, uint32_t n, void **cc)
{
    kstate *k = cookie;
    pthread_mutex_lock(&k->lock);
    if (k->reject) {
        pthread_mutex_unlock(&k->lock);
        return k->reject;
    }
    k->connects++;
    k->last = c;
    k->ctx_size = n;
    k->ctx_sum = checksum(ctx, n);
    k->peer_uid = fsim_client_peer_uid(c);
    k->peer_pid = fsim_client_peer_pid(c);
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

/* MessageNotify: the input reversed, as much as fits. Inputs starting with "slow" wait (up to
 * 2 s) until another MessageNotify runs at the same time. */
static fp_ntstatus on_message(void *cookie, fsim_client *c, const void *in, uint32_t in_size,
                              void *out, uint32_t out_size, uint32_t *returned)
{
    kstate *k = cookie;
    (void)c;
    if (in_size >= 4 && memcmp(in, "gate", 4) == 0) {
        pthread_mutex_lock(&k->lock);
        k->gated++;
        while (!k->gate_open)
            pthread_cond_wait(&k->cv, &k->lock);
        pthread_mutex_unlock(&k->lock);
    }
    if (in_size >= 4 && memcmp(in, "slow", 4) == 0) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 2;
        pthread_mutex_lock(&k->lock);
        if (++k->inside > k->max_inside)
            k->max_inside = k->inside;
        pthread_cond_broadcast(&k->cv);
        while (k->inside < 2 && pthread_cond_timedwait(&k->cv, &k->lock, &dl) == 0)
            ;
        pthread_mutex_unlock(&k->lock);
        usleep(5000);
        pthread_mutex_lock(&k->lock);
        k->inside--;
        pthread_mutex_unlock(&k->lock);
    }
    uint32_t n = in_size < out_size ? in_size : out_size;
    for (uint32_t i = 0; i < n; i++)
        ((char *)out)[i] = ((const char *)in)[in_size - 1 - i];
    *returned = n;
    return in_size == 4 && memcmp(in, "fail", 4) == 0 ? FP_STATUS_ACCESS_DENIED : FP_STATUS_SUCCESS;
}

static int kget_disconnects(kstate *k)
{
    pthread_mutex_lock(&k->lock);
    int n = k->disconnects;
    pthread_mutex_unlock(&k->lock);
    return n;
}

static int kget_connects(kstate *k)
{
    pthread_mutex_lock(&k->lock);
    int n = k->connects;
    pthread_mutex_unlock(&k->lock);
    return n;
}

/* Messages queued at the kernel for want of a waiting get (white-box: the client's queue). */
static int kqueued(fsim_client *c)
{
    int n = 0;
    pthread_mutex_lock(&c->lock);
    for (fsim_msg *m = c->q_head; m; m = m->next)
        n++;
    pthread_mutex_unlock(&c->lock);
    return n;
}

/* SimFilterClose of a live connection to k's port. Like FltLib's CloseHandle it returns once the
 * kernel side has disconnected the client port: DisconnectNotify has run. */
static void close_user(SIM_HANDLE h, kstate *k)
{
    int before = kget_disconnects(k);
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    CHECK_EQ(kget_disconnects(k), before + 1);
}

/* A connection to port `name` (it must succeed). */
static SIM_HANDLE connect_user(const char *name)
{
    SIM_HANDLE h = 0;
    CHECK_EQ(SimFilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &h), FP_S_OK);
    return h;
}

static fsim_client *kget_last(kstate *k)
{
    pthread_mutex_lock(&k->lock);
    fsim_client *c = k->last;
    if (c)
        fsim_client_retain(c);
    pthread_mutex_unlock(&k->lock);
    return c;
}

static fsim_server *make_port(const char *name, uint32_t maxc, enum fsim_access acc, kstate *k,
                              int with_message_notify)
{
    memset(k, 0, sizeof *k);
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->cv, NULL);
    fsim_callbacks cb = {on_connect, on_disconnect, with_message_notify ? on_message : NULL, k};
    fsim_server *s = NULL;
    fp_ntstatus st = fsim_create_port(name, FSIM_SOCKET, maxc, acc, &cb, &s);
    CHECK_EQ(st, FP_STATUS_SUCCESS);
    return s;
}

/* ---- a kernel sender on its own thread ---- */
typedef struct sender {
    pthread_t t;
    fsim_client *c;
    const void *data;
    uint32_t len;
    void *reply;
    uint32_t reply_len;
    int64_t timeout_ns;
    int32_t reply_status;
    fp_ntstatus st;
    uint64_t done_ms;
    char small[64], small_reply[64];
} sender;

static void *sender_main(void *p)
{
    sender *s = p;
    s->st = fsim_send(s->c, s->data, s->len, s->reply, &s->reply_len, s->timeout_ns,
                      &s->reply_status);
    s->done_ms = now_ms();
    return NULL;
}

static void start_sender(sender *s, fsim_client *c, const char *text, int want_reply,
                         uint32_t reply_cap, int64_t timeout_ns)
{
    memset(s, 0, sizeof *s);
    s->c = c;
    s->len = (uint32_t)strlen(text);
    memcpy(s->small, text, s->len);
    s->data = s->small;
    s->reply = want_reply ? s->small_reply : NULL;
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

/* ---- a user getter on its own thread ---- */
typedef struct getter {
    pthread_t t;
    atomic_int done;
    SIM_HANDLE h;
    uint32_t count, timeout_ms;
    fp_hresult hr;
    uint32_t filled;
    msgbuf m[8];
} getter;

static void *getter_main(void *p)
{
    getter *g = p;
    tget e[8];
    for (int i = 0; i < 8; i++)
        e[i] = (tget){&g->m[i].h, sizeof g->m[i], 0, 0};
    g->hr = get_n(g->h, e, g->count ? g->count : 4,
                                 g->timeout_ms ? g->timeout_ms : FSIM_INFINITE, &g->filled);
    atomic_store(&g->done, 1);
    return NULL;
}

static void start_getter(getter *g, SIM_HANDLE h, uint32_t count, uint32_t timeout_ms)
{
    memset(g, 0, sizeof *g);
    g->h = h;
    g->count = count;
    g->timeout_ms = timeout_ms;
    pthread_create(&g->t, NULL, getter_main, g);
}

static void reply_to(SIM_HANDLE h, uint64_t id, const char *text, int32_t status, fp_hresult want)
{
    replybuf r;
    memset(&r, 0, sizeof r);
    r.h.MessageId = id;
    r.h.Status = status;
    uint32_t n = (uint32_t)strlen(text);
    memcpy(r.body, text, n);
    CHECK_EQ(SimFilterReplyMessage(h, &r.h, 16 + n), want);
}

static void sock_path(const char *name, char *out, size_t cap)
{
    struct sockaddr_un a;
    CHECK_EQ(sk_port_path(rundir, name, &a), 0);
    snprintf(out, cap, "%s", a.sun_path);
}

/* ================================================================================== tests == */

static void test_connect_rules(void)
{
    kstate k;
    fsim_server *s = make_port("\\ConnectRules", 2, FSIM_ACCESS_OWNER, &k, 1);
    char path[200], want[200];
    sock_path("\\ConnectRules", path, sizeof path);
    snprintf(want, sizeof want, "%s/%%5CConnectRules", rundir);
    CHECK(strcmp(path, want) == 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);

    SIM_HANDLE a = 0, b = 0, c = 0;
    CHECK_EQ(SimFilterConnectCommunicationPort("\\NoSuchPort", 0, NULL, 0, NULL, &a),
             FP_E_FILE_NOT_FOUND);
    CHECK_EQ(a, 0);
    /* the largest context, checked byte for byte on the kernel side; freed right after */
    uint8_t *ctx = malloc(65535);
    for (uint32_t i = 0; i < 65535; i++)
        ctx[i] = (uint8_t)(i * 7 + 3);
    uint64_t sum = checksum(ctx, 65535);
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, ctx, 65535, NULL, &a), FP_S_OK);
    memset(ctx, 0, 65535);
    free(ctx);
    CHECK_EQ(k.ctx_size, 65535);
    CHECK_EQ(k.ctx_sum, sum);
    CHECK_EQ(k.peer_pid, getpid());
    CHECK_EQ(k.peer_uid, geteuid());
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", FLT_PORT_FLAG_SYNC_HANDLE, "hi", 2,
                                               NULL, &b), FP_S_OK);
    CHECK_EQ(k.ctx_size, 2);
    CHECK_EQ(k.ctx_sum, checksum("hi", 2));
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, NULL, 0, NULL, &c),
             FP_E_CONNECTION_COUNT_LIMIT);
    CHECK_EQ(c, 0);
    fsim_client *list[4];
    size_t n = fsim_server_clients(s, list, 4);
    CHECK_EQ(n, 2);
    for (size_t i = 0; i < n && i < 4; i++)
        fsim_client_release(list[i]);
    close_user(a, &k);
    CHECK_EQ(SimFilterClose(a), FP_E_INVALID_HANDLE);
    CHECK_EQ(fsim_server_clients(s, NULL, 0), 1);
    c = connect_user("\\ConnectRules");
    close_user(c, &k);

    /* ConnectNotify rejects: its NTSTATUS, as the user sees it */
    k.reject = FP_STATUS_ACCESS_DENIED;
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, NULL, 0, NULL, &c),
             FP_E_ACCESSDENIED);
    k.reject = FP_STATUS_INVALID_PARAMETER;
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, NULL, 0, NULL, &c),
             FP_E_INVALIDARG);
    CHECK_EQ(c, 0);
    k.reject = 0;

    /* a name collision in this process, and a name too long for sun_path: hashed file name */
    fsim_server *dup = NULL;
    fsim_callbacks none = {0};
    CHECK_EQ(fsim_create_port("\\ConnectRules", FSIM_SOCKET, 1, FSIM_ACCESS_OWNER, &none, &dup),
             FP_STATUS_OBJECT_NAME_COLLISION);
    char longname[FSIM_MAX_NAME + 1];
    memset(longname, '\\', FSIM_MAX_NAME);
    longname[FSIM_MAX_NAME] = 0;
    kstate k2;
    fsim_server *s2 = make_port(longname, 1, FSIM_ACCESS_EVERYONE, &k2, 1);
    sock_path(longname, path, sizeof path);
    CHECK(strstr(path, "/h-") != NULL && strlen(strrchr(path, '/')) == 1 + 2 + 16);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0666);
    SIM_HANDLE d = 0;
    d = connect_user(longname);
    close_user(d, &k2);
    fsim_close_server(s2);
    CHECK(stat(path, &st) != 0);

    /* closing the server: its socket file goes, new connects fail, live connections go on */
    fsim_close_server(s);
    sock_path("\\ConnectRules", path, sizeof path);
    CHECK(stat(path, &st) != 0);
    CHECK_EQ(SimFilterConnectCommunicationPort("\\ConnectRules", 0, NULL, 0, NULL, &d),
             FP_E_FILE_NOT_FOUND);
    uint32_t ret = 0;
    char out[8];
    CHECK_EQ(SimFilterSendMessage(b, "abc", 3, out, sizeof out, &ret), FP_S_OK);
    CHECK_EQ(ret, 3);
    CHECK(memcmp(out, "cba", 3) == 0);
    close_user(b, &k);
}

/* Creates a port, checks that its socket file is in dir (*a: its address) and that a connect
 * reaches it. */
static fsim_server *port_in_dir(const char *dir, const char *name, kstate *k,
                                struct sockaddr_un *a)
{
    fsim_server *s = make_port(name, 1, FSIM_ACCESS_OWNER, k, 1);
    struct stat st;
    sk_port_path(dir, name, a);
    CHECK(stat(a->sun_path, &st) == 0 && S_ISSOCK(st.st_mode));
    SIM_HANDLE h = 0;
    h = connect_user(name);
    close_user(h, k);
    return s;
}

static void test_runtime_dir_rules(void)
{
    /* the default directory: /tmp/fastport-<euid>, 0711 */
    char def[64], name[64], path[200];
    snprintf(def, sizeof def, "/tmp/fastport-%u", (unsigned)geteuid());
    snprintf(name, sizeof name, "\\SockDefault%d", (int)getpid());
    struct stat st;
    int existed = stat(def, &st) == 0;
    unsetenv("FASTPORT_RUNTIME_DIR");
    char *xdg = getenv("XDG_RUNTIME_DIR") ? strdup(getenv("XDG_RUNTIME_DIR")) : NULL;
    unsetenv("XDG_RUNTIME_DIR");
    CHECK(strcmp(fsim_runtime_dir(), def) == 0);
    kstate k;
    struct sockaddr_un a;
    fsim_server *s = port_in_dir(def, name, &k, &a);
    CHECK(lstat(def, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
          (st.st_mode & 022) == 0);
    fsim_close_server(s);
    CHECK(stat(a.sun_path, &st) != 0);
    if (!existed) { /* leave no trace */
        snprintf(path, sizeof path, "%s/.lock", def);
        unlink(path);
        rmdir(def);
    }
    setenv("FASTPORT_RUNTIME_DIR", rundir, 1);
    CHECK(strcmp(fsim_runtime_dir(), rundir) == 0);
    if (xdg) {
        setenv("XDG_RUNTIME_DIR", xdg, 1);
        free(xdg);
    }

    /* a directory others may write to, or (as root) one owned by someone else: refused */
    char bad[80];
    snprintf(bad, sizeof bad, "%s/bad", rundir);
    mkdir(bad, 0700);
    chmod(bad, 0777);
    setenv("FASTPORT_RUNTIME_DIR", bad, 1);
    fsim_server *x = NULL;
    fsim_callbacks none = {0};
    CHECK_EQ(fsim_create_port("\\Bad", FSIM_SOCKET, 1, FSIM_ACCESS_OWNER, &none, &x),
             FP_STATUS_ACCESS_DENIED);
    if (geteuid() == 0) {
        chmod(bad, 0711);
        CHECK(chown(bad, 65534, 65534) == 0);
        CHECK_EQ(fsim_create_port("\\Bad", FSIM_SOCKET, 1, FSIM_ACCESS_OWNER, &none, &x),
                 FP_STATUS_ACCESS_DENIED);
    }
    /* a fresh directory is created 0711 whatever the umask */
    snprintf(path, sizeof path, "%s/fresh", rundir);
    setenv("FASTPORT_RUNTIME_DIR", path, 1);
    mode_t old = umask(077);
    CHECK_EQ(fsim_create_port("\\Fresh", FSIM_SOCKET, 1, FSIM_ACCESS_OWNER, &none, &x),
             FP_STATUS_SUCCESS);
    umask(old);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0711);
    fsim_close_server(x);
    char lock[220];
    snprintf(lock, sizeof lock, "%s/.lock", path);
    unlink(lock);
    CHECK_EQ(rmdir(path), 0);
    CHECK_EQ(rmdir(bad), 0);
    setenv("FASTPORT_RUNTIME_DIR", rundir, 1);
}

/* A port fsim_create_port and SimFilterConnectCommunicationPort refuse, with the reason. */
static void check_refused(const char *name, const char *dir, const char *why)
{
    fsim_server *x = NULL;
    fsim_callbacks none = {0};
    CHECK_EQ(fsim_create_port(name, FSIM_SOCKET, 1, FSIM_ACCESS_OWNER, &none, &x),
             FP_STATUS_ACCESS_DENIED);
    CHECK(strstr(fsim_error_detail(), dir) && strstr(fsim_error_detail(), why));
    if (!strstr(fsim_error_detail(), why))
        fprintf(stderr, "  detail: %s\n", fsim_error_detail());
    SIM_HANDLE h = 0;
    CHECK_EQ(SimFilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &h), FP_E_ACCESSDENIED);
    CHECK(strstr(fsim_error_detail(), dir) && strstr(fsim_error_detail(), why));
    /* the next call starts with no detail */
    CHECK_EQ(SimFilterConnectCommunicationPort("", 0, NULL, 0, NULL, &h), FP_E_INVALIDARG);
    CHECK_EQ(fsim_error_detail()[0], 0);
}

/* Without $FASTPORT_RUNTIME_DIR ports go in $XDG_RUNTIME_DIR/fastport when it is set, and the
 * caller's own directories are checked as strictly as other users': one planted by another user
 * (as root: chown 65534), one others may write to, a symlink, a socket file of another owner are
 * refused, on both sides, with an error naming the directory and the reason. */
static void test_spoofed_runtime_dirs(void)
{
    char xdg[96], own[120], name[64], path[200], tmpdir[64];
    snprintf(xdg, sizeof xdg, "%s/xdg", rundir);
    snprintf(own, sizeof own, "%s/fastport", xdg);
    snprintf(name, sizeof name, "\\Xdg%d", (int)getpid());
    char *saved = getenv("XDG_RUNTIME_DIR") ? strdup(getenv("XDG_RUNTIME_DIR")) : NULL;
    CHECK_EQ(mkdir(xdg, 0700), 0);
    unsetenv("FASTPORT_RUNTIME_DIR");
    setenv("XDG_RUNTIME_DIR", xdg, 1);
    CHECK(strcmp(fsim_runtime_dir(), own) == 0);
    /* created there, found there */
    kstate k;
    struct sockaddr_un a;
    fsim_server *s = port_in_dir(own, name, &k, &a);
    struct stat st;
    CHECK(lstat(own, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0711);
    SIM_HANDLE h = 0;
    if (geteuid() == 0) { /* a socket file that is not the directory owner's */
        CHECK_EQ(lchown(a.sun_path, 65534, 65534), 0);
        CHECK_EQ(SimFilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &h), FP_E_ACCESSDENIED);
        CHECK(strstr(fsim_error_detail(), a.sun_path) &&
              strstr(fsim_error_detail(), "owned by uid 65534"));
    }
    fsim_close_server(s);

    /* others may write to it */
    CHECK_EQ(chmod(own, 0777), 0);
    check_refused(name, own, "mode 0777");
    CHECK_EQ(chmod(own, 0770), 0);
    check_refused(name, own, "mode 0770");
    CHECK_EQ(chmod(own, 0711), 0);
    /* someone else's (what a squatter's directory looks like) */
    if (geteuid() == 0) {
        CHECK_EQ(chown(own, 65534, 65534), 0);
        check_refused(name, own, "owned by uid 65534");
        CHECK_EQ(chown(own, 0, 0), 0);
    }
    /* a symlink to a good directory */
    snprintf(path, sizeof path, "%s/.lock", own);
    unlink(path);
    CHECK_EQ(rmdir(own), 0);
    snprintf(path, sizeof path, "%s/real", xdg);
    CHECK_EQ(mkdir(path, 0711), 0);
    CHECK_EQ(symlink(path, own), 0);
    check_refused(name, own, "not a directory");
    unlink(own);
    rmdir(path);

    /* the attack itself: /tmp/fastport-<uid> made by another user before we came (as root, when
     * no such directory exists yet): our connect refuses it rather than use its fake port */
    sk_default_dir((uint32_t)geteuid(), tmpdir, sizeof tmpdir);
    if (geteuid() == 0 && lstat(tmpdir, &st) != 0) {
        unsetenv("XDG_RUNTIME_DIR");
        CHECK_EQ(mkdir(tmpdir, 0755), 0);
        CHECK_EQ(chown(tmpdir, 65534, 65534), 0);
        check_refused(name, tmpdir, "owned by uid 65534");
        /* with XDG set, our ports go there, but a connect that finds nothing there still refuses
         * the planted directory instead of looking into it */
        setenv("XDG_RUNTIME_DIR", xdg, 1);
        CHECK_EQ(SimFilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &h), FP_E_ACCESSDENIED);
        CHECK(strstr(fsim_error_detail(), tmpdir) != NULL);
        CHECK_EQ(rmdir(tmpdir), 0);
    }
    snprintf(path, sizeof path, "%s/.lock", own);
    unlink(path);
    rmdir(own);
    CHECK_EQ(rmdir(xdg), 0);
    if (saved) {
        setenv("XDG_RUNTIME_DIR", saved, 1);
        free(saved);
    } else {
        unsetenv("XDG_RUNTIME_DIR");
    }
    setenv("FASTPORT_RUNTIME_DIR", rundir, 1);
}

static void test_round_trip(void)
{
    kstate k;
    fsim_server *s = make_port("\\RoundTrip", 1, FSIM_ACCESS_OWNER, &k, 1);
    SIM_HANDLE h = connect_user("\\RoundTrip");
    fsim_client *c = k.last;

    /* send first (the message queues: no get waits), then get */
    sender sd;
    start_sender(&sd, c, "ping", 1, 8, -1);
    msgbuf m;
    uint32_t got = 0;
    CHECK(WAIT_UNTIL(kqueued(c) == 1, 5000));
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_S_OK);
    CHECK_EQ(got, 16 + 4);
    CHECK_EQ(m.h.ReplyLength, 16 + 8);
    CHECK(memcmp(m.body, "ping", 4) == 0);
    reply_to(h, m.h.MessageId, "pong", 0x1234, FP_S_OK);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_SUCCESS);
    CHECK_EQ(sd.reply_len, 4);
    CHECK_EQ(sd.reply_status, 0x1234);
    CHECK(memcmp(sd.small_reply, "pong", 4) == 0);
    reply_to(h, m.h.MessageId, "pong", 0, FP_E_FLT_NO_WAITER_FOR_REPLY); /* answered once */

    /* get first (waits), then send: immediate delivery */
    getter g;
    start_getter(&g, h, 1, 0);
    CHECK(WAIT_UNTIL(fsim_client_pending_gets(c) == 1, 5000)); /* waiting at the kernel */
    start_sender(&sd, c, "second", 1, 8, 2000 * MS);
    pthread_join(g.t, NULL);
    CHECK_EQ(g.hr, FP_S_OK);
    CHECK_EQ(g.filled, 1);
    CHECK(memcmp(g.m[0].body, "second", 6) == 0);
    reply_to(h, g.m[0].h.MessageId, "ok", -5, FP_S_OK);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_SUCCESS);
    CHECK_EQ(sd.reply_status, -5);

    /* no reply expected: ReplyLength 0, the sender returns once delivered, a reply finds none */
    start_sender(&sd, c, "note", 0, 0, -1);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_S_OK);
    CHECK_EQ(m.h.ReplyLength, 0);
    CHECK(memcmp(m.body, "note", 4) == 0);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_SUCCESS);
    reply_to(h, m.h.MessageId, "", 0, FP_E_FLT_NO_WAITER_FOR_REPLY);
    reply_to(h, 987654321, "x", 0, FP_E_FLT_NO_WAITER_FOR_REPLY); /* unknown id */

    /* a reply longer than the kernel's buffer */
    start_sender(&sd, c, "big", 1, 2, -1);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_S_OK);
    CHECK_EQ(m.h.ReplyLength, 18);
    reply_to(h, m.h.MessageId, "abc", 0, FP_E_INSUFFICIENT_BUFFER);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_BUFFER_OVERFLOW);

    /* an undersized get buffer: header + what fits, delivered; the sender still waits */
    start_sender(&sd, c, "0123456789", 1, 4, -1);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, 16 + 4, FSIM_INFINITE, &got), FP_E_INSUFFICIENT_BUFFER);
    CHECK_EQ(got, 20);
    CHECK(memcmp(m.body, "0123", 4) == 0);
    reply_to(h, m.h.MessageId, "done", 0, FP_S_OK);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_SUCCESS);
    CHECK(memcmp(sd.small_reply, "done", 4) == 0);

    /* a batch reply: per-entry results in one call */
    sender s1, s2;
    start_sender(&s1, c, "b1", 1, 4, -1);
    start_sender(&s2, c, "b2", 1, 1, -1);
    msgbuf mm[2];
    tget ge[2] = {{&mm[0].h, sizeof mm[0], 0, 0}, {&mm[1].h, sizeof mm[1], 0, 0}};
    uint32_t filled = 0, total = 0;
    while (total < 2) {
        CHECK_EQ(get_n(h, ge + total, 2 - total, 2000, &filled), FP_S_OK);
        if (!filled)
            break;
        total += filled;
    }
    CHECK_EQ(total, 2);
    replybuf rb[4];
    memset(rb, 0, sizeof rb);
    rb[0].h.MessageId = mm[0].h.MessageId;
    rb[1].h.MessageId = mm[1].h.MessageId;
    rb[2].h.MessageId = 424242;
    SIM_REPLY_ENTRY re[4] = {{&rb[0].h, 16 + 2, 0}, {&rb[1].h, 16 + 2, 0}, {&rb[2].h, 16, 0},
                             {NULL, 16, 0}};
    CHECK_EQ(SimFilterReplyMessages(h, re, 4), FP_S_OK);
    int b1 = memcmp(mm[0].body, "b1", 2) == 0;
    CHECK_EQ(re[b1 ? 0 : 1].hr, FP_S_OK);                   /* b1 accepts 4 bytes */
    CHECK_EQ(re[b1 ? 1 : 0].hr, FP_E_INSUFFICIENT_BUFFER); /* b2 only 1 */
    CHECK_EQ(re[2].hr, FP_E_FLT_NO_WAITER_FOR_REPLY);
    CHECK_EQ(re[3].hr, FP_E_INVALIDARG);
    pthread_join(s1.t, NULL);
    pthread_join(s2.t, NULL);
    CHECK_EQ(s1.st, FP_STATUS_SUCCESS);
    CHECK_EQ(s2.st, FP_STATUS_BUFFER_OVERFLOW);

    /* argument checks still happen before the transport */
    CHECK_EQ(SimFilterGetMessage(h, NULL, 100, 0, &got), FP_E_INVALIDARG);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, 15, 0, &got), FP_E_INVALIDARG);
    CHECK_EQ(SimFilterReplyMessage(h, &rb[0].h, 15), FP_E_INVALIDARG);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got), FP_E_TIMEOUT);

    close_user(h, &k);
    fsim_close_server(s);
}

static void test_send_message(void)
{
    kstate k;
    fsim_server *s = make_port("\\SendMsg", 1, FSIM_ACCESS_OWNER, &k, 1);
    SIM_HANDLE h = connect_user("\\SendMsg");
    char out[16];
    uint32_t ret = 99;
    CHECK_EQ(SimFilterSendMessage(h, "hello", 5, out, sizeof out, &ret), FP_S_OK);
    CHECK_EQ(ret, 5);
    CHECK(memcmp(out, "olleh", 5) == 0);
    CHECK_EQ(SimFilterSendMessage(h, "hello", 5, out, 2, &ret), FP_S_OK);
    CHECK_EQ(ret, 2);
    CHECK_EQ(SimFilterSendMessage(h, "hello", 5, NULL, 0, &ret), FP_S_OK);
    CHECK_EQ(ret, 0);
    CHECK_EQ(SimFilterSendMessage(h, "fail", 4, out, sizeof out, &ret), FP_E_ACCESSDENIED);
    CHECK_EQ(ret, 0);
    CHECK_EQ(SimFilterSendMessage(h, "x", 1, out, sizeof out, NULL), FP_E_INVALIDARG);
    /* the same in steps (a caller that waits in slices), and one walked away from */
    SIM_SEND_OP *op = NULL;
    fp_hresult hr = FP_E_INVALID_HANDLE;
    CHECK_EQ(SimFilterSendMessageStart(h, NULL, 1, 8, &op), FP_E_INVALIDARG);
    CHECK_EQ(SimFilterSendMessageStart(h, "hello", 5, sizeof out, &op), FP_S_OK);
    while (!SimFilterSendMessageWait(op, 10, out, sizeof out, &ret, &hr))
        ;
    SimFilterSendMessageEnd(op);
    CHECK_EQ(hr, FP_S_OK);
    CHECK_EQ(ret, 5);
    CHECK(memcmp(out, "olleh", 5) == 0);
    CHECK_EQ(SimFilterSendMessageStart(h, "fail", 4, sizeof out, &op), FP_S_OK);
    CHECK_EQ(SimFilterSendMessageWait(op, FSIM_INFINITE, out, sizeof out, &ret, &hr), 1);
    SimFilterSendMessageEnd(op);
    CHECK_EQ(hr, FP_E_ACCESSDENIED);
    CHECK_EQ(SimFilterSendMessageStart(h, "abandoned", 9, sizeof out, &op), FP_S_OK);
    SimFilterSendMessageEnd(op); /* its thread finishes it and frees it */
    CHECK_EQ(SimFilterSendMessage(h, "abc", 3, out, sizeof out, &ret), FP_S_OK);
    /* 1 MiB in, 1 MiB out */
    uint8_t *in = malloc(MIB), *big = malloc(MIB);
    for (uint32_t i = 0; i < MIB; i++)
        in[i] = (uint8_t)(i * 31 + (i >> 11));
    CHECK_EQ(SimFilterSendMessage(h, in, MIB, big, MIB, &ret), FP_S_OK);
    CHECK_EQ(ret, MIB);
    int same = 1;
    for (uint32_t i = 0; i < MIB && same; i++)
        same = big[i] == in[MIB - 1 - i];
    CHECK(same);
    free(in);
    free(big);
    close_user(h, &k);
    fsim_close_server(s);

    /* no MessageNotify: E_INVALIDARG */
    s = make_port("\\SendNone", 1, FSIM_ACCESS_OWNER, &k, 0);
    h = connect_user("\\SendNone");
    CHECK_EQ(SimFilterSendMessage(h, "hello", 5, out, sizeof out, &ret), FP_E_INVALIDARG);
    close_user(h, &k);
    fsim_close_server(s);
}

/* FilterSendMessage from many threads of one handle: MessageNotify calls run in parallel (a slow
 * one does not hold up the others), and every answer goes to its own caller. */
typedef struct usend {
    pthread_t t;
    SIM_HANDLE h;
    int id;
    int bad;
} usend;

static void *usend_main(void *p)
{
    usend *u = p;
    for (int i = 0; i < 50; i++) {
        char in[32], out[32];
        int n = snprintf(in, sizeof in, "%s%d-%d", i == 0 ? "slow" : "", u->id, i);
        uint32_t ret = 0;
        if (SimFilterSendMessage(u->h, in, (uint32_t)n, out, sizeof out, &ret) != FP_S_OK ||
            ret != (uint32_t)n)
            u->bad++;
        for (int j = 0; j < n && !u->bad; j++)
            if (out[j] != in[n - 1 - j])
                u->bad++;
    }
    return NULL;
}

static void test_concurrent_sends(void)
{
    kstate k;
    fsim_server *s = make_port("\\ManySends", 1, FSIM_ACCESS_OWNER, &k, 1);
    SIM_HANDLE h = connect_user("\\ManySends");
    usend u[8];
    for (int i = 0; i < 8; i++) {
        u[i] = (usend){0, h, i, 0};
        pthread_create(&u[i].t, NULL, usend_main, &u[i]);
    }
    int bad = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(u[i].t, NULL);
        bad += u[i].bad;
    }
    CHECK_EQ(bad, 0);
    pthread_mutex_lock(&k.lock);
    CHECK(k.max_inside >= 2);
    pthread_mutex_unlock(&k.lock);
    close_user(h, &k);
    fsim_close_server(s);
}

static void test_timeouts_and_credits(void)
{
    kstate k;
    fsim_server *s = make_port("\\Timeouts", 1, FSIM_ACCESS_OWNER, &k, 1);
    SIM_HANDLE h = connect_user("\\Timeouts");
    fsim_client *c = k.last;
    char rep[8];
    uint32_t cap = sizeof rep;
    msgbuf m;
    uint32_t got;

    /* nobody gets: withdrawn, STATUS_TIMEOUT, never delivered later */
    CHECK_EQ(fsim_send(c, "lost", 4, rep, &cap, 20 * MS, NULL), FP_STATUS_TIMEOUT);
    CHECK_EQ(fsim_send(c, "lost2", 5, NULL, NULL, 20 * MS, NULL), FP_STATUS_TIMEOUT);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 30, &got), FP_E_TIMEOUT);

    /* a get that timed out withdrew its credits: a later send is not delivered to it */
    CHECK_EQ(fsim_send(c, "lost3", 5, NULL, NULL, 30 * MS, NULL), FP_STATUS_TIMEOUT);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got), FP_E_TIMEOUT);

    /* a batch get that got 1 of 8 returned: its 7 other credits are gone too */
    getter g;
    start_getter(&g, h, 8, 0);
    CHECK(WAIT_UNTIL(fsim_client_pending_gets(c) == 8, 5000)); /* waiting at the kernel */
    CHECK_EQ(fsim_send(c, "one", 3, NULL, NULL, 1000 * MS, NULL), FP_STATUS_SUCCESS);
    pthread_join(g.t, NULL);
    CHECK_EQ(g.hr, FP_S_OK);
    CHECK_EQ(g.filled, 1);
    CHECK_EQ(fsim_send(c, "nobody", 6, NULL, NULL, 30 * MS, NULL), FP_STATUS_TIMEOUT);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 20, &got), FP_E_TIMEOUT);

    /* delivered but not answered in time: STATUS_TIMEOUT, a late reply gets NO_WAITER */
    sender sd;
    start_sender(&sd, c, "slow", 1, 8, 30 * MS);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_S_OK);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_TIMEOUT);
    reply_to(h, m.h.MessageId, "late", 0, FP_E_FLT_NO_WAITER_FOR_REPLY);

    close_user(h, &k);
    fsim_close_server(s);
}

/* A poll (timeout 0) until it returns a message, for up to 2 s: the QUEUED hint is in flight for
 * a few microseconds after the message was queued. */
static fp_hresult poll_get(SIM_HANDLE h, msgbuf *m)
{
    uint32_t got;
    fp_hresult hr = FP_E_TIMEOUT;
    for (int i = 0; i < 2000 && hr == FP_E_TIMEOUT; i++) {
        hr = SimFilterGetMessage(h, &m->h, sizeof *m, 0, &got);
        if (hr == FP_E_TIMEOUT)
            usleep(1000);
    }
    return hr;
}

/* A get with timeout 0 answers from what the user side knows is queued at the kernel (QUEUED /
 * SK_F_EMPTY), with a round trip only when something may be there. */
static void test_polls(void)
{
    kstate k;
    fsim_server *s = make_port("\\Polls", 1, FSIM_ACCESS_OWNER, &k, 1);
    fsim_client *c = NULL;
    SIM_HANDLE h;
    msgbuf m;
    uint32_t got;
    /* queued before the user ever asked: the first poll finds it */
    h = connect_user("\\Polls");
    c = k.last;
    sender sd;
    start_sender(&sd, c, "early", 0, 0, -1);
    CHECK(WAIT_UNTIL(kqueued(c) == 1, 5000));
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got), FP_S_OK);
    CHECK(memcmp(m.body, "early", 5) == 0);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_SUCCESS);
    /* the queue is empty: polls time out (locally) */
    for (int i = 0; i < 100; i++)
        CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got), FP_E_TIMEOUT);
    /* queued while nobody gets: the QUEUED hint makes the next poll go and fetch it */
    start_sender(&sd, c, "later", 1, 8, -1);
    CHECK_EQ(poll_get(h, &m), FP_S_OK);
    CHECK(memcmp(m.body, "later", 5) == 0);
    reply_to(h, m.h.MessageId, "ok", 0, FP_S_OK);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_SUCCESS);
    /* two queued, a poll batch of 4 takes both */
    sender s2;
    start_sender(&sd, c, "a", 0, 0, -1);
    start_sender(&s2, c, "b", 0, 0, -1);
    CHECK(WAIT_UNTIL(kqueued(c) == 2, 5000));
    msgbuf mm[4];
    tget e[4];
    for (int i = 0; i < 4; i++)
        e[i] = (tget){&mm[i].h, sizeof mm[i], 0, 0};
    uint32_t filled = 0;
    CHECK(WAIT_UNTIL(get_n(h, e, 4, 0, &filled) == FP_S_OK, 2000));
    CHECK_EQ(filled, 2);
    pthread_join(sd.t, NULL);
    pthread_join(s2.t, NULL);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got), FP_E_TIMEOUT);
    /* queued, then withdrawn by its sender's timeout: a poll asks once, finds nothing */
    CHECK_EQ(fsim_send(c, "gone", 4, NULL, NULL, 20 * MS, NULL), FP_STATUS_TIMEOUT);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got), FP_E_TIMEOUT);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got), FP_E_TIMEOUT);
    /* a poll once the kernel's close has reached this side */
    fsim_close_client(c);
    CHECK(WAIT_UNTIL(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got) == FP_E_INVALID_HANDLE, 2000));
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    fsim_close_server(s);
}

static void test_batches_and_many_getters(void)
{
    kstate k;
    fsim_server *s = make_port("\\Batches", 1, FSIM_ACCESS_OWNER, &k, 1);
    SIM_HANDLE h = connect_user("\\Batches");
    fsim_client *c = k.last;

    /* five messages queued (by five no-reply senders); one batch get of 8 takes them all */
    sender q[5];
    for (int i = 0; i < 5; i++) {
        char t[16];
        snprintf(t, sizeof t, "q%d", i);
        start_sender(&q[i], c, t, 0, 0, -1);
    }
    CHECK(WAIT_UNTIL(kqueued(c) == 5, 5000));
    getter g;
    start_getter(&g, h, 8, 2000);
    pthread_join(g.t, NULL);
    CHECK_EQ(g.hr, FP_S_OK);
    CHECK_EQ(g.filled, 5);
    for (int i = 0; i < 5; i++) {
        pthread_join(q[i].t, NULL);
        CHECK_EQ(q[i].st, FP_STATUS_SUCCESS);
    }
    /* a batch get of 2 with 5 queued: 2 now, 3 for the next */
    for (int i = 0; i < 5; i++)
        start_sender(&q[i], c, "r", 0, 0, -1);
    CHECK(WAIT_UNTIL(kqueued(c) == 5, 5000));
    start_getter(&g, h, 2, 2000);
    pthread_join(g.t, NULL);
    CHECK_EQ(g.filled, 2);
    start_getter(&g, h, 8, 2000);
    pthread_join(g.t, NULL);
    CHECK_EQ(g.filled, 3);
    for (int i = 0; i < 5; i++)
        pthread_join(q[i].t, NULL);

    /* six getters wait; three messages: three getters get one each, the rest time out, and
     * nothing is left behind (a later timed send is withdrawn) */
    getter gs[6];
    for (int i = 0; i < 6; i++)
        start_getter(&gs[i], h, 4, 1000);
    CHECK(WAIT_UNTIL(fsim_client_pending_gets(c) == 24, 5000)); /* waiting at the kernel */
    for (int i = 0; i < 3; i++)
        CHECK_EQ(fsim_send(c, "m", 1, NULL, NULL, 3000 * MS, NULL), FP_STATUS_SUCCESS);
    int ok = 0, to = 0, msgs = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(gs[i].t, NULL);
        ok += gs[i].hr == FP_S_OK;
        to += gs[i].hr == FP_E_TIMEOUT;
        msgs += (int)gs[i].filled;
    }
    CHECK_EQ(msgs, 3);
    CHECK_EQ(ok + to, 6);
    CHECK_EQ(fsim_send(c, "after", 5, NULL, NULL, 20 * MS, NULL), FP_STATUS_TIMEOUT);
    close_user(h, &k);
    fsim_close_server(s);
}

/* Gets that time out or are cancelled race deliveries: a message is either returned by a get
 * (its sender saw STATUS_SUCCESS) or withdrawn (STATUS_TIMEOUT), never lost, never both. */
typedef struct race {
    SIM_HANDLE h;
    fsim_client *c;
    atomic_int stop;
    atomic_int received, sent_ok, sent_timeout, bad;
    atomic_uint_fast64_t seen[64]; /* bit per message index */
} race;

static void *race_getter(void *p)
{
    race *r = p;
    unsigned seed = (unsigned)(uintptr_t)&seed;
    while (!atomic_load(&r->stop)) {
        msgbuf m[3];
        tget e[3];
        for (int i = 0; i < 3; i++)
            e[i] = (tget){&m[i].h, sizeof m[i], 0, 0};
        uint32_t n = 0;
        fp_hresult hr = get_n(r->h, e, 1 + rand_r(&seed) % 3, rand_r(&seed) % 3, &n);
        if (hr == FP_S_OK) {
            for (uint32_t i = 0; i < n; i++) {
                uint32_t idx;
                memcpy(&idx, m[i].body, 4);
                uint64_t bit = 1ull << (idx % 64);
                if (atomic_fetch_or(&r->seen[idx / 64], bit) & bit)
                    atomic_fetch_add(&r->bad, 1); /* twice */
            }
            atomic_fetch_add(&r->received, (int)n);
        } else if (hr != FP_E_TIMEOUT && hr != FP_E_OPERATION_ABORTED) {
            atomic_fetch_add(&r->bad, 1);
        }
        if (rand_r(&seed) % 4 == 0)
            usleep(rand_r(&seed) % 200); /* nobody waiting for a while: sends time out */
    }
    return NULL;
}

static void *race_canceller(void *p)
{
    race *r = p;
    while (!atomic_load(&r->stop)) {
        SimFilterCancelIo(r->h, NULL);
        usleep(300);
    }
    return NULL;
}

static void test_cancel_and_timeout_races(void)
{
    kstate k;
    fsim_server *s = make_port("\\Races", 1, FSIM_ACCESS_OWNER, &k, 1);
    race *r = calloc(1, sizeof *r);
    r->h = connect_user("\\Races");
    r->c = k.last;
    pthread_t tg[4], tc;
    for (int i = 0; i < 4; i++)
        pthread_create(&tg[i], NULL, race_getter, r);
    pthread_create(&tc, NULL, race_canceller, r);
    const uint32_t total = 64 * 64;
    unsigned seed = 7;
    for (uint32_t i = 0; i < total; i++) {
        fp_ntstatus st = fsim_send(r->c, &i, 4, NULL, NULL, (rand_r(&seed) % 400) * 1000, NULL);
        if (st == FP_STATUS_SUCCESS)
            atomic_fetch_add(&r->sent_ok, 1);
        else if (st == FP_STATUS_TIMEOUT)
            atomic_fetch_add(&r->sent_timeout, 1);
        else
            atomic_fetch_add(&r->bad, 1);
    }
    atomic_store(&r->stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(tg[i], NULL);
    pthread_join(tc, NULL);
    CHECK_EQ(atomic_load(&r->bad), 0);
    CHECK_EQ(atomic_load(&r->sent_ok) + atomic_load(&r->sent_timeout), (int)total);
    CHECK_EQ(atomic_load(&r->received), atomic_load(&r->sent_ok));
    CHECK(atomic_load(&r->sent_ok) > 0);
    fprintf(stderr, "  races: %d delivered, %d withdrawn\n", atomic_load(&r->sent_ok),
            atomic_load(&r->sent_timeout));
    /* afterwards nothing is left at the kernel: a timed send is withdrawn */
    CHECK_EQ(fsim_send(r->c, "z", 1, NULL, NULL, 20 * MS, NULL), FP_STATUS_TIMEOUT);
    close_user(r->h, &k);
    free(r);
    fsim_close_server(s);
}

static void test_cancel_and_disconnect(void)
{
    kstate k;
    fsim_server *s = make_port("\\Cancel", 1, FSIM_ACCESS_OWNER, &k, 1);
    SIM_HANDLE h = connect_user("\\Cancel");
    fsim_client *c = kget_last(&k);
    enum fsim_transport t = FSIM_INPROC;
    CHECK_EQ(SimFilterGetTransport(h, &t), FP_S_OK);
    CHECK_EQ(t, FSIM_SOCKET);

    /* cancel of a blocked get; its credits are withdrawn */
    getter g;
    start_getter(&g, h, 4, 0);
    CHECK(WAIT_UNTIL(fsim_client_pending_gets(c) == 4, 5000)); /* waiting at the kernel */
    CHECK_EQ(SimFilterCancelIo(h, NULL), FP_S_OK);
    /* (under heavy load the getter may not have been waiting yet: cancel again until it is) */
    CHECK(WAIT_UNTIL((SimFilterCancelIo(h, NULL), atomic_load(&g.done)), 3000));
    pthread_join(g.t, NULL);
    CHECK_EQ(g.hr, FP_E_OPERATION_ABORTED);
    CHECK_EQ(g.filled, 0);
    CHECK_EQ(fsim_send(c, "x", 1, NULL, NULL, 20 * MS, NULL), FP_STATUS_TIMEOUT);

    /* user closes while a sender waits for its reply and another is queued */
    sender s1, s2;
    start_sender(&s1, c, "one", 1, 8, -1);
    msgbuf m;
    uint32_t got;
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_S_OK);
    start_sender(&s2, c, "two", 1, 8, -1);
    CHECK(WAIT_UNTIL(kqueued(c) == 1, 5000));
    uint64_t t0 = now_ms();
    close_user(h, &k);
    pthread_join(s1.t, NULL);
    pthread_join(s2.t, NULL);
    CHECK_EQ(s1.st, FP_STATUS_PORT_DISCONNECTED);
    CHECK_EQ(s2.st, FP_STATUS_PORT_DISCONNECTED);
    CHECK(s1.done_ms - t0 < 1000 && s2.done_ms - t0 < 1000);
    CHECK(!fsim_client_connected(c));
    CHECK_EQ(fsim_send(c, "x", 1, NULL, NULL, -1, NULL), FP_STATUS_PORT_DISCONNECTED);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got), FP_E_INVALID_HANDLE);
    fsim_client_release(c);

    /* the kernel closes the client port: a waiting get and every later call see INVALID_HANDLE */
    h = connect_user("\\Cancel");
    c = kget_last(&k);
    start_getter(&g, h, 4, 0);
    CHECK(WAIT_UNTIL(fsim_client_pending_gets(c) == 4, 5000)); /* waiting at the kernel */
    fsim_close_client(c);
    pthread_join(g.t, NULL);
    CHECK_EQ(g.hr, FP_E_INVALID_HANDLE);
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 0, &got), FP_E_INVALID_HANDLE);
    reply_to(h, 1, "x", 0, FP_E_INVALID_HANDLE);
    char out[4];
    CHECK_EQ(SimFilterSendMessage(h, "abc", 3, out, sizeof out, &got), FP_E_INVALID_HANDLE);
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    CHECK_EQ(kget_disconnects(&k), 2);
    fsim_client_release(c);

    /* fsim_disconnect_all (filter unload) */
    SIM_HANDLE a = connect_user("\\Cancel");
    fsim_disconnect_all(s);
    CHECK_EQ(SimFilterGetMessage(a, &m.h, sizeof m, 2000, &got), FP_E_INVALID_HANDLE);
    CHECK_EQ(SimFilterClose(a), FP_S_OK);
    CHECK_EQ(kget_disconnects(&k), 3);
    fsim_close_server(s);
}

/* 1 MiB messages and replies; run with default buffers and with a 64 KiB socket buffer (what a
 * non-root process may be capped to). */
typedef struct bigsend {
    pthread_t t;
    fsim_client *c;
    uint8_t *data, *reply;
    uint32_t reply_len;
    fp_ntstatus st;
} bigsend;

static void *bigsend_main(void *p)
{
    bigsend *b = p;
    b->reply_len = MIB;
    b->st = fsim_send(b->c, b->data, MIB, b->reply, &b->reply_len, 10000 * MS, NULL);
    return NULL;
}

static void test_one_mib(const char *bufsize)
{
    if (bufsize)
        setenv("FASTPORT_SOCK_BUFSIZE", bufsize, 1);
    kstate k;
    fsim_server *s = make_port("\\OneMiB", 1, FSIM_ACCESS_OWNER, &k, 1);
    SIM_HANDLE h = connect_user("\\OneMiB");
    enum { N = 3 };
    bigsend b[N];
    for (int j = 0; j < N; j++) {
        b[j].c = k.last;
        b[j].data = malloc(MIB);
        b[j].reply = malloc(MIB);
        for (uint32_t i = 0; i < MIB; i++)
            b[j].data[i] = (uint8_t)(i * 13 + j + (i >> 9));
        pthread_create(&b[j].t, NULL, bigsend_main, &b[j]);
    }
    CHECK(WAIT_UNTIL(kqueued(k.last) == N, 5000)); /* one batch get takes them, a frame each */
    struct bigmsg {
        FP_MESSAGE_HEADER h;
        uint8_t body[MIB];
    };
    struct bigmsg *m = malloc(N * sizeof *m);
    tget e[N];
    for (int j = 0; j < N; j++)
        e[j] = (tget){&m[j].h, sizeof m[j], 0, 0};
    uint32_t total = 0, filled;
    while (total < N) {
        fp_hresult hr = get_n(h, e + total, N - total, 5000, &filled);
        CHECK_EQ(hr, FP_S_OK);
        if (hr != FP_S_OK)
            break;
        total += filled;
    }
    CHECK_EQ(total, N);
    struct bigrep {
        FP_REPLY_HEADER h;
        uint8_t body[MIB];
    } *r = malloc(N * sizeof *r);
    SIM_REPLY_ENTRY re[N];
    for (uint32_t j = 0; j < total; j++) {
        CHECK_EQ(e[j].hr, FP_S_OK);
        CHECK_EQ(e[j].length, 16 + MIB);
        CHECK_EQ(m[j].h.ReplyLength, 16 + MIB);
        int which = -1;
        for (int x = 0; x < N; x++)
            if (memcmp(m[j].body, b[x].data, MIB) == 0)
                which = x;
        CHECK(which >= 0);
        r[j].h.MessageId = m[j].h.MessageId;
        r[j].h.Status = which;
        for (uint32_t i = 0; i < MIB; i++)
            r[j].body[i] = (uint8_t)~m[j].body[i];
        re[j] = (SIM_REPLY_ENTRY){&r[j].h, 16 + MIB, 0};
    }
    /* one call: 3 MiB of replies go as one frame each (SK_FRAME_MAX), results per entry */
    CHECK_EQ(SimFilterReplyMessages(h, re, total), FP_S_OK);
    for (uint32_t j = 0; j < total; j++)
        CHECK_EQ(re[j].hr, FP_S_OK);
    for (int j = 0; j < N; j++) {
        pthread_join(b[j].t, NULL);
        CHECK_EQ(b[j].st, FP_STATUS_SUCCESS);
        CHECK_EQ(b[j].reply_len, MIB);
        int same = 1;
        for (uint32_t i = 0; i < MIB && same; i++)
            same = (uint8_t)(b[j].reply[i] ^ b[j].data[i]) == 0xFF;
        CHECK(same);
        free(b[j].data);
        free(b[j].reply);
    }
    /* a reply larger than 1 MiB is refused locally */
    CHECK_EQ(SimFilterReplyMessage(h, &r->h, 16 + MIB + 1), FP_E_INVALIDARG);
    free(r);
    free(m);
    close_user(h, &k);
    fsim_close_server(s);
    unsetenv("FASTPORT_SOCK_BUFSIZE");
}

/* ---- processes ----
 * A child is this program re-executed with "--child ROLE NAME FD" (fork, then exec: a fresh
 * process, so no state or lock of this multi-threaded one is inherited, and TSAN copes). FD is the
 * write end of a pipe the child reports on. */

static pid_t spawn(const char *role, const char *name, int fd)
{
    char fds[16];
    snprintf(fds, sizeof fds, "%d", fd);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", "test_socket", "--child", role, name, fds, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The child's exit status; a child still running after 30 s (the hang these tests look for) is
 * killed and the check fails. */
static void wait_child(pid_t pid, int *status)
{
    int exited = WAIT_UNTIL(waitpid(pid, status, WNOHANG) == pid, 30000);
    CHECK(exited);
    if (!exited) {
        kill(pid, SIGKILL);
        while (waitpid(pid, status, 0) < 0 && errno == EINTR)
            ;
    }
}

static void stress_user(const char *name, int fd);

static int child_main(const char *role, const char *name, int fd)
{
    if (strcmp(role, "getter") == 0) { /* connects, takes one message, says "g", waits */
        SIM_HANDLE h;
        if (SimFilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &h) != FP_S_OK)
            return 1;
        msgbuf m;
        uint32_t got;
        if (SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got) != FP_S_OK)
            return 2;
        (void)!write(fd, "g", 1);
        for (;;)
            pause();
    }
    if (strcmp(role, "kernel") == 0) { /* creates the port, says "r"; "p" once 4 gets wait */
        kstate k;
        memset(&k, 0, sizeof k);
        pthread_mutex_init(&k.lock, NULL);
        fsim_callbacks cb = {on_connect, on_disconnect, on_message, &k};
        fsim_server *s;
        if (fsim_create_port(name, FSIM_SOCKET, 4, FSIM_ACCESS_OWNER, &cb, &s) != 0)
            return 1;
        (void)!write(fd, "r", 1);
        for (;;) {
            fsim_client *c = kget_last(&k);
            int pending = c && fsim_client_pending_gets(c) >= 4;
            if (c)
                fsim_client_release(c);
            if (pending)
                break;
            usleep(1000);
        }
        (void)!write(fd, "p", 1);
        for (;;)
            pause();
    }
    if (strcmp(role, "nobody") == 0) { /* as uid 65534: connect, round trip; writes the HRESULT */
        fp_hresult hr = (fp_hresult)0xFFFFFFFF;
        if (setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0) {
            SIM_HANDLE h;
            hr = SimFilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &h);
            if (hr == FP_S_OK) {
                char out[8];
                uint32_t ret = 0;
                hr = SimFilterSendMessage(h, "xyz", 3, out, sizeof out, &ret);
                if (hr == FP_S_OK && (ret != 3 || memcmp(out, "zyx", 3) != 0))
                    hr = FP_E_INVALIDARG;
                SimFilterClose(h);
            }
        }
        (void)!write(fd, &hr, sizeof hr);
        return 0;
    }
    if (strcmp(role, "bigget") == 0) { /* says "w", then one get of four 1 MiB buffers */
        SIM_HANDLE h;
        if (SimFilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &h) != FP_S_OK)
            return 1;
        (void)!write(fd, "w", 1);
        static uint8_t bufs[4][16 + MIB];
        tget e[4];
        for (int i = 0; i < 4; i++)
            e[i] = (tget){(FP_MESSAGE_HEADER *)(void *)bufs[i], sizeof bufs[i], 0, 0};
        uint32_t n;
        get_n(h, e, 4, FSIM_INFINITE, &n);
        for (;;)
            pause();
    }
    if (strcmp(role, "nobodykernel") == 0) { /* uid 65534, default runtime dir, an open port */
        unsetenv("FASTPORT_RUNTIME_DIR");
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
            return 1;
        kstate k;
        memset(&k, 0, sizeof k);
        pthread_mutex_init(&k.lock, NULL);
        fsim_callbacks cb = {on_connect, on_disconnect, on_message, &k};
        fsim_server *s;
        if (fsim_create_port(name, FSIM_SOCKET, 4, FSIM_ACCESS_EVERYONE, &cb, &s) != 0)
            return 2;
        (void)!write(fd, "r", 1);
        for (;;)
            pause();
    }
    if (strcmp(role, "stress") == 0) {
        stress_user(name, fd);
        return failed ? (failed > 99 ? 99 : failed) : 0;
    }
    return 126;
}

/* The user process is killed with -9 while kernel senders wait: they are told promptly. */
static void test_kill_9_client(void)
{
    kstate k;
    fsim_server *s = make_port("\\Kill9", 1, FSIM_ACCESS_OWNER, &k, 1);
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = spawn("getter", "\\Kill9", p[1]);
    close(p[1]);
    CHECK(WAIT_UNTIL(kget_connects(&k) == 1, 5000));
    fsim_client *c = kget_last(&k);
    CHECK_EQ(fsim_client_peer_pid(c), pid);
    sender s1, s2;
    start_sender(&s1, c, "one", 1, 8, -1);
    char ch = 0;
    CHECK_EQ(read(p[0], &ch, 1), 1);
    start_sender(&s2, c, "two", 1, 8, -1); /* queued: the child gets no more */
    CHECK(WAIT_UNTIL(kqueued(c) == 1, 5000));
    uint64_t t0 = now_ms();
    kill(pid, SIGKILL);
    pthread_join(s1.t, NULL);
    pthread_join(s2.t, NULL);
    CHECK_EQ(s1.st, FP_STATUS_PORT_DISCONNECTED);
    CHECK_EQ(s2.st, FP_STATUS_PORT_DISCONNECTED);
    CHECK(s1.done_ms - t0 < 1000);
    CHECK(WAIT_UNTIL(kget_disconnects(&k) == 1, 2000));
    fsim_client_release(c);
    int status;
    wait_child(pid, &status);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    close(p[0]);
    fsim_close_server(s);
}

/* fork(): the child inherits the connection (its socket is shared with the parent) but not its
 * receiver thread. What the child does with it (a get, a send, a close) must neither end the
 * parent's connection nor hang the child; the parent goes on receiving. */
static void test_fork_child_leaves_connection(void)
{
    kstate k;
    fsim_server *s = make_port("\\Forked", 1, FSIM_ACCESS_OWNER, &k, 1);
    SIM_HANDLE h = connect_user("\\Forked");
    fsim_client *c = kget_last(&k);
    getter g;
    start_getter(&g, h, 1, 0); /* a get pending at the kernel across the fork */
    CHECK(WAIT_UNTIL(fsim_client_pending_gets(c) == 1, 5000));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        msgbuf m;
        char out[8];
        uint32_t ret = 0;
        int ok = SimFilterGetMessage(h, &m.h, sizeof m, 0, NULL) == FP_E_INVALID_HANDLE &&
                 SimFilterSendMessage(h, "ping", 4, out, sizeof out, &ret) ==
                     FP_E_INVALID_HANDLE &&
                 SimFilterCancelIo(h, NULL) == FP_E_INVALID_HANDLE &&
                 SimFilterClose(h) == FP_S_OK;
        _exit(ok ? 0 : 1);
    }
    int status;
    wait_child(pid, &status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ(kget_disconnects(&k), 0);
    CHECK(fsim_client_connected(c));
    CHECK_EQ(fsim_client_pending_gets(c), 1); /* the child's cancel never reached the kernel */
    sender sd;
    start_sender(&sd, c, "after", 1, 8, -1);
    pthread_join(g.t, NULL);
    CHECK_EQ(g.hr, FP_S_OK);
    CHECK(memcmp(g.m[0].body, "after", 5) == 0);
    reply_to(h, g.m[0].h.MessageId, "ok", 0, FP_S_OK);
    pthread_join(sd.t, NULL);
    CHECK_EQ(sd.st, FP_STATUS_SUCCESS);
    char out[8];
    uint32_t ret = 0;
    CHECK_EQ(SimFilterSendMessage(h, "abc", 3, out, sizeof out, &ret), FP_S_OK);
    CHECK_EQ(ret, 3);
    fsim_client_release(c);
    close_user(h, &k);
    fsim_close_server(s);
}

/* The kernel side's objects in a forked child: closing them there leaves the parent's port
 * listening (its socket file in place) and its connections up. */
static void test_fork_child_leaves_port(void)
{
    kstate k;
    fsim_server *s = make_port("\\ForkedPort", 2, FSIM_ACCESS_OWNER, &k, 1);
    SIM_HANDLE h = connect_user("\\ForkedPort");
    fsim_client *c = kget_last(&k);
    char path[sizeof(struct sockaddr_un)];
    sock_path("\\ForkedPort", path, sizeof path);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        fsim_close_client(c);
        fsim_disconnect_all(s);
        fsim_close_server(s);
        _exit(0);
    }
    int status;
    wait_child(pid, &status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ(kget_disconnects(&k), 0);
    CHECK(fsim_client_connected(c));
    struct stat st;
    CHECK_EQ(lstat(path, &st), 0);
    char out[8];
    uint32_t ret = 0;
    CHECK_EQ(SimFilterSendMessage(h, "abc", 3, out, sizeof out, &ret), FP_S_OK);
    CHECK_EQ(ret, 3);
    SIM_HANDLE h2; /* and the port still accepts */
    h2 = connect_user("\\ForkedPort");
    CHECK_EQ(kget_connects(&k), 2);
    fsim_client_release(c);
    close_user(h2, &k);
    close_user(h, &k);
    fsim_close_server(s);
    CHECK(lstat(path, &st) != 0); /* closed here, in its own process: the file goes */
}

/* The kernel's process: creates the port, says "r", waits to be killed. */
static pid_t spawn_kernel(const char *name, int *rfd)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = spawn("kernel", name, p[1]);
    close(p[1]);
    *rfd = p[0];
    return pid;
}

static void test_kernel_process_dies(void)
{
    int rfd;
    pid_t pid = spawn_kernel("\\KernelDies", &rfd);
    char ch = 0;
    CHECK_EQ(read(rfd, &ch, 1), 1);
    /* a live port of another process: collision */
    fsim_server *x = NULL;
    fsim_callbacks none = {0};
    CHECK_EQ(fsim_create_port("\\KernelDies", FSIM_SOCKET, 1, FSIM_ACCESS_OWNER, &none, &x),
             FP_STATUS_OBJECT_NAME_COLLISION);
    SIM_HANDLE h = connect_user("\\KernelDies");
    char out[8];
    uint32_t ret;
    CHECK_EQ(SimFilterSendMessage(h, "abc", 3, out, sizeof out, &ret), FP_S_OK);
    CHECK(ret == 3 && memcmp(out, "cba", 3) == 0);
    getter g;
    start_getter(&g, h, 4, 0);
    CHECK_EQ(read(rfd, &ch, 1), 1); /* the kernel sees the 4 gets waiting */
    CHECK_EQ(ch, 'p');
    close(rfd);
    uint64_t t0 = now_ms();
    kill(pid, SIGKILL);
    pthread_join(g.t, NULL);
    CHECK_EQ(g.hr, FP_E_INVALID_HANDLE);
    CHECK(now_ms() - t0 < 1000);
    msgbuf m;
    uint32_t got;
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, FSIM_INFINITE, &got), FP_E_INVALID_HANDLE);
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    int status;
    wait_child(pid, &status);
    /* its socket file is stale now: connecting says not found, a new port replaces it */
    CHECK_EQ(SimFilterConnectCommunicationPort("\\KernelDies", 0, NULL, 0, NULL, &h),
             FP_E_FILE_NOT_FOUND);
    CHECK_EQ(fsim_create_port("\\KernelDies", FSIM_SOCKET, 1, FSIM_ACCESS_OWNER, &none, &x),
             FP_STATUS_SUCCESS);
    h = connect_user("\\KernelDies");
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    fsim_close_server(x);
}

/* Connects as uid/gid 65534 in a child; returns the HRESULT (0 after a round trip). */
static fp_hresult connect_as_nobody(const char *name)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = spawn("nobody", name, p[1]);
    close(p[1]);
    fp_hresult hr = (fp_hresult)0xEEEEEEEE;
    CHECK_EQ(read(p[0], &hr, sizeof hr), sizeof hr);
    close(p[0]);
    int status;
    wait_child(pid, &status);
    return hr;
}

static void test_other_uid(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "  (not root: the other-uid tests are skipped)\n");
        return;
    }
    kstate k, ke;
    fsim_server *s = make_port("\\OwnerOnly", 4, FSIM_ACCESS_OWNER, &k, 1);
    fsim_server *e = make_port("\\Everyone", 4, FSIM_ACCESS_EVERYONE, &ke, 1);
    /* the socket file's mode stops it */
    CHECK_EQ(connect_as_nobody("\\OwnerOnly"), FP_E_ACCESSDENIED);
    /* and with the file opened up, SO_PEERCRED still does */
    char path[200];
    sock_path("\\OwnerOnly", path, sizeof path);
    CHECK(chmod(path, 0666) == 0);
    CHECK_EQ(connect_as_nobody("\\OwnerOnly"), FP_E_ACCESSDENIED);
    pthread_mutex_lock(&k.lock);
    CHECK_EQ(k.connects, 0);
    pthread_mutex_unlock(&k.lock);
    /* an everyone port admits it, and sees who it is */
    CHECK_EQ(connect_as_nobody("\\Everyone"), FP_S_OK);
    pthread_mutex_lock(&ke.lock);
    CHECK_EQ(ke.connects, 1);
    CHECK_EQ(ke.peer_uid, 65534);
    pthread_mutex_unlock(&ke.lock);
    CHECK(WAIT_UNTIL(kget_disconnects(&ke) == 1, 2000));
    fsim_close_server(s);
    fsim_close_server(e);
}

/* A user process that stops reading (SIGSTOP) while its gets hold credits for 4 MiB of messages:
 * deliveries never block the kernel's senders (the frames wait in the backlog, a 64 KiB socket
 * buffer here), their timeouts still fire, and killing the process ends it all. */
static int kcredits(fsim_client *c)
{
    pthread_mutex_lock(&c->lock);
    int n = (int)c->credits;
    pthread_mutex_unlock(&c->lock);
    return n;
}

static void *bigsend_timed(void *p)
{
    bigsend *b = p;
    b->reply_len = 8;
    b->st = fsim_send(b->c, b->data, MIB, b->reply, &b->reply_len, 300 * MS, NULL);
    return NULL;
}

static void test_stopped_user(void)
{
    setenv("FASTPORT_SOCK_BUFSIZE", "65536", 1);
    kstate k;
    fsim_server *s = make_port("\\Stopped", 1, FSIM_ACCESS_OWNER, &k, 1);
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = spawn("bigget", "\\Stopped", p[1]);
    close(p[1]);
    char ch = 0;
    CHECK_EQ(read(p[0], &ch, 1), 1);
    close(p[0]);
    CHECK(WAIT_UNTIL(kget_connects(&k) == 1, 5000));
    fsim_client *c = kget_last(&k);
    CHECK(WAIT_UNTIL(kcredits(c) == 4, 5000));
    kill(pid, SIGSTOP);
    bigsend b[4];
    uint8_t *data = calloc(1, MIB);
    uint64_t t0 = now_ms();
    for (int i = 0; i < 4; i++) {
        b[i].c = c;
        b[i].data = data;
        b[i].reply = malloc(8);
        pthread_create(&b[i].t, NULL, bigsend_timed, &b[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(b[i].t, NULL);
        CHECK_EQ(b[i].st, FP_STATUS_TIMEOUT); /* delivered (credits), never answered */
        free(b[i].reply);
    }
    CHECK(now_ms() - t0 < 3000);
    CHECK(fsim_client_connected(c));
    kill(pid, SIGKILL);
    CHECK(WAIT_UNTIL(kget_disconnects(&k) == 1, 3000));
    CHECK(!fsim_client_connected(c));
    int status;
    wait_child(pid, &status);
    free(data);
    fsim_client_release(c);
    fsim_close_server(s);
    unsetenv("FASTPORT_SOCK_BUFSIZE");
}

/* Without $FASTPORT_RUNTIME_DIR a port of another user is found in its /tmp/fastport-<uid>. */
static void test_other_users_dir(void)
{
    if (geteuid() != 0)
        return;
    char name[64], dir[64];
    snprintf(name, sizeof name, "\\NobodysPort%d", (int)getpid());
    sk_default_dir(65534, dir, sizeof dir);
    struct stat st;
    int existed = stat(dir, &st) == 0;
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = spawn("nobodykernel", name, p[1]);
    close(p[1]);
    char ch = 0;
    CHECK_EQ(read(p[0], &ch, 1), 1);
    close(p[0]);
    unsetenv("FASTPORT_RUNTIME_DIR");
    SIM_HANDLE h = connect_user(name);
    char out[8];
    uint32_t ret = 0;
    CHECK_EQ(SimFilterSendMessage(h, "abc", 3, out, sizeof out, &ret), FP_S_OK);
    CHECK(ret == 3 && memcmp(out, "cba", 3) == 0);
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    setenv("FASTPORT_RUNTIME_DIR", rundir, 1);
    kill(pid, SIGKILL);
    int status;
    wait_child(pid, &status);
    struct sockaddr_un a;
    sk_port_path(dir, name, &a);
    unlink(a.sun_path);
    if (!existed) {
        char lock[80];
        snprintf(lock, sizeof lock, "%s/.lock", dir);
        unlink(lock);
        rmdir(dir);
    }
}

/* ---- garbage on the wire: the other side hangs up, nobody crashes ---- */

static int raw_connect(const char *name)
{
    struct sockaddr_un a;
    sk_port_path(rundir, name, &a);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int raw_hello(int fd, const char *name)
{
    struct {
        sk_hdr h;
        sk_hello hello;
        char name[64];
    } f;
    memset(&f, 0, sizeof f);
    uint32_t n = (uint32_t)strlen(name);
    f.h = (sk_hdr){(uint32_t)(sizeof f.h + sizeof f.hello + n), SK_HELLO, 0, SK_MAGIC, SK_VERSION, 0};
    f.hello = (sk_hello){n, 0};
    memcpy(f.name, name, n);
    if (send(fd, &f, f.h.len, MSG_NOSIGNAL) != (ssize_t)f.h.len)
        return -1;
    sk_hdr a;
    if (recv(fd, &a, sizeof a, 0) != sizeof a || a.type != SK_HELLO_ACK)
        return -1;
    return a.hr;
}

/* 1 if the peer hung up (EOF) within 2 s */
static int hung_up(int fd)
{
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return 1;
        if (r < 0)
            return 0;
    }
}

static void test_garbage_to_kernel(void)
{
    kstate k;
    fsim_server *s = make_port("\\Garbage", 8, FSIM_ACCESS_OWNER, &k, 1);
    struct {
        const char *what;
        uint8_t bytes[64];
        size_t len;
    } cases[] = {
        {"unknown type", {0}, 0},
        {"short record", {1, 2, 3}, 3},
        {"len too small", {0}, 0},
        {"len too large", {0}, 0},
        {"get of 0", {0}, 0},
        {"reply overrun", {0}, 0},
    };
    sk_hdr h;
    h = (sk_hdr){24, 77, 0, 0, 0, 0};
    memcpy(cases[0].bytes, &h, 24), cases[0].len = 24;
    h = (sk_hdr){10, SK_GET, 0, 1, 0, 0};
    memcpy(cases[2].bytes, &h, 24), cases[2].len = 24;
    h = (sk_hdr){SK_FRAME_MAX + 1, SK_SEND, 0, 0, 0, 0};
    memcpy(cases[3].bytes, &h, 24), cases[3].len = 24;
    h = (sk_hdr){24, SK_GET, 0, 0, 0, 0};
    memcpy(cases[4].bytes, &h, 24), cases[4].len = 24;
    h = (sk_hdr){40, SK_REPLY, 0, 1, 0, 0};
    memcpy(cases[5].bytes, &h, 24);
    sk_reply_ent re = {1000, 0};
    memcpy(cases[5].bytes + 24, &re, 8), cases[5].len = 40;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = raw_connect("\\Garbage");
        CHECK(fd >= 0);
        CHECK_EQ(raw_hello(fd, "\\Garbage"), FP_S_OK);
        CHECK_EQ(send(fd, cases[i].bytes, cases[i].len, MSG_NOSIGNAL), (ssize_t)cases[i].len);
        if (!hung_up(fd))
            fprintf(stderr, "  not disconnected after: %s\n", cases[i].what);
        CHECK(WAIT_UNTIL(kget_disconnects(&k) == (int)i + 1, 2000));
        close(fd);
    }
    /* a frame cut short by the peer's death (EOF inside a frame) */
    int fd = raw_connect("\\Garbage");
    CHECK_EQ(raw_hello(fd, "\\Garbage"), FP_S_OK);
    h = (sk_hdr){5000, SK_SEND, 0, 0, 0, 1};
    CHECK_EQ(send(fd, &h, sizeof h, MSG_NOSIGNAL), (ssize_t)sizeof h);
    close(fd);
    int base = (int)(sizeof cases / sizeof cases[0]);
    CHECK(WAIT_UNTIL(kget_disconnects(&k) == base + 1, 2000));
    /* a bad hello, the wrong port name, a silent peer: refused without a client */
    fd = raw_connect("\\Garbage");
    CHECK_EQ(send(fd, "hello?", 6, MSG_NOSIGNAL), 6);
    CHECK(hung_up(fd));
    close(fd);
    fd = raw_connect("\\Garbage");
    CHECK_EQ(raw_hello(fd, "\\Other"), FP_E_FILE_NOT_FOUND);
    close(fd);
    CHECK_EQ(k.connects, base + 1);
    /* the port still works */
    SIM_HANDLE hh = connect_user("\\Garbage");
    char out[4];
    uint32_t ret;
    CHECK_EQ(SimFilterSendMessage(hh, "ab", 2, out, sizeof out, &ret), FP_S_OK);
    close_user(hh, &k);
    fsim_close_server(s);
}

/* A fake kernel side: answers the hello with `ack_hr`, then sends `frame` (if any). */
typedef struct fake {
    pthread_t t;
    int lfd;
    fp_hresult ack_hr;
    const void *frame;
    size_t frame_len;
} fake;

static void *fake_main(void *p)
{
    fake *f = p;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    char buf[4096];
    (void)!recv(fd, buf, sizeof buf, 0);
    sk_hdr a = {24, SK_HELLO_ACK, 0, 0, f->ack_hr, 0};
    (void)!send(fd, &a, sizeof a, MSG_NOSIGNAL);
    if (f->frame) {
        /* wait for the user's GET, then answer with garbage */
        (void)!recv(fd, buf, sizeof buf, 0);
        (void)!send(fd, f->frame, f->frame_len, MSG_NOSIGNAL);
    }
    (void)!recv(fd, buf, sizeof buf, 0); /* until the user hangs up */
    close(fd);
    return NULL;
}

static void fake_start(fake *f, const char *name, fp_hresult ack_hr, const void *frame, size_t len)
{
    memset(f, 0, sizeof *f);
    struct sockaddr_un a;
    sk_port_path(rundir, name, &a);
    unlink(a.sun_path);
    f->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    CHECK_EQ(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_EQ(listen(f->lfd, 4), 0);
    f->ack_hr = ack_hr;
    f->frame = frame;
    f->frame_len = len;
    pthread_create(&f->t, NULL, fake_main, f);
}

static void fake_stop(fake *f, const char *name)
{
    pthread_join(f->t, NULL);
    close(f->lfd);
    struct sockaddr_un a;
    sk_port_path(rundir, name, &a);
    unlink(a.sun_path);
}

static void test_garbage_to_user(void)
{
    fake f;
    SIM_HANDLE h = 0;
    /* a connect refused with the kernel's code */
    fake_start(&f, "\\Fake", FP_E_CONNECTION_COUNT_LIMIT, NULL, 0);
    CHECK_EQ(SimFilterConnectCommunicationPort("\\Fake", 0, NULL, 0, NULL, &h),
             FP_E_CONNECTION_COUNT_LIMIT);
    fake_stop(&f, "\\Fake");
    /* messages for a get nobody made; a truncated message entry; an unknown frame type */
    struct {
        sk_hdr h;
        sk_msg_ent m;
        char data[8];
    } bad1 = {{sizeof bad1, SK_MSGS, 0, 1, 0, 0}, {999, 1, 0, 8, SK_LAST, 0}, "12345678"},
      bad2 = {{sizeof bad2, SK_MSGS, 0, 1, 0, 0}, {1, 1, 0, 4000, SK_LAST, 0}, "12345678"},
      bad3 = {{24, 99, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0}, ""};
    const void *frames[] = {&bad1, &bad2, &bad3};
    size_t lens[] = {sizeof bad1, sizeof bad2, 24};
    for (int i = 0; i < 3; i++) {
        fake_start(&f, "\\Fake", FP_S_OK, frames[i], lens[i]);
        h = connect_user("\\Fake");
        msgbuf m;
        uint32_t got;
        CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 3000, &got), FP_E_INVALID_HANDLE);
        CHECK_EQ(SimFilterClose(h), FP_S_OK);
        fake_stop(&f, "\\Fake");
    }
    /* a kernel side that sends the start of a frame and no more: hung up on after the peer
     * timeout ($FASTPORT_SOCK_PEER_TIMEOUT_MS, 200 ms here, read at connect), which ends the get */
    sk_hdr half = {5000, SK_MSGS, 0, 1, 0, 0};
    fake_start(&f, "\\Fake", FP_S_OK, &half, sizeof half);
    setenv("FASTPORT_SOCK_PEER_TIMEOUT_MS", "200", 1);
    h = connect_user("\\Fake");
    unsetenv("FASTPORT_SOCK_PEER_TIMEOUT_MS");
    msgbuf m;
    uint32_t got;
    uint64_t t0 = now_ms();
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 60000, &got), FP_E_INVALID_HANDLE);
    CHECK(now_ms() - t0 < 30000); /* not the get's own timeout withdrawing it */
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    fake_stop(&f, "\\Fake");
}

/* ---- waits that wake for the caller's interrupt hook (SimSetInterruptHook) ---- */

static atomic_int hook_calls;
static int hook_third(void *arg) /* gives up from its third call on, as Python's stays tripped */
{
    CHECK(arg == &hook_calls);
    return atomic_fetch_add(&hook_calls, 1) + 1 >= 3;
}

static int listen_at(const char *name)
{
    struct sockaddr_un a;
    sk_port_path(rundir, name, &a);
    unlink(a.sun_path);
    int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    CHECK_EQ(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_EQ(listen(lfd, 4), 0);
    return lfd;
}

typedef struct greeter { /* accepts one connection and answers its hello, then says no more */
    pthread_t t;
    int lfd, fd;
} greeter;

static void *greeter_main(void *p)
{
    greeter *g = p;
    g->fd = accept(g->lfd, NULL, NULL);
    char buf[512];
    (void)!recv(g->fd, buf, sizeof buf, 0);
    sk_hdr a = {24, SK_HELLO_ACK, 0, 0, FP_S_OK, 0};
    (void)!send(g->fd, &a, sizeof a, MSG_NOSIGNAL);
    return NULL;
}

/* A connection to a greeter on lfd; g->fd is the kernel side's end of it. */
static SIM_HANDLE connect_greeted(const char *name, int lfd, greeter *g)
{
    *g = (greeter){.lfd = lfd, .fd = -1};
    pthread_create(&g->t, NULL, greeter_main, g);
    SIM_HANDLE h = connect_user(name);
    pthread_join(g->t, NULL);
    return h;
}

static void unlisten_at(const char *name, int lfd)
{
    close(lfd);
    struct sockaddr_un a;
    sk_port_path(rundir, name, &a);
    unlink(a.sun_path);
}

/* A kernel side that does not answer (its process stopped): connect's handshake and a reply's
 * acknowledgement give up when the hook says so, and the ack that comes later for the reply is
 * counted off, not taken for a protocol error: the connection goes on. */
static void test_interrupt_hook(void)
{
    const char *name = "\\Mute";
    int lfd = listen_at(name); /* connects queue in its backlog; nobody accepts */
    SIM_HANDLE h = 0;
    SimSetInterruptHook(hook_third, &hook_calls);
    CHECK_EQ(SimFilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &h), FP_E_OPERATION_ABORTED);
    CHECK_EQ(atomic_load(&hook_calls), 3);
    CHECK_EQ(fsim_debug_peer_waits(), 0);
    int fd = accept(lfd, NULL, NULL); /* the abandoned one: its hello, then its end */
    char buf[512];
    CHECK(recv(fd, buf, sizeof buf, 0) > 0);
    CHECK(hung_up(fd));
    close(fd);

    greeter g;
    SimSetInterruptHook(NULL, NULL); /* cleared: this connect is not interrupted */
    atomic_store(&hook_calls, 0);
    h = connect_greeted(name, lfd, &g);
    CHECK_EQ(atomic_load(&hook_calls), 0);
    SimSetInterruptHook(hook_third, &hook_calls);
    reply_to(h, 7, "late", 0, FP_E_OPERATION_ABORTED);
    CHECK_EQ(atomic_load(&hook_calls), 3);
    SimSetInterruptHook(NULL, NULL);
    /* the reply went out; its ack comes now */
    struct {
        sk_hdr h;
        sk_reply_ent e;
        char body[64];
    } r;
    CHECK(recv(g.fd, &r, sizeof r, 0) > 0);
    CHECK_EQ(r.h.type, SK_REPLY);
    CHECK_EQ(r.h.count, 1);
    struct {
        sk_hdr h;
        int32_t hr[2];
    } ack = {{28, SK_REPLY_ACK, 0, 1, FP_S_OK, r.h.req}, {FP_S_OK, 0}};
    CHECK_EQ(send(g.fd, &ack, 28, MSG_NOSIGNAL), 28);
    /* and the connection goes on: a get, served after the ack */
    getter gt;
    start_getter(&gt, h, 1, 5000);
    struct {
        sk_hdr h;
        uint64_t tag;
    } get;
    CHECK_EQ(recv(g.fd, &get, sizeof get, 0), (ssize_t)sizeof get);
    CHECK_EQ(get.h.type, SK_GET);
    struct {
        sk_hdr h;
        sk_msg_ent m;
        char data[8];
    } msg = {{sizeof msg, SK_MSGS, 0, 1, 0, 0}, {get.tag, 42, 0, 8, SK_LAST, 0}, "hello..."};
    CHECK_EQ(send(g.fd, &msg, sizeof msg, MSG_NOSIGNAL), (ssize_t)sizeof msg);
    pthread_join(gt.t, NULL);
    CHECK_EQ(gt.hr, FP_S_OK);
    CHECK_EQ(gt.filled, 1);
    CHECK_EQ(gt.m[0].h.MessageId, 42);
    close(g.fd); /* the kernel side hangs up: the close below does not wait */
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    unlisten_at(name, lfd);
}

/* A kernel side that reads nothing (stopped): replies fill the socket, and a write that cannot
 * go on gives up for the hook too; one cut halfway ends the connection (the stream would be out
 * of step), so no call is left blocked and none hangs. */
static void test_interrupt_hook_full_socket(void)
{
    const char *name = "\\MuteFull";
    int lfd = listen_at(name);
    greeter g;
    SIM_HANDLE h = connect_greeted(name, lfd, &g);
    uint32_t size = 16 + FSIM_MAX_MESSAGE;
    FP_REPLY_HEADER *r = calloc(1, size);
    r->MessageId = 1;
    SimSetInterruptHook(hook_third, &hook_calls);
    /* each reply is given up on (waiting for its ack, or for room to write it) until one is cut
     * halfway, which ends the connection: only a cut write does (a mute kernel side is given 30 s
     * otherwise) */
    fp_hresult hr = FP_S_OK;
    int n = 0;
    for (; n < 128; n++) {
        atomic_store(&hook_calls, 0);
        hr = SimFilterReplyMessage(h, r, size);
        CHECK(atomic_load(&hook_calls) <= 3);
        if (hr != FP_E_OPERATION_ABORTED)
            break;
    }
    SimSetInterruptHook(NULL, NULL);
    CHECK_EQ(hr, FP_E_INVALID_HANDLE);
    CHECK(n > 0 && n < 128);
    CHECK_EQ(fsim_debug_peer_waits(), 0);
    free(r);
    close(g.fd);
    CHECK_EQ(SimFilterClose(h), FP_S_OK);

    /* a get whose cancel a mute kernel side never answers: hung up on after the peer timeout */
    h = connect_greeted(name, lfd, &g);
    setenv("FASTPORT_SOCK_PEER_TIMEOUT_MS", "200", 1);
    msgbuf m;
    CHECK_EQ(SimFilterGetMessage(h, &m.h, sizeof m, 10, NULL), FP_E_INVALID_HANDLE);
    unsetenv("FASTPORT_SOCK_PEER_TIMEOUT_MS");
    close(g.fd);
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    unlisten_at(name, lfd);
}

/* ---- hostile peers: time and memory the kernel side gives them are bounded ---- */

static int thread_count(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static fsim_server_stats sstats(fsim_server *s)
{
    fsim_server_stats st;
    fsim_server_stats_get(s, &st);
    return st;
}

/* A port (its environment knob set to value while it is created, when knob is not NULL) and a
 * raw peer connected to it that has said hello. */
static fsim_server *port_and_peer(const char *name, const char *knob, const char *value,
                                  kstate *k, int *fd)
{
    if (knob)
        setenv(knob, value, 1);
    fsim_server *s = make_port(name, 4, FSIM_ACCESS_OWNER, k, 1);
    if (knob)
        unsetenv(knob);
    *fd = raw_connect(name);
    CHECK_EQ(raw_hello(*fd, name), FP_S_OK);
    return s;
}

/* Peers that send half a HELLO pin a thread each until the frame deadline (the default here, 10 s)
 * at most: closing the port hangs up on them at once, and their threads go. */
static void test_partial_hellos_and_close(void)
{
    int base = thread_count();
    kstate k;
    fsim_server *s = make_port("\\HalfHello", 4, FSIM_ACCESS_OWNER, &k, 1);
    enum { N = 50 };
    int fds[N];
    sk_hdr h = {1000, SK_HELLO, 0, SK_MAGIC, SK_VERSION, 0}; /* 24 of its 1000 bytes */
    for (int i = 0; i < N; i++) {
        fds[i] = raw_connect("\\HalfHello");
        CHECK(fds[i] >= 0);
        CHECK_EQ(send(fds[i], &h, sizeof h, MSG_NOSIGNAL), (ssize_t)sizeof h);
    }
    /* the accept thread, then a thread per peer, each inside its handshake */
    CHECK(WAIT_UNTIL(thread_count() >= base + 1 + N, 5000));
    uint64_t t0 = now_ms();
    fsim_close_server(s);
    CHECK(WAIT_UNTIL(thread_count() == base, 5000));
    CHECK(now_ms() - t0 < 5000);
    for (int i = 0; i < N; i++) {
        CHECK(hung_up(fds[i]));
        close(fds[i]);
    }
    CHECK_EQ(kget_connects(&k), 0);
}

/* A connected peer that sends the start of a frame and no more is hung up on after the frame
 * deadline ($FASTPORT_SOCK_FRAME_TIMEOUT_MS, 200 ms here), and counted. So is one that never
 * sends its HELLO. */
static void test_partial_frame_deadline(void)
{
    kstate k;
    int fd;
    fsim_server *s = port_and_peer("\\HalfFrame", "FASTPORT_SOCK_FRAME_TIMEOUT_MS", "200", &k, &fd);
    sk_hdr h = {5000, SK_SEND, 0, 0, 0, 1};
    CHECK_EQ(send(fd, &h, sizeof h, MSG_NOSIGNAL), (ssize_t)sizeof h);
    CHECK(WAIT_UNTIL(kget_disconnects(&k) == 1, 5000));
    CHECK(hung_up(fd));
    close(fd);
    CHECK_EQ(sstats(s).peers_timed_out, 1);
    int silent = raw_connect("\\HalfFrame");
    CHECK(hung_up(silent) || hung_up(silent)); /* within 2 s, 2 s: the deadline is 200 ms */
    close(silent);
    CHECK_EQ(sstats(s).peers_timed_out, 2);
    CHECK_EQ(kget_connects(&k), 1);
    fsim_close_server(s);
}

/* A peer that floods FilterSendMessage requests while MessageNotify is busy: at most
 * SK_MAX_WORKERS run and SK_MAX_QUEUED_JOBS wait; the rest are answered E_OUTOFMEMORY at once and
 * counted. Each request is answered exactly once. */
static void test_send_flood(void)
{
    kstate k;
    int fd;
    fsim_server *s = port_and_peer("\\Flood", NULL, NULL, &k, &fd);
    enum { N = 400, IN = 16 * 1024 };
    struct {
        sk_hdr h;
        char in[IN];
    } *f = calloc(1, sizeof *f);
    memcpy(f->in, "gate", 4);
    for (uint32_t i = 0; i < N; i++) {
        f->h = (sk_hdr){sizeof *f, SK_SEND, 0, 4, 0, i + 1};
        CHECK_EQ(send(fd, f, sizeof *f, MSG_NOSIGNAL), (ssize_t)sizeof *f);
    }
    /* every request is either with MessageNotify, waiting for it, or dropped */
    fsim_client *c = NULL;
    CHECK(WAIT_UNTIL((c = kget_last(&k)) != NULL, 2000));
    CHECK(WAIT_UNTIL(sstats(s).sends_dropped >= N - SK_MAX_WORKERS - SK_MAX_QUEUED_JOBS, 5000));
    uint64_t dropped = sstats(s).sends_dropped;
    CHECK(dropped <= N - SK_MAX_QUEUED_JOBS);
    pthread_mutex_lock(&k.lock);
    k.gate_open = 1;
    pthread_cond_broadcast(&k.cv);
    pthread_mutex_unlock(&k.lock);
    /* every request answered once: the dropped ones with E_OUTOFMEMORY */
    uint32_t answered = 0, refused = 0;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (answered < N) {
        struct {
            sk_hdr h;
            char out[8];
        } a;
        ssize_t r = recv(fd, &a, sizeof a, 0);
        if (r < (ssize_t)sizeof a.h || a.h.type != SK_SEND_ACK)
            break;
        answered++;
        refused += a.h.hr == FP_E_OUTOFMEMORY;
    }
    CHECK_EQ(answered, N);
    CHECK_EQ(refused, dropped);
    pthread_mutex_lock(&k.lock);
    CHECK_EQ(k.gated, N - (int)dropped);
    pthread_mutex_unlock(&k.lock);
    CHECK_EQ(sstats(s).sends_dropped, dropped);
    close(fd);
    CHECK(WAIT_UNTIL(kget_disconnects(&k) == 1, 2000));
    fsim_client_release(c);
    free(f);
    fsim_close_server(s);
}

/* A peer that keeps asking (REVOKE frames: an answer per tag) and never reads its answers is hung
 * up on once more than $FASTPORT_SOCK_MAX_UNREAD_ANSWERS bytes of them wait (1 MiB here), and
 * counted; the kernel side never stops reading it meanwhile. */
static void test_peer_that_never_reads(void)
{
    kstate k;
    int fd;
    fsim_server *s =
        port_and_peer("\\NoReader", "FASTPORT_SOCK_MAX_UNREAD_ANSWERS", "1048576", &k, &fd);
    struct {
        sk_hdr h;
        uint64_t tags[SK_MAX_TAGS];
    } *f = calloc(1, sizeof *f);
    f->h = (sk_hdr){sizeof *f, SK_REVOKE, 0, SK_MAX_TAGS, 0, 0};
    for (uint32_t i = 0; i < SK_MAX_TAGS; i++)
        f->tags[i] = 1000000 + i; /* nobody's: answered "not found", 24 bytes each */
    /* 1 MiB of answers is 11 frames; without the bound, 400 frames pile up 38 MiB and more */
    int sent = 0;
    while (sent < 400 && send(fd, f, sizeof *f, MSG_NOSIGNAL) == (ssize_t)sizeof *f)
        sent++;
    CHECK(sent < 400);
    CHECK(WAIT_UNTIL(kget_disconnects(&k) == 1, 5000));
    CHECK_EQ(sstats(s).slow_peers_dropped, 1);
    close(fd);
    free(f);
    fsim_close_server(s);
}

/* ---- stress: 32 kernel senders here, 8 getter threads in a user process ---- */
#define NSEND 32
#define NGET 8
#define TOTAL 100000

typedef struct stress {
    fsim_client *c;
    SIM_HANDLE h;
    int id;
    int bad;
    uint32_t received;
} stress;

static void *stress_sender(void *p)
{
    stress *s = p;
    for (int i = 0; i < TOTAL / NSEND; i++) {
        uint32_t v[2] = {(uint32_t)s->id, (uint32_t)i}, r[2] = {0, 0}, cap = sizeof r;
        int32_t rs = 0;
        fp_ntstatus st = fsim_send(s->c, v, sizeof v, r, &cap, -1, &rs);
        if (st != FP_STATUS_SUCCESS || cap != sizeof r || r[0] != ~v[0] || r[1] != ~v[1] ||
            rs != (int32_t)(v[0] ^ v[1]))
            s->bad++;
    }
    return NULL;
}

static atomic_int stress_stop, stress_running;

static void *stress_getter(void *p)
{
    stress *s = p;
    msgbuf m[8];
    tget e[8];
    replybuf r[8];
    SIM_REPLY_ENTRY re[8];
    while (!atomic_load(&stress_stop)) {
        for (int i = 0; i < 8; i++)
            e[i] = (tget){&m[i].h, sizeof m[i], 0, 0};
        uint32_t n = 0, k = 0;
        fp_hresult hr = get_n(s->h, e, (uint32_t)(1 + s->id % 8), FSIM_INFINITE, &n);
        if (hr == FP_E_OPERATION_ABORTED && atomic_load(&stress_stop))
            break;
        if (hr != FP_S_OK) {
            s->bad++;
            break;
        }
        for (uint32_t i = 0; i < n; i++) {
            uint32_t v[2];
            if (m[i].h.ReplyLength == 0 && memcmp(m[i].body, "stop", 4) == 0) {
                atomic_store(&stress_stop, 1); /* the kernel has had all its replies */
                continue;
            }
            if (m[i].h.ReplyLength != 16 + 8 || e[i].length != 16 + 8)
                s->bad++;
            memcpy(v, m[i].body, sizeof v);
            r[k].h.MessageId = m[i].h.MessageId;
            r[k].h.Status = (int32_t)(v[0] ^ v[1]);
            v[0] = ~v[0];
            v[1] = ~v[1];
            memcpy(r[k].body, v, sizeof v);
            re[k] = (SIM_REPLY_ENTRY){&r[k].h, 16 + 8, 0};
            k++;
        }
        s->received += k;
        if (k % 2) { /* mix the single and the batch reply */
            if (SimFilterReplyMessage(s->h, &r[0].h, 16 + 8) != FP_S_OK)
                s->bad++;
            if (k > 1 && SimFilterReplyMessages(s->h, re + 1, k - 1) != FP_S_OK)
                s->bad++;
        } else if (k && SimFilterReplyMessages(s->h, re, k) != FP_S_OK) {
            s->bad++;
        }
        for (uint32_t i = (k % 2); i < k; i++)
            if (re[i].hr != FP_S_OK)
                s->bad++;
    }
    atomic_fetch_sub(&stress_running, 1);
    return NULL;
}

/* The user process of the stress run: NGET getter threads until the kernel's "stop" message, then
 * cancel the others' gets, close, and report {received, bad} on fd. */
static void stress_user(const char *name, int fd)
{
    SIM_HANDLE h = connect_user(name);
    pthread_t tg[NGET];
    stress sg[NGET];
    atomic_store(&stress_running, NGET);
    for (int i = 0; i < NGET; i++) {
        sg[i] = (stress){NULL, h, i, 0, 0};
        pthread_create(&tg[i], NULL, stress_getter, &sg[i]);
    }
    while (atomic_load(&stress_running) > 0) {
        if (atomic_load(&stress_stop))
            SimFilterCancelIo(h, NULL);
        usleep(1000);
    }
    uint32_t res[2] = {0, 0};
    for (int i = 0; i < NGET; i++) {
        pthread_join(tg[i], NULL);
        res[0] += sg[i].received;
        res[1] += (uint32_t)sg[i].bad;
    }
    CHECK_EQ(SimFilterClose(h), FP_S_OK);
    (void)!write(fd, res, sizeof res);
}

static void test_stress(void)
{
    kstate k;
    fsim_server *srv = make_port("\\Stress", 1, FSIM_ACCESS_OWNER, &k, 1);
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = spawn("stress", "\\Stress", p[1]);
    close(p[1]);
    CHECK(WAIT_UNTIL(kget_connects(&k) == 1, 5000));
    fsim_client *c = kget_last(&k);
    uint64_t t0 = now_ms();
    pthread_t ts[NSEND];
    stress ss[NSEND];
    for (int i = 0; i < NSEND; i++) {
        ss[i] = (stress){c, 0, i, 0, 0};
        pthread_create(&ts[i], NULL, stress_sender, &ss[i]);
    }
    int bad = 0;
    for (int i = 0; i < NSEND; i++) {
        pthread_join(ts[i], NULL);
        bad += ss[i].bad;
    }
    uint64_t dt = now_ms() - t0;
    fprintf(stderr, "  stress: %d messages in %llu ms (%.0f/s) across processes\n", TOTAL,
            (unsigned long long)dt, (double)TOTAL * 1000.0 / (double)(dt ? dt : 1));
    CHECK_EQ(bad, 0);
    CHECK_EQ(fsim_send(c, "stop", 4, NULL, NULL, 5000 * MS, NULL), FP_STATUS_SUCCESS);
    uint32_t res[2] = {0, 99};
    CHECK_EQ(read(p[0], res, sizeof res), sizeof res);
    close(p[0]);
    CHECK_EQ(res[0], TOTAL); /* none lost, none twice */
    CHECK_EQ(res[1], 0);
    int status;
    wait_child(pid, &status);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    CHECK(WAIT_UNTIL(kget_disconnects(&k) == 1, 2000));
    fsim_client_release(c);
    fsim_close_server(srv);
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2], argv[3], atoi(argv[4]));
    snprintf(rundir, sizeof rundir, "/tmp/fpsock-XXXXXX");
    if (!mkdtemp(rundir)) {
        perror("mkdtemp");
        return 2;
    }
    chmod(rundir, 0711); /* others may traverse: the other-uid tests */
    setenv("FASTPORT_RUNTIME_DIR", rundir, 1);
    unsetenv("FASTPORT_SOCK_BUFSIZE");
    uint64_t t0 = now_ms();
    alarm(180); /* a hang is a failure, not a stuck CI job */
#define RUN(t)                                                                       \
    do {                                                                             \
        uint64_t _t = now_ms();                                                      \
        t;                                                                           \
        fprintf(stderr, "%-40s %5llu ms\n", #t, (unsigned long long)(now_ms() - _t)); \
    } while (0)
    RUN(test_connect_rules());
    RUN(test_runtime_dir_rules());
    RUN(test_spoofed_runtime_dirs());
    RUN(test_round_trip());
    RUN(test_send_message());
    RUN(test_concurrent_sends());
    RUN(test_timeouts_and_credits());
    RUN(test_batches_and_many_getters());
    RUN(test_polls());
    RUN(test_cancel_and_timeout_races());
    RUN(test_cancel_and_disconnect());
    RUN(test_one_mib(NULL));
    RUN(test_one_mib("65536"));
    RUN(test_kill_9_client());
    RUN(test_fork_child_leaves_connection());
    RUN(test_fork_child_leaves_port());
    RUN(test_kernel_process_dies());
    RUN(test_other_uid());
    RUN(test_other_users_dir());
    RUN(test_stopped_user());
    RUN(test_garbage_to_kernel());
    RUN(test_garbage_to_user());
    RUN(test_interrupt_hook());
    RUN(test_interrupt_hook_full_socket());
    RUN(test_partial_hellos_and_close());
    RUN(test_partial_frame_deadline());
    RUN(test_send_flood());
    RUN(test_peer_that_never_reads());
    RUN(test_stress());
#ifdef FASTPORT_DEBUG
    /* every connection thread has dropped its client, every server is gone */
    CHECK(WAIT_UNTIL(fsim_debug_live_clients() == 0, 3000));
    CHECK(WAIT_UNTIL(fsim_debug_live_servers() == 0, 3000));
    CHECK_EQ(fsim_debug_live_clients(), 0);
    CHECK_EQ(fsim_debug_live_servers(), 0);
#endif
    char lock[96];
    snprintf(lock, sizeof lock, "%s/.lock", rundir); /* sock_kernel.c's creation lock */
    unlink(lock);
    if (rmdir(rundir) != 0)
        fprintf(stderr, "  %s left behind (not empty)\n", rundir);
    fprintf(stderr, "total %llu ms\n", (unsigned long long)(now_ms() - t0));
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
