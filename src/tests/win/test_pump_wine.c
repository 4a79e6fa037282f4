/* The pump over src/backends/fltlib.c on Windows (run under Wine by `make wine`), against the
 * FltLib test double (fltlib_double.h): real overlapped reads on a message-mode named pipe, the
 * backend's own completion port, GetQueuedCompletionStatusEx and CancelIoEx. The "kernel" side
 * (fltd_send, the replies' checks) runs in a thread of its own where it has to wait.
 * The last line is "N passed, M failed" (tests); exit status 1 on any failure. */
#include <windows.h>
#include <fltuser.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/fltlib.h"
#include "common/fp_os.h"
#include "pump/pump.h"
#include "tests/check.h"
#include "tests/pump_kit.h"
#include "tests/win/fltlib_double.h"

#define S 5000                   /* ms: bound of any wait (a hang fails, never passes) */
#define NEXT_NS (5000000000LL)   /* the same for fp_pump_next */
#define MSG_SIZE 24u             /* payload: u64 sequence number + 16 pattern bytes */
#define REPLY_SIZE 8u            /* payload: u64 */
#define E_PORT_GONE ((uint32_t)HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE))
static const uint64_t DEFAULT_WORD = 0xD0D0D0D0CAFEF00Dull;

static uint64_t reply_of(uint64_t seq)
{
    return seq * 3u + 7u;
}

static int32_t status_of(uint64_t seq)
{
    return (int32_t)(seq % 1000u) + 1;
}

static void body_of(uint64_t seq, uint8_t *out, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++)
        out[i] = (uint8_t)(seq * 31u + i);
    if (len >= 8)
        memcpy(out, &seq, 8);
}

static fp_pump_config cfg_of(uint32_t threads, uint32_t outstanding, uint32_t batch)
{
    fp_pump_config c;
    fp_pump_config_init(&c);
    c.threads = threads;
    c.outstanding = outstanding;
    c.batch = batch;
    c.message_size = MSG_SIZE;
    c.reply_size = REPLY_SIZE;
    c.default_reply = &DEFAULT_WORD;
    return c;
}

/* A port, the client's handle, the backend over it, a started pump. */
typedef struct rig {
    fltd_kernel *k;
    HANDLE port, iocp; /* iocp: ours when bound here (else the backend made its own) */
    fp_backend *b;
    fp_pump *p;
} rig;

static bool rig_open(rig *r, const fp_pump_config *cfg, bool kernel_knows_iocp)
{
    memset(r, 0, sizeof *r);
    r->k = fltd_create(L"\\FastportTestPort");
    CHECK(r->k != NULL);
    if (!r->k)
        return false;
    HRESULT hr = FilterConnectCommunicationPort(L"\\FastportTestPort", 0, NULL, 0, NULL, &r->port);
    CHECK_EQ((uint32_t)hr, (uint32_t)S_OK);
    if (FAILED(hr))
        return false;
    fp_hresult fh;
    if (kernel_knows_iocp) {
        CHECK_EQ((uint32_t)fp_fltlib_completion_port(r->port, (void **)&r->iocp), FP_S_OK);
        fltd_bind_completion(r->k, r->iocp);
    }
    r->b = fp_fltlib_backend_new(r->port, r->iocp, FP_BACKEND_LOCAL_REPLY, &fh);
    CHECK_EQ((uint32_t)fh, FP_S_OK);
    if (!r->b)
        return false;
    CHECK_EQ((uint32_t)fp_pump_create(r->b, cfg, &r->p), FP_S_OK);
    if (!r->p)
        return false;
    CHECK_EQ((uint32_t)fp_pump_start(r->p), FP_S_OK);
    return true;
}

static void rig_close(rig *r)
{
    if (r->p)
        CHECK_EQ((uint32_t)fp_pump_destroy(r->p), FP_S_OK);
    if (r->b)
        r->b->ops->destroy(r->b);
    fp_fltlib_close(r->iocp);
    if (r->port && r->port != INVALID_HANDLE_VALUE)
        CloseHandle(r->port);
    fltd_destroy(r->k);
}

static fltd_stats kstats(fltd_kernel *k)
{
    fltd_stats s;
    fltd_stats_get(k, &s);
    return s;
}

