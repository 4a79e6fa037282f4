/* Overlapped gets and the Win32 face (completion ports, events, cancel, GetOverlappedResult),
 * on both transports. Threads are ordered by waiting on observable state (pending gets at the
 * kernel, threads blocked in a completion port), never by sleeping. Last line: "N passed, M
 * failed". */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fltsim/fltsim.h"
#include "fltsim/internal.h" /* fsim_iocp_waiting */
#include <windows.h>
#include <fltuser.h>
#include "check.h"

#define MS 1000000LL
#define STATUS_BUFFER_TOO_SMALL_ 0xC0000023u
#define STATUS_CANCELLED_ 0xC0000120u
#define STATUS_INVALID_HANDLE_ 0xC0000008u
#define IO_PENDING HRESULT_FROM_WIN32(ERROR_IO_PENDING)


typedef struct {
    FILTER_MESSAGE_HEADER h;
    char p[64];
} msgbuf;

typedef struct rig {
    enum fsim_transport t;
    fsim_server *s;
    fsim_client *c;
    HANDLE h;
} rig;

static fp_ntstatus on_connect(void *cookie, fsim_client *client, const void *ctx, uint32_t n,
                              void **conn_cookie)
{
    (void)ctx, (void)n, (void)conn_cookie;
    rig *r = cookie;
    fsim_client_retain(client);
    r->c = client;
    return FP_STATUS_SUCCESS;
}

static const char *tname(enum fsim_transport t) { return t == FSIM_SOCKET ? "socket" : "inproc"; }

static void rig_open(rig *r, enum fsim_transport t, DWORD options)
{
    static int seq;
    memset(r, 0, sizeof *r);
    r->t = t;
    char name[64];
    WCHAR wname[64];
    snprintf(name, sizeof name, "\\W32-%d", ++seq);
    mbstowcs(wname, name, 64);
    fsim_callbacks cb = {on_connect, NULL, NULL, r};
    CHECK_EQ(fsim_create_port(name, t, 4, FSIM_ACCESS_OWNER, &cb, &r->s), FP_STATUS_SUCCESS);
    CHECK_EQ(FilterConnectCommunicationPort(wname, options, NULL, 0, NULL, &r->h), S_OK);
    CHECK(r->c != NULL);
}

static void rig_close(rig *r)
{
    if (r->h)
        CloseHandle(r->h);
    fsim_client_release(r->c);
    fsim_close_server(r->s);
}

static uint32_t pending(rig *r) { return fsim_client_pending_gets(r->c); }

static void send_str(rig *r, const char *s)
{
    CHECK_EQ(fsim_send(r->c, s, (uint32_t)strlen(s), NULL, NULL, 5000 * MS, NULL),
             FP_STATUS_SUCCESS);
}

static void test_pending_and_event(enum fsim_transport t)
{
    rig r;
    rig_open(&r, t, 0);
    msgbuf m;
    OVERLAPPED ov;
    memset(&ov, 0, sizeof ov);
    ov.hEvent = CreateEvent(NULL, TRUE, TRUE, NULL); /* set: the get must reset it */
    CHECK(ov.hEvent != NULL);
    CHECK_EQ(FilterGetMessage(r.h, &m.h, sizeof m, &ov), IO_PENDING);
    CHECK_EQ(WaitForSingleObject(ov.hEvent, 0), WAIT_TIMEOUT);
    CHECK(!HasOverlappedIoCompleted(&ov));
    CHECK_EQ(ov.Internal, STATUS_PENDING);
    DWORD n = 0;
    CHECK(!GetOverlappedResult(r.h, &ov, &n, FALSE));
    CHECK_EQ(GetLastError(), ERROR_IO_INCOMPLETE);
    CHECK(WAIT_UNTIL(pending(&r) == 1, 2000));
    send_str(&r, "hello");
    CHECK_EQ(WaitForSingleObject(ov.hEvent, INFINITE), WAIT_OBJECT_0);
    CHECK(HasOverlappedIoCompleted(&ov));
    CHECK_EQ(ov.Internal, 0);
    CHECK_EQ(ov.InternalHigh, 16 + 5);
    CHECK(memcmp(m.p, "hello", 5) == 0);
    CHECK_EQ(m.h.ReplyLength, 0);
    CHECK(GetOverlappedResult(r.h, &ov, &n, FALSE));
    CHECK_EQ(n, 21);
    CHECK(CloseHandle(ov.hEvent));
    rig_close(&r);
}

