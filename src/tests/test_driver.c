/* C test program of the load-generating test driver (src/driver), the bench/scanner protocols
 * (src/protocols/bench.h) and the C reference client (src/cref), inproc, no Python. */
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "driver/driver.h"
#include "cref/cref.h"

#define HW(h) ((void *)(uintptr_t)(h)) /* a SIM_HANDLE as the Win32 HANDLE fp_cref takes */

#include "check.h"

#define MS 1000000LL

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* 1 if replies_ok grows past `before` within 3 s (generous: a loaded machine stalls) */
static int progresses(fp_driver *d, uint64_t before)
{
    fp_driver_result p;
    for (int i = 0; i < 150; i++) {
        sleep_ms(20);
        fp_driver_progress(d, &p);
        if (p.replies_ok > before)
            return 1;
    }
    return 0;
}

/* ---- protocol unit tests ---- */

static uint32_t naive_checksum(const uint8_t *p, uint32_t len)
{
    uint32_t sum = 0;
    for (uint32_t i = 0; 4 * i < len; i++) {
        uint32_t w = 0;
        for (uint32_t b = 0; b < 4 && 4 * i + b < len; b++)
            w |= (uint32_t)p[4 * i + b] << (8 * b);
        sum += (i + 1) * w;
    }
    return sum;
}

static void test_checksum(void)
{
    uint8_t b[64];
    memset(b, 0, sizeof b);
    CHECK_EQ(bench_checksum(b, 0), 0);
    b[0] = 1;
    CHECK_EQ(bench_checksum(b, 4), 1);
    /* words 1, 2, 3: 1*1 + 2*2 + 3*3 = 14 */
    b[4] = 2;
    b[8] = 3;
    CHECK_EQ(bench_checksum(b, 12), 14);
    /* little-endian words: 0x04030201 at index 0 */
    uint8_t le[4] = {1, 2, 3, 4};
    CHECK_EQ(bench_checksum(le, 4), 0x04030201u);
    /* a partial last word is zero-padded: 1 + 2 * 0xFF = 511 */
    uint8_t five[5] = {1, 0, 0, 0, 0xFF};
    CHECK_EQ(bench_checksum(five, 5), 511);
    /* length bounds the bytes read: the 0xFF at byte 4 is outside length 4 */
    CHECK_EQ(bench_checksum(five, 4), 1);
    /* mod 2^32: 2 * 0xFFFFFFFF = 0x1FFFFFFFE -> 0xFFFFFFFE */
    uint8_t wrap[8] = {0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF};
    CHECK_EQ(bench_checksum(wrap, 8), 0xFFFFFFFEu);
    /* a 16-byte bench header {1, 2, 16, 0x42}: 1 + 2*2 + 3*16 + 4*0x42 = 317, infected */
    BENCH_MESSAGE m = {1, 2, 16, 0x42};
    BENCH_REPLY r;
    bench_expected_reply(&m, &r);
    CHECK_EQ(r.checksum, 317);
    CHECK_EQ(r.verdict, 1);
    m.marker = 0x1142;
    bench_expected_reply(&m, &r);
    CHECK_EQ(r.verdict, 1); /* only the low byte counts */
    m.marker = 0x4200;
    bench_expected_reply(&m, &r);
    CHECK_EQ(r.verdict, 0);
    CHECK_EQ(r.checksum, 1 + 4 + 48 + 4u * 0x4200u);

    /* the 4-lane loop equals the definition, and zero padding does not change it */
    uint8_t big[4096 + 8];
    uint64_t st = 7;
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)fp_splitmix64(&st);
    int same = 1, padded = 1;
    for (uint32_t len = 0; len <= 300; len++)
        if (bench_checksum(big, len) != naive_checksum(big, len))
            same = 0;
    if (bench_checksum(big, 4096) != naive_checksum(big, 4096))
        same = 0;
    for (uint32_t len = 0; len <= 200; len++) {
        uint8_t z[256];
        memset(z, 0, sizeof z);
        memcpy(z, big, len);
        if (bench_checksum(z, sizeof z) != bench_checksum(big, len))
            padded = 0;
    }
    CHECK(same);
    CHECK(padded);
}