static fp_pump_stats pstats(fp_pump *p)
{
    fp_pump_stats s;
    fp_pump_stats_get(p, &s);
    return s;
}

static uint64_t send_seq(fltd_kernel *k, uint64_t seq, uint32_t len)
{
    uint8_t body[256];
    body_of(seq, body, len);
    return fltd_send(k, body, len, REPLY_SIZE);
}

static uint64_t id_at(const fp_batch_info *in, uint32_t i)
{
    FILTER_MESSAGE_HEADER h;
    memcpy(&h, in->slots + (size_t)i * in->slot_size, sizeof h);
    return h.MessageId;
}

static uint64_t seq_at(const fp_batch_info *in, uint32_t i)
{
    uint64_t seq;
    memcpy(&seq, in->slots + (size_t)i * in->slot_size + 16, 8);
    return seq;
}

/* The handler: checks the message's bytes, writes reply_of(seq) / status_of(seq). */
static bool answer(const fp_batch_info *in, uint32_t i)
{
    uint64_t seq = seq_at(in, i);
    uint8_t want[MSG_SIZE];
    body_of(seq, want, MSG_SIZE);
    uint64_t r = reply_of(seq);
    memcpy(in->reply_payload + (size_t)i * in->reply_stride, &r, 8);
    in->status[i] = status_of(seq);
    return memcmp(in->slots + (size_t)i * in->slot_size + 16, want, MSG_SIZE) == 0;
}

/* The kernel's check of one reply. */
static bool reply_ok(fltd_kernel *k, uint64_t id, uint64_t seq)
{
    int32_t status = 0;
    uint64_t word = 0;
    uint32_t len = 0;
    return fltd_reply_of(k, id, &status, &word, sizeof word, &len) && len == REPLY_SIZE &&
           status == status_of(seq) && word == reply_of(seq);
}

/* ------------------------------------------------------------------ many messages */

#define MANY 3000u

typedef struct kernel_run {
    fltd_kernel *k;
    uint64_t ids[MANY];
    _Atomic uint32_t sent, send_failed, bad_replies, replies_seen;
} kernel_run;

/* FltSendMessage from a thread of its own: sends MANY messages, then waits for every reply and
 * checks each against the message it answers. */
static fp_thread_ret FP_THREAD_API kernel_main(void *arg)
{
    kernel_run *kr = arg;
    for (uint32_t seq = 0; seq < MANY; seq++) {
        kr->ids[seq] = send_seq(kr->k, seq, MSG_SIZE);
        if (kr->ids[seq])
            atomic_fetch_add(&kr->sent, 1);
        else
            atomic_fetch_add(&kr->send_failed, 1);
    }
    if (WAIT_UNTIL(fltd_replied(kr->k) >= MANY, 30 * S)) {
        for (uint32_t seq = 0; seq < MANY; seq++)
            if (!reply_ok(kr->k, kr->ids[seq], seq))
                atomic_fetch_add(&kr->bad_replies, 1);
    }
    atomic_store(&kr->replies_seen, (uint32_t)fltd_replied(kr->k));
    return 0;
}