static void test_completion_port(enum fsim_transport t)
{
    rig r;
    rig_open(&r, t, 0);
    HANDLE q = CreateIoCompletionPort(r.h, NULL, 42, 0);
    CHECK(q != NULL);
    msgbuf m[3];
    OVERLAPPED ov[3];
    memset(ov, 0, sizeof ov);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(FilterGetMessage(r.h, &m[i].h, sizeof m[i], &ov[i]), IO_PENDING);
    CHECK(WAIT_UNTIL(pending(&r) == 3, 2000));
    send_str(&r, "m0");
    send_str(&r, "m1x");
    send_str(&r, "m2xx");
    for (int i = 0; i < 3; i++) { /* oldest get first; one thread sees packets in order */
        DWORD n = 0;
        ULONG_PTR key = 0;
        LPOVERLAPPED got = NULL;
        CHECK(GetQueuedCompletionStatus(q, &n, &key, &got, INFINITE));
        CHECK(got == &ov[i]);
        CHECK_EQ(key, 42);
        CHECK_EQ(n, 16 + 2 + (DWORD)i);
        CHECK(m[i].p[0] == 'm' && m[i].p[1] == '0' + i);
    }
    /* hEvent with its low bit set: the event only, no packet */
    HANDLE ev = CreateEvent(NULL, TRUE, FALSE, NULL);
    memset(&ov[0], 0, sizeof ov[0]);
    ov[0].hEvent = (HANDLE)((uintptr_t)ev | 1);
    CHECK_EQ(FilterGetMessage(r.h, &m[0].h, sizeof m[0], &ov[0]), IO_PENDING);
    CHECK(WAIT_UNTIL(pending(&r) == 1, 2000));
    send_str(&r, "quiet");
    CHECK_EQ(WaitForSingleObject(ev, INFINITE), WAIT_OBJECT_0);
    CHECK(HasOverlappedIoCompleted(&ov[0]));
    CHECK(CloseHandle(ev));
    DWORD n;
    ULONG_PTR key;
    LPOVERLAPPED got = &ov[0];
    CHECK(!GetQueuedCompletionStatus(q, &n, &key, &got, 0));
    CHECK(got == NULL);
    CHECK_EQ(GetLastError(), WAIT_TIMEOUT);
    CHECK(!GetQueuedCompletionStatus(q, &n, &key, &got, 5)); /* a timed wait that expires */
    CHECK_EQ(GetLastError(), WAIT_TIMEOUT);
    OVERLAPPED_ENTRY e[4];
    ULONG removed = 9;
    CHECK(!GetQueuedCompletionStatusEx(q, e, 4, &removed, 0, FALSE));
    CHECK_EQ(GetLastError(), WAIT_TIMEOUT);
    CHECK_EQ(removed, 0);
    /* a handle joins one completion port */
    CHECK(CreateIoCompletionPort(r.h, NULL, 1, 0) == NULL);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    HANDLE q2 = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);
    CHECK(q2 != NULL);
    CHECK(CreateIoCompletionPort(r.h, q2, 1, 0) == NULL);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    CHECK(CloseHandle(q2));
    CHECK(CloseHandle(q));
    rig_close(&r);
}