static void test_scanner_rule(void)
{
    CHECK_EQ(scanner_find_foul((const uint8_t *)"xxfoul", 6), 2);
    CHECK_EQ(scanner_find_foul((const uint8_t *)"ffoul", 5), 1);
    CHECK_EQ(scanner_find_foul((const uint8_t *)"foul", 4), 0);
    CHECK_EQ(scanner_find_foul((const uint8_t *)"fou", 3), -1);
    CHECK_EQ(scanner_find_foul((const uint8_t *)"foulxx", 3), -1);
    CHECK_EQ(scanner_find_foul((const uint8_t *)"fofoufoul", 9), 5);
    CHECK_EQ(scanner_find_foul((const uint8_t *)"FOUL", 4), -1);

    static SCANNER_NOTIFICATION n;
    SCANNER_REPLY r;
    memset(&n, 'a', sizeof n);
    n.BytesToScan = 1024;
    scanner_expected_reply(&n, &r);
    CHECK_EQ(r.SafeToOpen, 1);
    memcpy(n.Contents + 1020, "foul", 4);
    scanner_expected_reply(&n, &r);
    CHECK_EQ(r.SafeToOpen, 0);
    n.BytesToScan = 1023; /* the last byte is not scanned */
    scanner_expected_reply(&n, &r);
    CHECK_EQ(r.SafeToOpen, 1);
    n.BytesToScan = 5000; /* clamped to the buffer */
    scanner_expected_reply(&n, &r);
    CHECK_EQ(r.SafeToOpen, 0);
    CHECK_EQ(fp_protocol_reply_size(FP_PROTO_BENCH), 8);
    CHECK_EQ(fp_protocol_reply_size(FP_PROTO_SCANNER), 1);
}

/* ---- a port with one or more connections ---- */

typedef struct rig {
    fsim_server *srv;
    SIM_HANDLE h;
    fsim_client *client;
} rig;

static void rig_open(rig *r, const char *name, uint32_t maxc)
{
    memset(r, 0, sizeof *r);
    fsim_callbacks cb = {0};
    CHECK_EQ(fsim_create_port(name, FSIM_INPROC, maxc, FSIM_ACCESS_OWNER, &cb, &r->srv),
             FP_STATUS_SUCCESS);
    CHECK_EQ(SimFilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &r->h), FP_S_OK);
    fsim_client *list[1];
    CHECK_EQ(fsim_server_clients(r->srv, list, 1), 1);
    r->client = list[0];
}

static void rig_close(rig *r)
{
    if (r->client)
        fsim_client_release(r->client);
    if (r->h)
        SimFilterClose(r->h);
    if (r->srv)
        fsim_close_server(r->srv);
    memset(r, 0, sizeof *r);
}

/* 1 while the tests run again in the in-flight mode: k messages in flight over at most 2
 * sender threads (fsim_send_async) instead of k threads blocked in fsim_send. */
static int in_flight_mode;

static fp_driver_config cfg_of(uint32_t k, int proto, uint32_t lo, uint32_t hi, uint64_t n)
{
    fp_driver_config c;
    fp_driver_config_init(&c);
    c.senders = in_flight_mode ? (k >= 2 ? 2 : 1) : k;
    c.inflight = in_flight_mode ? k : 0;
    c.protocol = proto;
    c.payload_min = lo;
    c.payload_max = hi;
    c.seconds = 0;
    c.messages = n;
    c.timeout_ns = 5000 * MS; /* a hang shows up as timeouts, not as a stuck test */
    return c;
}

/* Runs to the end (bounded) and returns the final result; checks the invariants every result
 * must satisfy. */
static void run_to_end(fp_driver *d, fp_driver_result *res, int64_t bound_ns)
{
    CHECK_EQ(fp_driver_wait(d, bound_ns), FP_DRIVER_DONE);
    fp_driver_wait(d, -1);
    CHECK_EQ(fp_driver_get_result(d, res), 0);
    CHECK_EQ(res->sent, res->replies_ok + res->bad_replies + res->timeouts + res->disconnects +
                            res->overflows + res->errors);
    const fp_hist *h = fp_driver_histogram(d);
    CHECK(h != NULL);
    if (h) {
        fp_hist_summary s;
        fp_hist_summarize(h, &s);
        CHECK_EQ(s.count, res->replies_ok + res->bad_replies);
        uint64_t buckets = 0;
        for (uint32_t b = 0; b < FP_HIST_BUCKETS; b++)
            buckets += atomic_load(&((fp_hist *)h)->buckets[b]);
        CHECK_EQ(buckets, s.count);
        CHECK(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.p999 && s.p999 <= s.max);
        CHECK_EQ(res->latency.p99, s.p99);
        fp_hist_row rows[FP_HIST_BUCKETS];
        size_t nr = fp_driver_histogram_rows(d, rows, FP_HIST_BUCKETS);
        uint64_t total = 0;
        int ordered = 1;
        for (size_t i = 0; i < nr; i++) {
            total += rows[i].count;
            if (rows[i].count == 0 || rows[i].low > rows[i].high ||
                (i && rows[i].low <= rows[i - 1].high))
                ordered = 0;
        }
        CHECK_EQ(total, s.count);
        CHECK(ordered);
        CHECK_EQ(fp_driver_histogram_rows(d, rows, 0), nr);
    }
    CHECK_EQ(res->running, 0);
}