static void test_many_answered_once(void)
{
    fp_pump_config c = cfg_of(2, 8, 16);
    c.reply_threads = 1;
    rig r;
    if (rig_open(&r, &c, false)) { /* the backend makes its own completion port */
        static kernel_run kr;
        memset(&kr, 0, sizeof kr);
        kr.k = r.k;
        fp_thread t;
        CHECK_EQ(fp_thread_start(&t, kernel_main, &kr), 0);
        uint32_t handled = 0, bad = 0;
        fp_batch b;
        while (handled < MANY && fp_pump_next(r.p, NEXT_NS, &b) == FP_PUMP_BATCH) {
            fp_batch_info in;
            fp_batch_get_info(r.p, &b, &in);
            for (uint32_t i = 0; i < in.count; i++)
                bad += !answer(&in, i);
            fp_reply_result res;
            CHECK_EQ((uint32_t)fp_batch_reply(r.p, &b, NULL, &res), FP_S_OK);
            CHECK_EQ(res.sent, in.count);
            fp_batch_release(r.p, &b);
            handled += in.count;
        }
        fp_thread_join(t);
        CHECK_EQ(handled, MANY);
        CHECK_EQ(bad, 0);
        CHECK_EQ(atomic_load(&kr.sent), MANY);
        CHECK_EQ(atomic_load(&kr.send_failed), 0);
        CHECK_EQ(atomic_load(&kr.replies_seen), MANY);
        CHECK_EQ(atomic_load(&kr.bad_replies), 0); /* each matched to its message by id */
        fltd_stats ks = kstats(r.k);
        CHECK_EQ(ks.replies, MANY);
        CHECK_EQ(ks.no_waiter, 0); /* never answered twice */
        CHECK_EQ(ks.other_failures, 0);
        fp_pump_join(r.p);
        fp_pump_stats s = pstats(r.p);
        CHECK_EQ(s.received, MANY);
        CHECK_EQ(s.replied, MANY);
        CHECK_EQ(s.late_replies, 0);
        CHECK_EQ(s.errors, 0);
        CHECK_EQ(s.truncated, 0);
        CHECK_EQ(s.inflight, 0);
        CHECK_EQ((uint32_t)fp_pump_error(r.p), FP_S_OK);
        CHECK(s.posts == ks.gets); /* every get the pump posted reached FilterGetMessage */
    }
    rig_close(&r);
}

/* ------------------------------------------------------------------ truncated message */

static void test_insufficient_buffer(void)
{
    fp_pump_config c = cfg_of(1, 2, 8);
    rig r;
    if (rig_open(&r, &c, true)) {
        CHECK(WAIT_UNTIL(kstats(r.k).gets == 2, S));
        uint64_t big = send_seq(r.k, 1, 100);  /* longer than a slot's 16 + 24 bytes */
        uint64_t small = send_seq(r.k, 2, MSG_SIZE); /* completes a get: the re-post takes `big` */
        CHECK(big != 0 && small != 0);
        uint32_t seen = 0, truncated_len = 0, truncated_seq = 0;
        fp_batch b;
        while (seen < 2 && fp_pump_next(r.p, NEXT_NS, &b) == FP_PUMP_BATCH) {
            fp_batch_info in;
            fp_batch_get_info(r.p, &b, &in);
            uint8_t mask[8] = {0};
            for (uint32_t i = 0; i < in.count; i++) {
                if (id_at(&in, i) == big) { /* left unanswered: the release defaults it */
                    truncated_len = in.length[i];
                    truncated_seq = (uint32_t)seq_at(&in, i);
                } else {
                    CHECK(answer(&in, i));
                    mask[i] = 1;
                }
            }
            CHECK_EQ((uint32_t)fp_batch_reply(r.p, &b, mask, NULL), FP_S_OK);
            fp_batch_release(r.p, &b);
            seen += in.count;
        }
        CHECK_EQ(seen, 2);
        CHECK_EQ(truncated_len, 16 + MSG_SIZE); /* the undersized slot, full */
        CHECK_EQ(truncated_seq, 1);
        CHECK(WAIT_UNTIL(fltd_replied(r.k) == 2, S));
        int32_t status = -1;
        uint64_t word = 0;
        uint32_t len = 0;
        CHECK(fltd_reply_of(r.k, big, &status, &word, sizeof word, &len));
        CHECK_EQ(status, 0);
        CHECK_EQ(word, DEFAULT_WORD); /* the default reply, to the header's MessageId */
        CHECK(reply_ok(r.k, small, 2));
        fp_pump_stats s = pstats(r.p);
        CHECK_EQ(s.received, 2);
        CHECK_EQ(s.truncated, 1);
        CHECK_EQ(s.defaulted_release, 1);
        CHECK_EQ(s.replied, 1);
        CHECK_EQ(s.errors, 0);
        CHECK_EQ(kstats(r.k).truncated, 1);
        CHECK_EQ((uint32_t)fp_pump_error(r.p), FP_S_OK);
    }
    rig_close(&r);
}

/* ------------------------------------------------------------------ late reply */