static void test_cancel(enum fsim_transport t)
{
    rig r;
    rig_open(&r, t, 0);
    HANDLE q = CreateIoCompletionPort(r.h, NULL, 7, 0);
    msgbuf m[4];
    OVERLAPPED ov[4];
    memset(ov, 0, sizeof ov);
    DWORD n;
    ULONG_PTR key;
    LPOVERLAPPED got;
    /* cancel one */
    CHECK_EQ(FilterGetMessage(r.h, &m[0].h, sizeof m[0], &ov[0]), IO_PENDING);
    CHECK_EQ(FilterGetMessage(r.h, &m[1].h, sizeof m[1], &ov[1]), IO_PENDING);
    CHECK(WAIT_UNTIL(pending(&r) == 2, 2000));
    CHECK(CancelIoEx(r.h, &ov[1]));
    CHECK(!GetQueuedCompletionStatus(q, &n, &key, &got, INFINITE));
    CHECK(got == &ov[1]);
    CHECK_EQ(GetLastError(), ERROR_OPERATION_ABORTED);
    CHECK_EQ(ov[1].Internal, STATUS_CANCELLED_);
    CHECK_EQ(n, 0);
    CHECK(!CancelIoEx(r.h, &ov[1]));
    CHECK_EQ(GetLastError(), ERROR_NOT_FOUND);
    CHECK(WAIT_UNTIL(pending(&r) == 1, 2000));
    send_str(&r, "kept");
    CHECK(GetQueuedCompletionStatus(q, &n, &key, &got, INFINITE));
    CHECK(got == &ov[0]);
    CHECK_EQ(n, 20);
    /* cancel all, seen through GetQueuedCompletionStatusEx */
    for (int i = 0; i < 4; i++)
        CHECK_EQ(FilterGetMessage(r.h, &m[i].h, sizeof m[i], &ov[i]), IO_PENDING);
    CHECK(CancelIoEx(r.h, NULL));
    int seen[4] = {0};
    for (ULONG total = 0; total < 4;) {
        OVERLAPPED_ENTRY e[4];
        ULONG k = 0;
        CHECK(GetQueuedCompletionStatusEx(q, e, 4, &k, INFINITE, FALSE));
        for (ULONG i = 0; i < k; i++) {
            CHECK_EQ(e[i].Internal, STATUS_CANCELLED_);
            CHECK_EQ(e[i].lpCompletionKey, 7);
            seen[(LPOVERLAPPED)e[i].lpOverlapped - ov]++;
        }
        total += k;
    }
    for (int i = 0; i < 4; i++)
        CHECK_EQ(seen[i], 1);
    CHECK(!CancelIoEx(r.h, NULL));
    CHECK_EQ(GetLastError(), ERROR_NOT_FOUND);
    CHECK(CancelIo(r.h));
    CHECK(WAIT_UNTIL(pending(&r) == 0, 2000));
    CHECK(!GetQueuedCompletionStatus(q, &n, &key, &got, 0));
    CloseHandle(q);
    rig_close(&r);
}