static void test_invalid_config(void)
{
    rig r;
    rig_open(&r, "\\DrvInvalid", 1);
    fp_driver *d = (fp_driver *)1;
    fp_driver_config c = cfg_of(1, FP_PROTO_BENCH, 16, 16, 10);
    CHECK_EQ(fp_driver_start(&c, NULL, &d), FP_E_INVALIDARG);
    CHECK(d == NULL);
    CHECK_EQ(fp_driver_start(NULL, r.client, &d), FP_E_INVALIDARG);
    c.senders = 0;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_E_INVALIDARG);
    c = cfg_of(1, FP_PROTO_BENCH, 15, 16, 10);
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_E_INVALIDARG);
    c = cfg_of(1, FP_PROTO_BENCH, 100, 99, 10);
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_E_INVALIDARG);
    c = cfg_of(1, FP_PROTO_BENCH, 16, FSIM_MAX_MESSAGE + 1, 10);
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_E_INVALIDARG);
    c = cfg_of(1, 7, 16, 16, 10);
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_E_INVALIDARG);
    c = cfg_of(1, FP_PROTO_BENCH, 16, 16, 0); /* neither seconds nor messages */
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_E_INVALIDARG);
    c = cfg_of(1, FP_PROTO_BENCH, 16, 16, 10);
    c.rate = -1;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_E_INVALIDARG);
    c.rate = 0;
    c.warmup = -0.5;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_E_INVALIDARG);
    c = cfg_of(4, FP_PROTO_BENCH, 16, 16, 10);
    c.senders = 4;
    c.inflight = 3; /* fewer in flight than sender threads */
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_E_INVALIDARG);
    c.inflight = FP_DRIVER_MAX_INFLIGHT + 1;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_E_INVALIDARG);
    c = cfg_of(1, FP_PROTO_BENCH, 16, FSIM_MAX_MESSAGE, 10);
    c.inflight = 1025; /* 1 GiB of message buffers */
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_E_INVALIDARG);
    c = cfg_of(1, FP_PROTO_SCANNER, 0, 0, 10); /* scanner ignores the payload range */
    fp_cref *cr = NULL;
    CHECK_EQ(fp_cref_start(HW(r.h), 1, 4, FP_PROTO_SCANNER, 1032, &cr), FP_S_OK);
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    fp_driver_result res;
    run_to_end(d, &res, 5000 * MS);
    CHECK_EQ(res.replies_ok, 10);
    fp_driver_destroy(d);
    fp_cref_destroy(cr);

    CHECK_EQ(fp_cref_start(HW(r.h), 0, 4, FP_PROTO_BENCH, 64, &cr), FP_E_INVALIDARG);
    CHECK_EQ(fp_cref_start(HW(r.h), 1, 0, FP_PROTO_BENCH, 64, &cr), FP_E_INVALIDARG);
    CHECK_EQ(fp_cref_start(HW(r.h), 1, 1, 9, 64, &cr), FP_E_INVALIDARG);
    CHECK_EQ(fp_cref_start(NULL, 1, 1, FP_PROTO_BENCH, 64, &cr), FP_E_INVALIDARG);
    CHECK(cr == NULL);
    rig_close(&r);
}

/* ---- closed loop against the C reference client ---- */

static void closed_case(uint32_t k, int proto, uint32_t lo, uint32_t hi, uint64_t n,
                        uint32_t cref_threads)
{
    rig r;
    rig_open(&r, "\\DrvClosed", 1);
    fp_cref *cr = NULL;
    uint32_t maxp = proto == FP_PROTO_SCANNER ? 1032 : hi;
    CHECK_EQ(fp_cref_start(HW(r.h), cref_threads, 16, proto, maxp, &cr), FP_S_OK);
    fp_driver_config c = cfg_of(k, proto, lo, hi, n);
    c.seed = 1234 + k;
    fp_driver *d = NULL;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    fp_driver_result res;
    run_to_end(d, &res, 10000 * MS);
    CHECK_EQ(res.sent, n);
    CHECK_EQ(res.replies_ok, n);
    CHECK_EQ(res.bad_replies, 0);
    CHECK_EQ(res.timeouts, 0);
    CHECK_EQ(res.disconnects, 0);
    CHECK_EQ(res.overflows, 0);
    CHECK_EQ(res.errors, 0);
    CHECK_EQ(res.warmup_messages, 0);
    CHECK(res.seconds > 0);
    CHECK(res.throughput > 0);
    CHECK(res.latency.p50 > 0);
    fp_driver_destroy(d);
    fp_cref_stop(cr);
    fp_cref_join(cr);
    fp_cref_stats cs;
    fp_cref_stats_get(cr, &cs);
    CHECK_EQ(cs.received, n);
    CHECK_EQ(cs.replied, n);
    CHECK_EQ(cs.errors, 0);
    CHECK_EQ(cs.late, 0);
    CHECK_EQ(cs.threads_running, 0);
    CHECK(cs.batches > 0 && cs.batches <= n);
    fp_cref_destroy(cr);
    rig_close(&r);
    printf("  closed K=%u %s payload [%u, %u]: %llu msgs, %.0f msg/s, p99 %llu us\n", k,
           proto == FP_PROTO_BENCH ? "bench" : "scanner", lo, hi, (unsigned long long)n,
           res.throughput, (unsigned long long)(res.latency.p99 / 1000));
}