static void test_late_reply(void)
{
    fp_pump_config c = cfg_of(1, 4, 8);
    rig r;
    if (rig_open(&r, &c, true)) {
        uint64_t x = send_seq(r.k, 10, MSG_SIZE);
        fp_batch b;
        CHECK_EQ(fp_pump_next(r.p, NEXT_NS, &b), FP_PUMP_BATCH);
        fp_batch_info in;
        fp_batch_get_info(r.p, &b, &in);
        CHECK_EQ(in.count, 1);
        CHECK_EQ(id_at(&in, 0), x);
        fltd_abandon(r.k, x); /* the sender's timeout ran out */
        CHECK(answer(&in, 0));
        fp_reply_result res;
        CHECK_EQ((uint32_t)fp_batch_reply(r.p, &b, NULL, &res), FP_S_OK);
        CHECK_EQ(res.sent, 1);
        CHECK_EQ(res.late, 1); /* ERROR_FLT_NO_WAITER_FOR_REPLY */
        CHECK_EQ(res.errors, 0);
        fp_batch_release(r.p, &b);
        /* not fatal: the next message is served */
        uint64_t y = send_seq(r.k, 11, MSG_SIZE);
        CHECK_EQ(fp_pump_next(r.p, NEXT_NS, &b), FP_PUMP_BATCH);
        fp_batch_get_info(r.p, &b, &in);
        CHECK_EQ(id_at(&in, 0), y);
        CHECK(answer(&in, 0));
        CHECK_EQ((uint32_t)fp_batch_reply(r.p, &b, NULL, &res), FP_S_OK);
        CHECK_EQ(res.late, 0);
        fp_batch_release(r.p, &b);
        CHECK(reply_ok(r.k, y, 11));
        fp_pump_stats s = pstats(r.p);
        CHECK_EQ(s.late_replies, 1);
        CHECK_EQ(s.reply_failed, 1);
        CHECK_EQ(s.replied, 1);
        CHECK_EQ(s.errors, 0);
        CHECK_EQ(kstats(r.k).no_waiter, 1);
        CHECK_EQ((uint32_t)fp_pump_error(r.p), FP_S_OK);
    }
    rig_close(&r);
}

/* ------------------------------------------------------------------ cancel on stop */

static void test_cancel_on_stop(void)
{
    fp_pump_config c = cfg_of(2, 4, 8);
    rig r;
    if (rig_open(&r, &c, false)) {
        CHECK(WAIT_UNTIL(kstats(r.k).gets == 8 && pstats(r.p).inflight == 8, S));
        fp_pump_stop(r.p);
        fp_pump_join(r.p); /* returns once every get completed: CancelIoEx ended them */
        fp_pump_stats s = pstats(r.p);
        CHECK_EQ(s.inflight, 0);
        CHECK_EQ(s.posts, 8); /* none re-posted after its cancel */
        CHECK_EQ(s.received, 0);
        CHECK_EQ(s.errors, 0);
        CHECK_EQ((uint32_t)fp_pump_error(r.p), FP_S_OK);
        CHECK_EQ(kstats(r.k).gets, 8);
        /* no read is pending on the pipe anymore: a message now stays in it */
        CHECK(send_seq(r.k, 5, MSG_SIZE) != 0);
        DWORD avail = 0;
        CHECK(PeekNamedPipe(r.port, NULL, 0, NULL, &avail, NULL));
        CHECK_EQ(avail, 16 + MSG_SIZE);
        fp_batch b;
        CHECK_EQ(fp_pump_next(r.p, 0, &b), FP_PUMP_STOPPED);
    }
    rig_close(&r);
}

/* ------------------------------------------------------------------ disconnect while busy */