static void test_disconnect_and_close(enum fsim_transport t)
{
    for (int by_close = 0; by_close <= 1; by_close++) {
        rig r;
        rig_open(&r, t, 0);
        HANDLE q = CreateIoCompletionPort(r.h, NULL, 0, 0);
        msgbuf m[2];
        OVERLAPPED ov[2];
        memset(ov, 0, sizeof ov);
        for (int i = 0; i < 2; i++)
            CHECK_EQ(FilterGetMessage(r.h, &m[i].h, sizeof m[i], &ov[i]), IO_PENDING);
        CHECK(WAIT_UNTIL(pending(&r) == 2, 2000));
        if (by_close) {
            CHECK(CloseHandle(r.h)); /* completes them before it returns (emulator's choice) */
            CHECK(HasOverlappedIoCompleted(&ov[0]) && HasOverlappedIoCompleted(&ov[1]));
        } else {
            fsim_close_client(r.c); /* the kernel side disconnects (filter unloading) */
        }
        for (int i = 0; i < 2; i++) {
            DWORD n;
            ULONG_PTR key;
            LPOVERLAPPED got = NULL;
            CHECK(!GetQueuedCompletionStatus(q, &n, &key, &got, INFINITE));
            CHECK(got == &ov[i]);
            CHECK_EQ(GetLastError(), ERROR_INVALID_HANDLE);
            CHECK_EQ(ov[i].Internal, STATUS_INVALID_HANDLE_);
        }
        CHECK_EQ(FilterGetMessage(r.h, &m[0].h, sizeof m[0], &ov[0]),
                 HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
        if (by_close)
            r.h = NULL;
        CloseHandle(q);
        rig_close(&r);
    }
}

static void test_truncated(enum fsim_transport t)
{
    rig r;
    rig_open(&r, t, 0);
    struct {
        FILTER_MESSAGE_HEADER h;
        char p[4];
        char guard[4];
    } small;
    memset(&small, 0x5A, sizeof small);
    OVERLAPPED ov;
    memset(&ov, 0, sizeof ov);
    HANDLE q = CreateIoCompletionPort(r.h, NULL, 0, 0);
    CHECK_EQ(FilterGetMessage(r.h, &small.h, 16 + 4, &ov), IO_PENDING);
    CHECK(WAIT_UNTIL(pending(&r) == 1, 2000));
    send_str(&r, "0123456789"); /* delivered: the sender is done */
    DWORD n;
    ULONG_PTR key;
    LPOVERLAPPED got;
    CHECK(!GetQueuedCompletionStatus(q, &n, &key, &got, INFINITE));
    CHECK(got == &ov);
    CHECK_EQ(GetLastError(), ERROR_INSUFFICIENT_BUFFER);
    CHECK_EQ(ov.Internal, STATUS_BUFFER_TOO_SMALL_);
    CHECK_EQ(n, 20);
    CHECK(memcmp(small.p, "0123", 4) == 0);
    CHECK(small.guard[0] == 0x5A);
    CHECK(small.h.MessageId != 0);
    CloseHandle(q);
    rig_close(&r);
}

typedef struct {
    rig *r;
    const char *text;
} sender_arg;

static DWORD WINAPI send_thread(LPVOID p)
{
    sender_arg *a = p;
    send_str(a->r, a->text);
    return 77;
}

static void test_get_overlapped_result_wait(enum fsim_transport t)
{
    rig r;
    rig_open(&r, t, 0);
    msgbuf m;
    OVERLAPPED ov;
    memset(&ov, 0, sizeof ov);
    CHECK_EQ(FilterGetMessage(r.h, &m.h, sizeof m, &ov), IO_PENDING);
    CHECK(WAIT_UNTIL(pending(&r) == 1, 2000));
    sender_arg a = {&r, "waited"};
    HANDLE th = CreateThread(NULL, 0, send_thread, &a, 0, NULL);
    CHECK(th != NULL);
    DWORD n = 0, code = 0;
    CHECK(GetOverlappedResult(r.h, &ov, &n, TRUE)); /* no event: waits for the completion */
    CHECK_EQ(n, 16 + 6);
    CHECK_EQ(WaitForSingleObject(th, INFINITE), WAIT_OBJECT_0);
    CHECK(GetExitCodeThread(th, &code));
    CHECK_EQ(code, 77);
    CHECK(CloseHandle(th));
    rig_close(&r);
}

/* ---- several threads on one completion port: every get completes exactly once ---- */

#define MT_THREADS 4
#define MT_RECORDS 32
#define MT_MESSAGES 3000

typedef struct {
    msgbuf m;
    OVERLAPPED ov;
} mt_record;

typedef struct {
    rig *r;
    HANDLE q;
    mt_record rec[MT_RECORDS];
    atomic_int issued[MT_RECORDS], completed[MT_RECORDS];
    atomic_int seen[MT_MESSAGES];
    atomic_int nseen, aborted, outstanding, stop, bad;
} mt_state;

static void mt_issue(mt_state *s, int i)
{
    memset(&s->rec[i].ov, 0, sizeof s->rec[i].ov);
    atomic_fetch_add(&s->issued[i], 1);
    atomic_fetch_add(&s->outstanding, 1);
    if (FilterGetMessage(s->r->h, &s->rec[i].m.h, sizeof s->rec[i].m, &s->rec[i].ov) != IO_PENDING) {
        atomic_fetch_add(&s->bad, 1);
        atomic_fetch_sub(&s->outstanding, 1);
        return;
    }
    if (atomic_load(&s->stop)) /* the stop's CancelIoEx may have come before this get */
        CancelIoEx(s->r->h, &s->rec[i].ov);
}

static DWORD WINAPI mt_worker(LPVOID p)
{
    mt_state *s = p;
    for (;;) {
        DWORD n;
        ULONG_PTR key;
        LPOVERLAPPED ov = NULL;
        BOOL ok = GetQueuedCompletionStatus(s->q, &n, &key, &ov, INFINITE);
        if (!ov)
            break; /* a wake */
        mt_record *rec = CONTAINING_RECORD(ov, mt_record, ov);
        int i = (int)(rec - s->rec);
        atomic_fetch_add(&s->completed[i], 1);
        if (ok) {
            uint32_t seq;
            memcpy(&seq, rec->m.p, sizeof seq);
            if (n != 16 + sizeof seq || seq >= MT_MESSAGES)
                atomic_fetch_add(&s->bad, 1);
            else
                atomic_fetch_add(&s->seen[seq], 1);
            atomic_fetch_add(&s->nseen, 1);
        } else if (GetLastError() == ERROR_OPERATION_ABORTED) {
            atomic_fetch_add(&s->aborted, 1);
        } else {
            atomic_fetch_add(&s->bad, 1);
        }
        if (!atomic_load(&s->stop) && ok)
            mt_issue(s, i);
        atomic_fetch_sub(&s->outstanding, 1);
    }
    return 0;
}

static DWORD WINAPI mt_sender(LPVOID p)
{
    mt_state *s = p;
    for (uint32_t seq = 0; seq < MT_MESSAGES; seq++)
        if (fsim_send(s->r->c, &seq, sizeof seq, NULL, NULL, 10000 * MS, NULL) != FP_STATUS_SUCCESS)
            atomic_fetch_add(&s->bad, 1);
    return 0;
}

static void test_many_threads_one_port(enum fsim_transport t)
{
    rig r;
    rig_open(&r, t, 0);
    mt_state *s = calloc(1, sizeof *s);
    s->r = &r;
    s->q = CreateIoCompletionPort(r.h, NULL, 0, MT_THREADS);
    HANDLE th[MT_THREADS], snd;
    for (int i = 0; i < MT_THREADS; i++)
        th[i] = CreateThread(NULL, 0, mt_worker, s, 0, NULL);
    for (int i = 0; i < MT_RECORDS; i++)
        mt_issue(s, i);
    snd = CreateThread(NULL, 0, mt_sender, s, 0, NULL);
    CHECK_EQ(WaitForSingleObject(snd, INFINITE), WAIT_OBJECT_0);
    CHECK(WAIT_UNTIL(atomic_load(&s->nseen) == MT_MESSAGES, 10000));
    atomic_store(&s->stop, 1);
    CancelIoEx(r.h, NULL);
    CHECK(WAIT_UNTIL(atomic_load(&s->outstanding) == 0, 10000));
    for (int i = 0; i < MT_THREADS; i++)
        CHECK(PostQueuedCompletionStatus(s->q, 0, 0, NULL));
    for (int i = 0; i < MT_THREADS; i++) {
        CHECK_EQ(WaitForSingleObject(th[i], INFINITE), WAIT_OBJECT_0);
        CloseHandle(th[i]);
    }
    CloseHandle(snd);
    CHECK_EQ(atomic_load(&s->bad), 0);
    int once = 1, balanced = 1;
    for (int i = 0; i < MT_MESSAGES; i++)
        once &= atomic_load(&s->seen[i]) == 1;
    for (int i = 0; i < MT_RECORDS; i++)
        balanced &= atomic_load(&s->issued[i]) == atomic_load(&s->completed[i]);
    CHECK(once);     /* every message reached exactly one get */
    CHECK(balanced); /* every get completed exactly once */
    CHECK_EQ(atomic_load(&s->aborted), MT_RECORDS);
    CloseHandle(s->q);
    free(s);
    rig_close(&r);
}

/* ---- the overlapped core API: a cancel racing deliveries never loses or doubles one ---- */

typedef struct {
    fsim_io io;
    msgbuf m;
    atomic_int calls;
    fp_hresult hr;
    sem_t done;
} race_get;

static void race_done(fsim_io *io, fp_hresult hr, uint32_t bytes)
{
    (void)bytes;
    race_get *g = (race_get *)(void *)io;
    g->hr = hr;
    atomic_fetch_add(&g->calls, 1);
    sem_post(&g->done);
}

typedef struct {
    rig *r;
    atomic_int stop;
    atomic_int delivered;
} race_sender;

static void *race_send_main(void *p)
{
    race_sender *rs = p;
    uint32_t x = 1;
    while (!atomic_load(&rs->stop))
        if (fsim_send(rs->r->c, &x, sizeof x, NULL, NULL, 1 * MS, NULL) == FP_STATUS_SUCCESS)
            atomic_fetch_add(&rs->delivered, 1); /* STATUS_TIMEOUT: withdrawn, never delivered */
    return NULL;
}

static void test_cancel_races(enum fsim_transport t)
{
    rig r;
    rig_open(&r, t, 0);
    SIM_HANDLE h = (SIM_HANDLE)(uintptr_t)r.h;
    race_sender rs = {&r, 0, 0};
    pthread_t st;
    pthread_create(&st, NULL, race_send_main, &rs);
    race_get g;
    sem_init(&g.done, 0, 0);
    int got = 0, aborted = 0, twice = 0;
    for (int i = 0; i < 2000; i++) {
        g.io = (fsim_io){.buffer = &g.m.h, .size = sizeof g.m, .key = &g, .done = race_done};
        atomic_store(&g.calls, 0);
        CHECK_EQ(SimFilterGetMessageAsync(h, &g.io), FP_E_IO_PENDING);
        fp_hresult c = SimFilterCancelIo(h, &g);
        if (c != FP_S_OK && c != FP_E_NOT_FOUND)
            CHECK_EQ(c, FP_S_OK);
        while (sem_wait(&g.done) != 0)
            ;
        got += g.hr == FP_S_OK;
        aborted += g.hr == FP_E_OPERATION_ABORTED;
        twice += atomic_load(&g.calls) != 1;
    }
    atomic_store(&rs.stop, 1);
    pthread_join(st, NULL); /* its last send times out (withdrawn) with no get pending */
    CHECK_EQ(twice, 0);
    CHECK_EQ(got + aborted >= 2000, 1);
    CHECK_EQ(got, atomic_load(&rs.delivered)); /* every delivered message reached a get */
    printf("    %s: %d received, %d aborted\n", tname(t), got, aborted);
    sem_destroy(&g.done);
    rig_close(&r);
}


/* ---- completion ports without a port ---- */

typedef struct {
    HANDLE q;
    ULONG_PTR key;
    DWORD err;
    BOOL ok;
} gq_arg;

static DWORD WINAPI gq_thread(LPVOID p)
{
    gq_arg *a = p;
    DWORD n;
    LPOVERLAPPED ov;
    a->ok = GetQueuedCompletionStatus(a->q, &n, &a->key, &ov, INFINITE);
    a->err = a->ok ? 0 : GetLastError();
    return 0;
}

static void test_iocp_alone(void)
{
    HANDLE q = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);
    CHECK(q != NULL);
    OVERLAPPED ov;
    DWORD n;
    ULONG_PTR key;
    LPOVERLAPPED got;
    CHECK(PostQueuedCompletionStatus(q, 7, 99, &ov));
    CHECK(PostQueuedCompletionStatus(q, 0, 100, NULL));
    CHECK(GetQueuedCompletionStatus(q, &n, &key, &got, INFINITE));
    CHECK(n == 7 && key == 99 && got == &ov);
    CHECK(GetQueuedCompletionStatus(q, &n, &key, &got, INFINITE));
    CHECK(n == 0 && key == 100 && got == NULL);

    /* waiting threads are released LIFO */
    gq_arg a = {q, 0, 0, 0}, b = {q, 0, 0, 0};
    HANDLE ta = CreateThread(NULL, 0, gq_thread, &a, 0, NULL);
    CHECK(WAIT_UNTIL(fsim_iocp_waiting((SIM_HANDLE)(uintptr_t)q) == 1, 2000));
    HANDLE tb = CreateThread(NULL, 0, gq_thread, &b, 0, NULL);
    CHECK(WAIT_UNTIL(fsim_iocp_waiting((SIM_HANDLE)(uintptr_t)q) == 2, 2000));
    CHECK(PostQueuedCompletionStatus(q, 0, 1, NULL));
    CHECK_EQ(WaitForSingleObject(tb, INFINITE), WAIT_OBJECT_0);
    CHECK(b.ok && b.key == 1);
    CHECK_EQ(WaitForSingleObject(ta, 0), WAIT_TIMEOUT);
    DWORD code = 0;
    CHECK(GetExitCodeThread(ta, &code));
    CHECK_EQ(code, STILL_ACTIVE);
    /* closing the port releases its waiter */
    CHECK(CloseHandle(q));
    CHECK_EQ(WaitForSingleObject(ta, INFINITE), WAIT_OBJECT_0);
    CHECK(!a.ok);
    CHECK_EQ(a.err, ERROR_ABANDONED_WAIT_0);
    CloseHandle(ta);
    CloseHandle(tb);
    CHECK(!GetQueuedCompletionStatus(q, &n, &key, &got, 0));
    CHECK_EQ(GetLastError(), ERROR_INVALID_HANDLE);
}