static void test_closed_loop(void)
{
    closed_case(8, FP_PROTO_BENCH, 1024, 1024, 4000, 2);
    closed_case(64, FP_PROTO_BENCH, 1024, 1024, 6400, 2);
    closed_case(8, FP_PROTO_BENCH, 16, 100, 3000, 1);     /* every remainder mod 4 */
    closed_case(64, FP_PROTO_BENCH, 16, 4096, 6400, 4);
    closed_case(8, FP_PROTO_BENCH, 16, 16, 1000, 2);      /* header only */
    closed_case(4, FP_PROTO_BENCH, 60000, 70001, 200, 2); /* large, ranged */
    closed_case(8, FP_PROTO_SCANNER, 0, 0, 4000, 2);
    closed_case(64, FP_PROTO_SCANNER, 0, 0, 6400, 2);
}

static void test_seconds_and_warmup(void)
{
    rig r;
    rig_open(&r, "\\DrvSeconds", 1);
    fp_cref *cr = NULL;
    CHECK_EQ(fp_cref_start(HW(r.h), 2, 16, FP_PROTO_BENCH, 2048, &cr), FP_S_OK);
    fp_driver_config c = cfg_of(8, FP_PROTO_BENCH, 16, 2048, 0);
    c.seconds = 0.4;
    c.warmup = 0.2;
    fp_driver *d = NULL;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    fp_driver_result p;
    fp_driver_progress(d, &p);
    CHECK_EQ(p.in_warmup, 1); /* 200 ms of warmup have not passed yet */
    CHECK_EQ(p.sent, 0);
    CHECK_EQ(p.running, 1);
    fp_driver_result res;
    run_to_end(d, &res, 5000 * MS);
    if (res.sent == 0 || res.warmup_messages == 0)
        fprintf(stderr, "warmup run: warmup %llu sent %llu seconds %.3f p99 %llu us max %llu us\n",
                (unsigned long long)res.warmup_messages, (unsigned long long)res.sent,
                res.seconds, (unsigned long long)(res.latency.p99 / 1000),
                (unsigned long long)(res.latency.max / 1000));
    CHECK(res.warmup_messages > 0);
    CHECK(res.sent > 0);
    CHECK_EQ(res.replies_ok, res.sent);
    CHECK(res.seconds >= 0.39 && res.seconds < 10.0);
    CHECK(res.throughput > 0);
    fp_cref_stop(cr);
    fp_cref_join(cr); /* a sender may see its reply before the cref thread counts it */
    fp_cref_stats cs;
    fp_cref_stats_get(cr, &cs);
    CHECK_EQ(cs.replied, res.sent + res.warmup_messages);
    fp_driver_destroy(d);
    fp_cref_destroy(cr);
    rig_close(&r);
}

/* ---- a responder that answers wrongly on purpose ---- */

enum { RESP_CORRECT, RESP_CORRUPT10, RESP_SWAP, RESP_SHORT7, RESP_LONG5, RESP_SILENT };

typedef struct {
    FP_MESSAGE_HEADER h;
    uint8_t p[4096];
} rmsg;

/* One of the responder's 8 overlapped gets; completions come back on a list + semaphore. */
typedef struct rget {
    fsim_io io;
    rmsg m;
    struct rget *next;
    fp_hresult hr;
} rget;

typedef struct responder {
    SIM_HANDLE h;
    int mode;
    int protocol;
    pthread_t t;
    atomic_int stop;
    uint64_t replies, spoiled, infected; /* read after join */
    atomic_ulong received;               /* live */
    rget gets[8];
    pthread_mutex_t mu;
    sem_t sem;
    rget *done;
} responder;

static void rget_done(fsim_io *io, fp_hresult hr, uint32_t bytes)
{
    (void)bytes;
    rget *g = (rget *)(void *)io;
    responder *r = io->user;
    g->hr = hr;
    pthread_mutex_lock(&r->mu);
    g->next = r->done;
    r->done = g;
    pthread_mutex_unlock(&r->mu);
    sem_post(&r->sem);
}

/* 1 when pending; a stop that raced it cancels it (the stop's cancel may have come first). */
static int rget_issue(responder *r, rget *g)
{
    g->io = (fsim_io){.buffer = &g->m.h, .size = sizeof g->m, .key = r, .done = rget_done,
                      .user = r};
    if (SimFilterGetMessageAsync(r->h, &g->io) != FP_E_IO_PENDING)
        return 0;
    if (atomic_load(&r->stop))
        SimFilterCancelIo(r->h, r);
    return 1;
}
typedef struct {
    FP_REPLY_HEADER h;
    uint8_t p[16];
} rreply;