static void test_disconnect_while_busy(void)
{
    fp_pump_config c = cfg_of(2, 4, 4);
    rig r;
    if (rig_open(&r, &c, false)) {
        CHECK(WAIT_UNTIL(kstats(r.k).gets == 8, S));
        for (uint64_t seq = 0; seq < 6; seq++)
            CHECK(send_seq(r.k, seq, MSG_SIZE) != 0);
        CHECK(WAIT_UNTIL(pstats(r.p).received == 6, S));
        fp_batch held;
        CHECK_EQ(fp_pump_next(r.p, NEXT_NS, &held), FP_PUMP_BATCH); /* the handler is busy */
        uint32_t out = held.count;
        fltd_disconnect(r.k);
        /* what was received is still handed out, then the pump reports the end */
        fp_batch b;
        int rc;
        while ((rc = fp_pump_next(r.p, NEXT_NS, &b)) == FP_PUMP_BATCH) {
            out += b.count;
            fp_batch_release(r.p, &b);
        }
        CHECK_EQ(rc, FP_PUMP_FAILED);
        CHECK_EQ(out, 6);
        CHECK_EQ((uint32_t)fp_pump_error(r.p), E_PORT_GONE);
        /* the busy handler's replies fail without harm */
        fp_reply_result res;
        CHECK_EQ((uint32_t)fp_batch_reply(r.p, &held, NULL, &res), E_PORT_GONE);
        fp_batch_release(r.p, &held);
        fp_pump_join(r.p);
        fp_pump_stats s = pstats(r.p);
        CHECK_EQ(s.received, 6);
        CHECK_EQ(s.inflight, 0);
        CHECK_EQ(s.replied, 0);
        CHECK_EQ(kstats(r.k).replies, 0);
    }
    rig_close(&r);
}

/* ------------------------------------------------------------------ the consumer's wake-up */

static void test_wait_handle(void)
{
    fp_pump_config c = cfg_of(1, 2, 8);
    rig r;
    if (rig_open(&r, &c, false)) {
        HANDLE h = fp_pump_wait_handle(r.p);
        CHECK(h != NULL);
        CHECK(fp_pump_wait_handle(r.p) == h);
        CHECK_EQ(fp_pump_fd(r.p), -1); /* no file descriptor on Windows */
        CHECK_EQ(WaitForSingleObject(h, 0), WAIT_TIMEOUT); /* nothing to hand out */
        uint64_t id = send_seq(r.k, 3, MSG_SIZE);
        CHECK_EQ(WaitForSingleObject(h, S), WAIT_OBJECT_0);
        fp_batch b;
        CHECK_EQ(fp_pump_try_next(r.p, &b), FP_PUMP_BATCH);
        fp_batch_info in;
        fp_batch_get_info(r.p, &b, &in);
        CHECK_EQ(id_at(&in, 0), id);
        CHECK(answer(&in, 0));
        CHECK_EQ((uint32_t)fp_batch_reply(r.p, &b, NULL, NULL), FP_S_OK);
        fp_batch_release(r.p, &b);
        CHECK_EQ(WaitForSingleObject(h, 0), WAIT_TIMEOUT); /* level: cleared once taken */
        CHECK_EQ(fp_pump_try_next(r.p, &b), FP_PUMP_TIMEOUT);
        fp_pump_stop(r.p);
        CHECK_EQ(WaitForSingleObject(h, 0), WAIT_OBJECT_0); /* stopped: next() will not block */
        CHECK(reply_ok(r.k, id, 3));
    }
    rig_close(&r);
}

/* A hang (a get never completing, a join waiting forever) fails the run instead of stalling CI. */
#define WATCHDOG_MS (120u * 1000u)
static fp_thread_ret FP_THREAD_API watchdog_main(void *arg)
{
    (void)arg;
    fp_sleep_ms(WATCHDOG_MS);
    printf("   FAILED: still running after %u s (a hang)\n0 passed, 1 failed\n", WATCHDOG_MS / 1000u);
    fflush(stdout);
    ExitProcess(3);
    return 0;
}

int main(void)
{
    fp_thread watchdog;
    fp_thread_start(&watchdog, watchdog_main, NULL);
    static const test_case tests[] = {
        {"many_answered_once", test_many_answered_once},
        {"insufficient_buffer", test_insufficient_buffer},
        {"late_reply", test_late_reply},
        {"cancel_on_stop", test_cancel_on_stop},
        {"disconnect_while_busy", test_disconnect_while_busy},
        {"wait_handle", test_wait_handle},
    };
    int tests_passed = 0, tests_failed = 0;
    run_tests(tests, sizeof tests / sizeof tests[0], &tests_passed, &tests_failed);
    tests_failed += pump_leaks();
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}