static void test_events(void)
{
    HANDLE m = CreateEventW(NULL, TRUE, FALSE, NULL), a = CreateEventA(NULL, FALSE, FALSE, NULL);
    CHECK(m && a);
    CHECK_EQ(WaitForSingleObject(m, 0), WAIT_TIMEOUT);
    CHECK(SetEvent(m));
    CHECK_EQ(WaitForSingleObject(m, 0), WAIT_OBJECT_0);
    CHECK_EQ(WaitForSingleObjectEx(m, 10, FALSE), WAIT_OBJECT_0); /* manual: stays set */
    CHECK(ResetEvent(m));
    CHECK_EQ(WaitForSingleObject(m, 1), WAIT_TIMEOUT);
    CHECK(SetEvent(a));
    CHECK_EQ(WaitForSingleObject(a, INFINITE), WAIT_OBJECT_0);
    CHECK_EQ(WaitForSingleObject(a, 0), WAIT_TIMEOUT); /* auto: consumed */
    CHECK(CreateEventA(NULL, FALSE, FALSE, "named") == NULL);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    CHECK(CloseHandle(m) && CloseHandle(a));
    SetLastError(1234);
    CHECK_EQ(GetLastError(), 1234);
}

static void test_sync_handle(enum fsim_transport t)
{
    rig r;
    rig_open(&r, t, FLT_PORT_FLAG_SYNC_HANDLE);
    msgbuf m;
    OVERLAPPED ov;
    memset(&ov, 0, sizeof ov);
    CHECK_EQ(FilterGetMessage(r.h, &m.h, sizeof m, &ov), E_INVALIDARG);
    fsim_io io = {.buffer = &m.h, .size = sizeof m, .done = race_done};
    CHECK_EQ(SimFilterGetMessageAsync((SIM_HANDLE)(uintptr_t)r.h, &io), FP_E_INVALIDARG);
    CHECK_EQ(pending(&r), 0);
    /* the synchronous get works: FilterGetMessage without an OVERLAPPED blocks */
    sender_arg a = {&r, "sync"};
    HANDLE th = CreateThread(NULL, 0, send_thread, &a, 0, NULL);
    CHECK_EQ(FilterGetMessage(r.h, &m.h, sizeof m, NULL), S_OK);
    CHECK(memcmp(m.p, "sync", 4) == 0);
    WaitForSingleObject(th, INFINITE);
    CloseHandle(th);
    rig_close(&r);
}