static void *responder_main(void *arg)
{
    responder *r = arg;
    static __thread rreply reps[8];
    rmsg *msgs[8];
    rget *taken[8];
    SIM_REPLY_ENTRY re[8];
    uint32_t rsize = fp_protocol_reply_size(r->protocol), pending = 0;
    for (int i = 0; i < 8; i++)
        pending += (uint32_t)rget_issue(r, &r->gets[i]);
    while (pending) {
        while (sem_wait(&r->sem) != 0)
            ;
        pthread_mutex_lock(&r->mu);
        rget *list = r->done;
        r->done = NULL;
        pthread_mutex_unlock(&r->mu);
        uint32_t n = 0, nt = 0; /* the other posts find the list empty */
        for (rget *g = list; g; g = g->next) {
            pending--;
            if (g->hr == FP_S_OK)
                msgs[n++] = &g->m;
            taken[nt++] = g; /* aborted (stop) or disconnected: not re-issued */
        }
        atomic_fetch_add(&r->received, n);
        if (r->mode != RESP_SILENT) {
            for (uint32_t i = 0; i < n; i++) {
                memset(&reps[i], 0, sizeof reps[i]);
                reps[i].h.MessageId = msgs[i]->h.MessageId;
                uint32_t size = 16 + rsize;
                if (r->protocol == FP_PROTO_BENCH) {
                    BENCH_REPLY br;
                    bench_expected_reply((const BENCH_MESSAGE *)(void *)msgs[i]->p, &br);
                    r->infected += br.verdict;
                    memcpy(reps[i].p, &br, sizeof br);
                } else {
                    SCANNER_REPLY sr;
                    scanner_expected_reply((const SCANNER_NOTIFICATION *)(void *)msgs[i]->p, &sr);
                    r->infected += sr.SafeToOpen == 0;
                    memcpy(reps[i].p, &sr, sizeof sr);
                }
                r->replies++;
                if (r->mode == RESP_CORRUPT10 && r->replies % 10 == 0) {
                    reps[i].p[0] ^= 1;
                    r->spoiled++;
                } else if (r->mode == RESP_SHORT7 && r->replies % 7 == 0) {
                    size = 16 + rsize / 2;
                    r->spoiled++;
                } else if (r->mode == RESP_LONG5 && r->replies % 5 == 0) {
                    size = 16 + rsize + 4;
                    r->spoiled++;
                }
                re[i].buffer = &reps[i].h;
                re[i].size = size;
            }
            if (r->mode == RESP_SWAP && n >= 2) {
                /* message 0 gets message 1's answer and the other way round */
                rreply tmp = reps[0];
                memcpy(reps[0].p, reps[1].p, sizeof reps[0].p);
                memcpy(reps[1].p, tmp.p, sizeof tmp.p);
                r->spoiled += 2;
            }
            if (n)
                SimFilterReplyMessages(r->h, re, n);
        }
        for (uint32_t i = 0; i < nt; i++)
            if (taken[i]->hr == FP_S_OK && !atomic_load(&r->stop))
                pending += (uint32_t)rget_issue(r, taken[i]);
    }
    return NULL;
}

static void responder_start(responder *r, SIM_HANDLE h, int mode, int protocol)
{
    memset(r, 0, sizeof *r);
    r->h = h;
    r->mode = mode;
    r->protocol = protocol;
    pthread_mutex_init(&r->mu, NULL);
    sem_init(&r->sem, 0, 0);
    pthread_create(&r->t, NULL, responder_main, r);
}

static void responder_stop(responder *r)
{
    atomic_store(&r->stop, 1);
    SimFilterCancelIo(r->h, r);
    pthread_join(r->t, NULL);
    sem_destroy(&r->sem);
    pthread_mutex_destroy(&r->mu);
}

static void test_wrong_responder(void)
{
    const uint64_t n = 1000;
    for (int proto = FP_PROTO_BENCH; proto <= FP_PROTO_SCANNER; proto++) {
        int modes[] = {RESP_CORRECT, RESP_CORRUPT10, RESP_SWAP, RESP_SHORT7, RESP_LONG5};
        for (size_t mi = 0; mi < sizeof modes / sizeof modes[0]; mi++) {
            int mode = modes[mi];
            if (proto == FP_PROTO_SCANNER && mode == RESP_SWAP)
                continue; /* two scanner answers are often equal: not an exact count */
            rig r;
            rig_open(&r, "\\DrvWrong", 1);
            responder rs;
            responder_start(&rs, r.h, mode, proto);
            fp_driver_config c = cfg_of(8, proto, 16, 600, n);
            fp_driver *d = NULL;
            CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
            fp_driver_result res;
            run_to_end(d, &res, 10000 * MS);
            fp_driver_destroy(d);
            responder_stop(&rs);
            CHECK_EQ(res.sent, n);
            CHECK_EQ(rs.replies, n);
            CHECK_EQ(res.reply_size, fp_protocol_reply_size(proto));
            switch (mode) {
            case RESP_CORRECT:
                CHECK_EQ(res.replies_ok, n);
                /* about 1 in 16 infected */
                CHECK(rs.infected >= n / 40 && rs.infected <= n / 8);
                break;
            case RESP_CORRUPT10:
                CHECK_EQ(res.bad_replies, n / 10);
                CHECK_EQ(res.wrong_size, 0); /* right length, wrong content */
                CHECK_EQ(res.replies_ok, n - n / 10);
                break;
            case RESP_SWAP:
                CHECK(rs.spoiled > 0);
                CHECK_EQ(res.bad_replies, rs.spoiled);
                CHECK_EQ(res.replies_ok, n - rs.spoiled);
                break;
            case RESP_SHORT7:
                CHECK_EQ(res.bad_replies, n / 7);
                CHECK_EQ(res.wrong_size, n / 7); /* every bad reply was short */
                CHECK_EQ(res.wrong_size_length, fp_protocol_reply_size(proto) / 2);
                CHECK_EQ(res.replies_ok, n - n / 7);
                break;
            case RESP_LONG5:
                CHECK_EQ(res.overflows, n / 5);
                CHECK_EQ(res.bad_replies, 0);
                CHECK_EQ(res.wrong_size, 0);
                CHECK_EQ(res.replies_ok, n - n / 5);
                break;
            }
            CHECK_EQ(res.timeouts, 0);
            rig_close(&r);
        }
    }
}

/* ---- open loop ---- */

static void test_open_loop(void)
{
    rig r;
    rig_open(&r, "\\DrvOpen", 1);
    fp_cref *cr = NULL;
    CHECK_EQ(fp_cref_start(HW(r.h), 2, 16, FP_PROTO_BENCH, 1024, &cr), FP_S_OK);
    fp_driver_config c = cfg_of(8, FP_PROTO_BENCH, 256, 1024, 0);
    c.seconds = 0.6;
    c.rate = 4000;
    fp_driver *d = NULL;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    fp_driver_result res;
    run_to_end(d, &res, 5000 * MS);
    CHECK(res.sent > 0);
    CHECK_EQ(res.replies_ok, res.sent);
    /* Arrivals follow the intended schedule even when the machine is slow (a sender that is
     * behind sends at once), so the count is ~ rate x seconds = 2400 (Poisson: sd ~ 50);
     * throughput divides by the elapsed time, which load can stretch: only sanity there. */
    CHECK(res.sent > 1800 && res.sent < 3000);
    CHECK(res.throughput > 0);
    printf("  open loop at 4000/s: %.0f msg/s, p50 %llu us, p99 %llu us\n", res.throughput,
           (unsigned long long)(res.latency.p50 / 1000),
           (unsigned long long)(res.latency.p99 / 1000));
    fp_driver_destroy(d);

    /* messages-bounded open loop: exactly that many */
    c = cfg_of(4, FP_PROTO_BENCH, 64, 64, 300);
    c.rate = 3000;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    run_to_end(d, &res, 5000 * MS);
    CHECK_EQ(res.sent, 300);
    CHECK_EQ(res.replies_ok, 300);
    fp_driver_destroy(d);

    /* many senders, low rate, bounded count: the run ends with the last arrival, not when the
     * slowest sender wakes for an arrival past the end (~0.32 s x ln 64 later) */
    c = cfg_of(64, FP_PROTO_BENCH, 64, 64, 40);
    c.rate = 200;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    run_to_end(d, &res, 5000 * MS);
    CHECK_EQ(res.replies_ok, 40);
    CHECK(res.seconds > 0.05 && res.seconds < 0.8);
    fp_driver_destroy(d);
    fp_cref_destroy(cr);
    rig_close(&r);
}

/* Open loop measures from the intended send time: a responder that stalls makes the queued
 * sends' latency include the stall (coordinated omission avoided). */
static void test_open_loop_counts_queueing(void)
{
    rig r;
    rig_open(&r, "\\DrvStall", 1);
    fp_driver_config c = cfg_of(1, FP_PROTO_BENCH, 64, 64, 0);
    c.seconds = 0.4;
    c.rate = 1000;
    fp_driver *d = NULL;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    sleep_ms(200); /* nobody serves for 200 ms: ~200 arrivals fall behind */
    fp_cref *cr = NULL;
    CHECK_EQ(fp_cref_start(HW(r.h), 1, 16, FP_PROTO_BENCH, 64, &cr), FP_S_OK);
    fp_driver_result res;
    run_to_end(d, &res, 5000 * MS);
    CHECK(res.replies_ok > 100);
    /* closed-loop accounting would report one slow message; here ~45% waited over 20 ms */
    CHECK(res.latency.p90 > 50 * MS);
    CHECK(res.latency.max > 150 * MS);
    fp_driver_destroy(d);
    fp_cref_destroy(cr);
    rig_close(&r);
}