static void test_forged_handles(void)
{
    HANDLE ev = CreateEvent(NULL, FALSE, FALSE, NULL);
    HANDLE q = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);
    HANDLE bad[] = {NULL, INVALID_HANDLE_VALUE, (HANDLE)(uintptr_t)0x12345,
                    (HANDLE)(uintptr_t)((7ull << 32) | 3), (HANDLE)((uintptr_t)ev | 1),
                    (HANDLE)((uintptr_t)ev + (1ull << 32))}; /* a live slot, other generation */
    msgbuf m;
    OVERLAPPED ov;
    DWORD n;
    ULONG_PTR key;
    LPOVERLAPPED got;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        HANDLE h = bad[i];
        memset(&ov, 0, sizeof ov);
        CHECK_EQ(FilterGetMessage(h, &m.h, sizeof m, &ov), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
        CHECK(!GetQueuedCompletionStatus(h, &n, &key, &got, 0));
        CHECK_EQ(GetLastError(), ERROR_INVALID_HANDLE);
        CHECK(!PostQueuedCompletionStatus(h, 0, 0, NULL));
        CHECK(!CancelIoEx(h, NULL));
        CHECK_EQ(GetLastError(), ERROR_INVALID_HANDLE);
        CHECK_EQ(WaitForSingleObject(h, 0), WAIT_FAILED);
        CHECK(!SetEvent(h));
        CHECK(!CloseHandle(h));
        CHECK_EQ(GetLastError(), ERROR_INVALID_HANDLE);
        if (h != INVALID_HANDLE_VALUE)
            CHECK(CreateIoCompletionPort(h, NULL, 0, 0) == NULL);
    }
    /* the wrong type of handle */
    CHECK_EQ(FilterGetMessage(q, &m.h, sizeof m, &ov), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
    CHECK_EQ(FilterGetMessage(ev, &m.h, sizeof m, &ov), HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
    CHECK(!GetQueuedCompletionStatus(ev, &n, &key, &got, 0));
    CHECK_EQ(GetLastError(), ERROR_INVALID_HANDLE);
    CHECK(!SetEvent(q));
    CHECK_EQ(WaitForSingleObject(q, 0), WAIT_FAILED);
    CHECK(CreateIoCompletionPort(ev, NULL, 0, 0) == NULL);
    CHECK(CreateIoCompletionPort(INVALID_HANDLE_VALUE, ev, 0, 0) == NULL);
    /* closed handles */
    CHECK(CloseHandle(ev));
    CHECK(!SetEvent(ev));
    CHECK(!CloseHandle(ev));
    CHECK(CloseHandle(q));
    CHECK(!PostQueuedCompletionStatus(q, 0, 0, NULL));
    WCHAR none[] = L"\\NoSuchPort";
    HANDLE p = (HANDLE)1;
    CHECK_EQ(FilterConnectCommunicationPort(none, 0, NULL, 0, NULL, &p), HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND));
    CHECK(p == NULL);
}

int main(void)
{
    char dir[] = "/tmp/fpw32-XXXXXX";
    if (!mkdtemp(dir))
        return 2;
    setenv("FASTPORT_RUNTIME_DIR", dir, 1);
    alarm(120); /* a hang is a failure */
    enum fsim_transport ts[] = {FSIM_INPROC, FSIM_SOCKET};
    for (int i = 0; i < 2; i++) {
        enum fsim_transport t = ts[i];
        printf("-- %s\n", tname(t));
        test_pending_and_event(t);
        test_completion_port(t);
        test_cancel(t);
        test_disconnect_and_close(t);
        test_truncated(t);
        test_get_overlapped_result_wait(t);
        test_many_threads_one_port(t);
        test_cancel_races(t);
        test_sync_handle(t);
    }
    test_iocp_alone();
    test_events();
    test_forged_handles();
    CHECK_EQ(fsim_debug_live_clients(), 0);
    CHECK_EQ(fsim_debug_live_servers(), 0);
    char lock[64];
    snprintf(lock, sizeof lock, "%s/.lock", dir);
    unlink(lock); /* the ports' creation lock */
    rmdir(dir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