/* ---- timeouts, disconnects, stop, abort ---- */

static void test_timeouts(void)
{
    /* a responder that takes messages and never answers */
    rig r;
    rig_open(&r, "\\DrvTimeout", 1);
    responder rs;
    responder_start(&rs, r.h, RESP_SILENT, FP_PROTO_BENCH);
    fp_driver_config c = cfg_of(4, FP_PROTO_BENCH, 64, 64, 0);
    c.seconds = 0.3;
    c.timeout_ns = 20 * MS;
    fp_driver *d = NULL;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    fp_driver_result res;
    run_to_end(d, &res, 5000 * MS);
    CHECK(res.timeouts > 0);
    CHECK_EQ(res.timeouts, res.sent);
    CHECK_EQ(res.replies_ok, 0);
    CHECK_EQ(res.latency.count, 0);
    fp_driver_destroy(d);
    responder_stop(&rs);

    /* nobody gets at all: queued messages are withdrawn at the timeout */
    c.messages = 8;
    c.seconds = 0;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    run_to_end(d, &res, 5000 * MS);
    CHECK_EQ(res.timeouts, 8);
    CHECK_EQ(res.sent, 8);
    fp_driver_destroy(d);
    rig_close(&r);
}

static void test_disconnect(void)
{
    rig r;
    rig_open(&r, "\\DrvDisc", 1);
    fp_cref *cr = NULL;
    CHECK_EQ(fp_cref_start(HW(r.h), 2, 16, FP_PROTO_BENCH, 1024, &cr), FP_S_OK);
    fp_driver_config c = cfg_of(8, FP_PROTO_BENCH, 1024, 1024, 0);
    c.seconds = 30;
    fp_driver *d = NULL;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    CHECK(progresses(d, 0));
    CHECK_EQ(SimFilterClose(r.h), FP_S_OK); /* the service closes its handle mid-run */
    r.h = 0;
    fp_driver_result res;
    run_to_end(d, &res, 3000 * MS); /* every sender stops at once, long before 30 s */
    if (in_flight_mode) /* the sends in flight then: a thread refills no slot after one */
        CHECK(res.disconnects >= 1 && res.disconnects <= 8);
    else
        CHECK_EQ(res.disconnects, 8); /* each sender stops at its first */
    CHECK(res.replies_ok > 0);
    CHECK_EQ(res.bad_replies, 0);
    CHECK(res.seconds < 5);
    fp_driver_destroy(d);
    fp_cref_join(cr); /* the threads exit on their own: the port is gone */
    fp_cref_stats cs;
    fp_cref_stats_get(cr, &cs);
    CHECK_EQ(cs.threads_running, 0);
    fp_cref_destroy(cr);
    rig_close(&r);
}

static void test_stop_and_abort(void)
{
    rig r;
    rig_open(&r, "\\DrvStop", 1);
    fp_cref *cr = NULL;
    CHECK_EQ(fp_cref_start(HW(r.h), 2, 16, FP_PROTO_BENCH, 1024, &cr), FP_S_OK);
    fp_driver_config c = cfg_of(16, FP_PROTO_BENCH, 1024, 1024, 0);
    c.seconds = 100;
    fp_driver *d = NULL;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    fp_driver_result p1, p2;
    CHECK(progresses(d, 0));
    fp_driver_progress(d, &p1);
    CHECK(WAIT_UNTIL((fp_driver_progress(d, &p2), p2.replies_ok > p1.replies_ok), 5000));
    CHECK(p1.sent > 0);
    CHECK(p2.sent >= p1.sent);
    CHECK_EQ(p2.running, 1);
    CHECK_EQ(p2.senders_running, c.senders);
    CHECK(p2.latency.count > 0 && p2.latency.p99 > 0);
    CHECK(p2.seconds > p1.seconds); /* the clock runs */
    CHECK_EQ(fp_driver_wait(d, 10 * MS), FP_DRIVER_RUNNING);
    CHECK_EQ(fp_driver_get_result(d, &p1), -1);
    CHECK(fp_driver_histogram(d) == NULL);
    fp_driver_stop(d);
    fp_driver_result res;
    run_to_end(d, &res, 2000 * MS);
    CHECK_EQ(res.replies_ok, res.sent);
    CHECK(res.seconds < 5);
    fp_driver_progress(d, &p1); /* once done, progress is the final result */
    CHECK_EQ(p1.sent, res.sent);
    fp_driver_destroy(d);
    fp_cref_destroy(cr);

    /* senders stuck in sends without a timeout: stop cannot end them, abort does */
    responder rs;
    responder_start(&rs, r.h, RESP_SILENT, FP_PROTO_BENCH);
    c = cfg_of(4, FP_PROTO_BENCH, 64, 64, 0);
    c.seconds = 100;
    c.timeout_ns = -1;
    CHECK_EQ(fp_driver_start(&c, r.client, &d), FP_S_OK);
    for (int i = 0; i < 300 && atomic_load(&rs.received) < 4; i++)
        sleep_ms(10); /* every sender has its message in flight */
    CHECK_EQ(atomic_load(&rs.received), 4);
    fp_driver_stop(d);
    CHECK_EQ(fp_driver_wait(d, 100 * MS), FP_DRIVER_RUNNING);
    fp_driver_abort(d);
    run_to_end(d, &res, 2000 * MS);
    CHECK_EQ(res.disconnects, 4);
    fp_driver_destroy(d);
    responder_stop(&rs);
    rig_close(&r);
}

/* ---- server mode: round-robin over the connected clients ---- */


static void test_server_mode(void)
{
    rig r;
    rig_open(&r, "\\DrvServer", 2);
    SIM_HANDLE h2 = 0;
    CHECK_EQ(SimFilterConnectCommunicationPort("\\DrvServer", 0, NULL, 0, NULL, &h2), FP_S_OK);
    fp_cref *c1 = NULL, *c2 = NULL;
    CHECK_EQ(fp_cref_start(HW(r.h), 1, 16, FP_PROTO_BENCH, 1024, &c1), FP_S_OK);
    CHECK_EQ(fp_cref_start(HW(h2), 1, 16, FP_PROTO_BENCH, 1024, &c2), FP_S_OK);
    fp_driver_config c = cfg_of(8, FP_PROTO_BENCH, 32, 1024, 2000);
    fp_driver *d = NULL;
    CHECK_EQ(fp_driver_start_server(&c, NULL, &d), FP_E_INVALIDARG);
    CHECK_EQ(fp_driver_start_server(&c, r.srv, &d), FP_S_OK);
    fp_driver_result res;
    run_to_end(d, &res, 10000 * MS);
    CHECK_EQ(res.replies_ok, 2000);
    fp_driver_destroy(d);
    fp_cref_stats s1, s2;
    for (int i = 0; i < 100; i++) { /* a cref thread counts a reply just after sending it */
        fp_cref_stats_get(c1, &s1);
        fp_cref_stats_get(c2, &s2);
        if (s1.replied + s2.replied >= 2000)
            break;
        sleep_ms(10);
    }
    CHECK(s1.replied > 0 && s2.replied > 0);
    CHECK_EQ(s1.replied + s2.replied, 2000);

    /* one connection goes away mid-run: its senders move to the other one */
    c.messages = 0;
    c.seconds = 30;
    uint64_t before = s2.replied;
    CHECK_EQ(fp_driver_start_server(&c, r.srv, &d), FP_S_OK);
    /* mid-run: h2 serves this run too */
    CHECK(WAIT_UNTIL((fp_cref_stats_get(c2, &s2), s2.replied > before + 100), 5000));
    CHECK_EQ(SimFilterClose(h2), FP_S_OK);
    fp_cref_join(c2);
    for (int i = 0; i < 150; i++) { /* the senders that were on h2 see the disconnect */
        fp_driver_progress(d, &res);
        if (res.disconnects >= 1)
            break;
        sleep_ms(20);
    }
    CHECK(res.disconnects >= 1 && res.disconnects <= 8);
    CHECK(progresses(d, res.replies_ok)); /* still going, on the other connection */
    fp_driver_progress(d, &res);
    CHECK_EQ(res.running, 1);
    CHECK_EQ(res.senders_running, c.senders);
    /* closing the server port stops new connections only: the run goes on */
    fsim_close_server(r.srv);
    r.srv = NULL;
    fp_driver_progress(d, &res);
    CHECK(progresses(d, res.replies_ok));
    /* the last connection goes too: every sender finds no client and stops */
    CHECK_EQ(SimFilterClose(r.h), FP_S_OK);
    r.h = 0;
    run_to_end(d, &res, 3000 * MS);
    CHECK_EQ(res.bad_replies, 0);
    CHECK(res.seconds < 5);
    fp_driver_destroy(d);
    fp_cref_destroy(c1);
    fp_cref_destroy(c2);
    rig_close(&r);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_checksum();
    test_scanner_rule();
    test_invalid_config();
    test_closed_loop();
    test_seconds_and_warmup();
    test_wrong_responder();
    test_open_loop();
    test_open_loop_counts_queueing();
    test_timeouts();
    test_disconnect();
    test_stop_and_abort();
    test_server_mode();
    printf("again, in the in-flight mode (fsim_send_async):\n");
    in_flight_mode = 1;
    test_invalid_config();
    test_closed_loop();
    test_seconds_and_warmup();
    test_wrong_responder();
    test_open_loop();
    test_open_loop_counts_queueing();
    test_timeouts();
    test_disconnect();
    test_stop_and_abort();
    test_server_mode();
    CHECK_EQ(fsim_debug_live_clients(), 0);
    CHECK_EQ(fsim_debug_live_servers(), 0);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
