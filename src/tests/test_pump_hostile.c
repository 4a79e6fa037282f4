/* Hostile tests of the pump (src/pump): lost wake-ups between consumers, workers and the leader
 * token, and the event fd's level. Each test names the bug it shows; they read the pump's
 * internals (pump/internal.h) only to reach the state a race needs, under the pump's own locks.
 * Plain C, no framework: the last line is "N passed, M failed". */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pump/internal.h"
#include "pump/pump.h"
/* the fake offers more than these tests use */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "tests/fake_backend.h"
#include "tests/pump_kit.h"
#include "check.h"

#define MS 1000000LL
#define MSG_SIZE 24u
#define REPLY_SIZE 8u
#define REPLY_LEN (16u + REPLY_SIZE)

static fp_pump_config base_cfg(void)
{
    fp_pump_config c;
    fp_pump_config_init(&c);
    c.message_size = MSG_SIZE;
    c.reply_size = REPLY_SIZE;
    return c;
}

static fp_pump *must_start(fake_backend *f, const fp_pump_config *c)
{
    fp_pump *p = NULL;
    CHECK_EQ((uint32_t)fp_pump_create(&f->base, c, &p), (uint32_t)FP_S_OK);
    if (p)
        CHECK_EQ((uint32_t)fp_pump_start(p), (uint32_t)FP_S_OK);
    return p;
}

/* A pump field read under q_mu (the lock that guards it). */
#define QREAD(p, expr)                                                                            \
    ({                                                                                            \
        fp_mutex_lock(&(p)->q_mu);                                                           \
        __typeof__(expr) v_ = (expr);                                                             \
        fp_mutex_unlock(&(p)->q_mu);                                                         \
        v_;                                                                                       \
    })

/* Queues n messages under one lock of the fake, so one reap sees all their completions. */
static void push_together(fake_backend *f, uint32_t n)
{
    fp_mutex_lock(&f->mu);
    for (uint32_t k = 0; k < n; k++) {
        uint64_t id = f->next_id++;
        f->rec[id].len = MSG_SIZE;
        f->rec[id].reply_length = REPLY_LEN;
        f->rec[id].state = FAKE_QUEUED;
        f->ring[f->tail++ % f->cap] = id;
    }
    fake_pump_locked(f); /* completes them all; a reaper waiting on f->cv wakes after we unlock */
    fp_mutex_unlock(&f->mu);
}

typedef struct consumer {
    fp_pump *p;
    int64_t timeout_ns;
    int rc;
    fp_batch b;
    _Atomic int done;
} consumer;

static fp_thread_ret FP_THREAD_API consumer_main(void *arg)
{
    consumer *c = arg;
    c->rc = fp_pump_next(c->p, c->timeout_ns, &c->b);
    atomic_store(&c->done, 1);
    return 0;
}

static void consumer_go(consumer *c, fp_thread *t, fp_pump *p, int64_t timeout_ns)
{
    memset(c, 0, sizeof *c);
    c->p = p;
    c->timeout_ns = timeout_ns;
    c->rc = -1;
    fp_thread_start(t, consumer_main, c);
}

static int done_count(consumer *cs, int n)
{
    int d = 0;
    for (int i = 0; i < n; i++)
        d += atomic_load(&cs[i].done);
    return d;
}

static void consumer_release(consumer *c)
{
    if (c->rc == FP_PUMP_BATCH && c->b.chunk)
        fp_batch_release(c->p, &c->b);
}

/* ------------------------------------------------------------------ bug 1
 * Several ready batches published by one reap wake ONE idle consumer (chunks.c: the signal is sent
 * only when the ready list was empty, and it is a signal, not a broadcast; a consumer that takes
 * a batch and leaves more ready passes nothing on); the other consumers
 * sleep on ready_cv while a batch waits for it, until something unrelated happens. Workers
 * lead (consumer_reap 0, as once the event fd is used); batch 1: N messages, N chunks. */
static void test_two_batches_wake_one_consumer(void)
{
    fake_backend *f = fake_new(64);
    fp_pump_config c = base_cfg();
    c.threads = 1;
    c.outstanding = 4;
    c.batch = 1;
    c.consumer_reap = 0;
    fp_pump *p = must_start(f, &c);
    CHECK(fake_wait_gets(f, 4, 2000));
    enum { N = 3 };
    consumer cs[N];
    fp_thread th[N];
    for (int i = 0; i < N; i++)
        consumer_go(&cs[i], &th[i], p, -1);
    CHECK(WAIT_UNTIL(QREAD(p, p->next_waiters) == N, 2000)); /* all asleep on ready_cv */
    push_together(f, N); /* one reap, N chunks ready, N batches */
    CHECK_EQ(WAIT_UNTIL(done_count(cs, N) == N, 3000), 1);
    CHECK_EQ(done_count(cs, N), N);
    fp_pump_stats st;
    fp_pump_stats_get(p, &st);
    CHECK_EQ(st.chunks_ready, 0); /* the bug: a batch ready, a consumer asleep */
    fp_pump_stop(p); /* wakes whoever still sleeps */
    int batches = 0;
    for (int i = 0; i < N; i++) {
        fp_thread_join(th[i]);
        batches += cs[i].rc == FP_PUMP_BATCH;
    }
    /* N batches were ready: each consumer should have one (the bug: the worker's token release
     * and the publish signal one consumer each; the third sleeps, with timeout -1 forever, while
     * its batch is ready, and gets STOPPED) */
    CHECK_EQ(batches, N);
    CHECK_EQ(st.received, N);
    for (int i = 0; i < N; i++)
        consumer_release(&cs[i]);
    CHECK_EQ((uint32_t)fp_pump_destroy(p), (uint32_t)FP_S_OK);
    fake_destroy(&f->base);
}

/* ------------------------------------------------------------------ bug 2
 * The event fd turns consumer reaping off while a consumer leads and another consumer idles.
 * The worker then parks without a timeout (workers.c: consumer_reap off -> untimed wait) and the
 * leader, when its reap ends, signals only the idle consumer (token_released_locked: ready_cv OR
 * w_cv), which may not lead anymore. Nobody reaps from then on: a message pushed later is never
 * handed out, though gets are in flight and a consumer waits in fp_pump_next. */
static void test_fd_while_consumer_leads(void)
{
    fake_backend *f = fake_new(64);
    fp_pump_config c = base_cfg();
    c.threads = 1;
    c.outstanding = 4;
    c.batch = 4;
    fp_pump *p = must_start(f, &c);
    CHECK(fake_wait_gets(f, 4, 2000));
    /* no consumer was ever around: the worker leads (else a would take the lead itself) */
    CHECK(WAIT_UNTIL(QREAD(p, p->leader) == LEAD_WORKER, 2000));
    consumer a, b;
    fp_thread ta, tb;
    consumer_go(&a, &ta, p, 5000 * MS);
    CHECK(WAIT_UNTIL(QREAD(p, p->consumers_idle) == 1, 2000)); /* the worker leads; a waits */
    f->base.ops->wake(&f->base); /* the worker's reap returns and hands the token to a */
    CHECK(WAIT_UNTIL(QREAD(p, p->leader) == LEAD_CONSUMER, 2000)); /* a blocks in reap */
    consumer_go(&b, &tb, p, 5000 * MS);
    CHECK(WAIT_UNTIL(QREAD(p, p->consumers_idle) == 1, 2000));     /* b waits for the token */
    wakeup_t fd = wakeup_of(p); /* an event-loop consumer shows up */
    CHECK(wakeup_valid(fd));
    /* The worker, woken by the wake-up object's creation, re-parks (now untimed: consumer_reap is off) because a
     * still leads; whether it has done so yet or not, the token must reach it. */
    fake_push(f, MSG_SIZE, REPLY_LEN); /* a's reap returns; one of a, b gets the batch */
    CHECK(WAIT_UNTIL(atomic_load(&a.done) || atomic_load(&b.done), 2000));
    consumer *got = atomic_load(&a.done) ? &a : &b, *waiting = got == &a ? &b : &a;
    CHECK_EQ(got->rc, FP_PUMP_BATCH);
    CHECK(fake_wait_gets(f, 4, 2000)); /* re-posted */
    fake_push(f, MSG_SIZE, REPLY_LEN);
    /* the second message must reach the consumer still waiting (bug: nobody reaps it) */
    CHECK(WAIT_UNTIL(atomic_load(&waiting->done), 3000));
    fp_pump_stats st;
    fp_pump_stats_get(p, &st);
    CHECK_EQ(st.received, 2);
    fp_pump_stop(p); /* unsticks the worker if the bug hit */
    fp_thread_join(ta);
    fp_thread_join(tb);
    CHECK(waiting->rc == FP_PUMP_BATCH);
    consumer_release(&a);
    consumer_release(&b);
    CHECK_EQ((uint32_t)fp_pump_destroy(p), (uint32_t)FP_S_OK);
    fake_destroy(&f->base);
}

/* ------------------------------------------------------------------ bug 3
 * The event fd stays readable with nothing to hand out. A ready chunk whose messages the
 * deadline answered before anyone took them is freed by the reaper (chunk_check_free ->
 * free_if_done_locked -> ready_unlink), which never updates the fd; fp_pump_try_next then returns
 * TIMEOUT without updating it either. Level semantics broken: an asyncio reader on the fd spins
 * at 100% CPU until the next message. */
static void test_fd_readable_after_deadline_freed_chunk(void)
{
    fake_backend *f = fake_new(64);
    fp_pump_config c = base_cfg();
    c.threads = 1;
    c.outstanding = 2;
    c.batch = 1; /* the chunk is fully posted with one get: freeable once its message expired */
    c.deadline_ns = 30 * MS;
    fp_pump *p = NULL;
    CHECK_EQ((uint32_t)fp_pump_create(&f->base, &c, &p), (uint32_t)FP_S_OK);
    wakeup_t fd = wakeup_of(p);
    CHECK(wakeup_valid(fd));
    CHECK_EQ((uint32_t)fp_pump_start(p), (uint32_t)FP_S_OK);
    CHECK(fake_wait_gets(f, 2, 2000));
    fake_push(f, MSG_SIZE, REPLY_LEN);
    CHECK(readable(fd, 2000)); /* published */
    fp_pump_stats st;
    CHECK(WAIT_UNTIL(
        (fp_pump_stats_get(p, &st), st.defaulted_deadline == 1 && st.chunks_ready == 0), 2000));
    fp_batch b = {0};
    CHECK_EQ(fp_pump_try_next(p, &b), FP_PUMP_TIMEOUT); /* nothing to hand out ... */
    CHECK(!readable(fd, 0));                             /* ... so the fd must not be readable */
    fp_pump_stop(p);
    CHECK_EQ((uint32_t)fp_pump_destroy(p), (uint32_t)FP_S_OK);
    fake_destroy(&f->base);
}

/* ------------------------------------------------------------------ bug 4
 * A get fails (the port goes bad) while a consumer leads and others idle: the pump may never end.
 * The worker reaps [a message, a failed get] and hands the token to an idle consumer X, which
 * leads (blocks in reap) while the worker records the failure: pump_fail sets stopping. When the
 * worker looks again, X still leads, so it parks WITHOUT a timeout (workers.c, the !lead branch:
 * untimed once stopping). X's reap ends; token_released_locked signals ready_cv (consumer Z idles:
 * a terminal failure is not `ended`) instead of w_cv. Nobody wakes the worker: `ended` is never
 * set and X and Z block in fp_pump_next forever (FP_PUMP_FAILED never comes; in Python,
 * `for batch in pump` never raises PortError) until someone calls fp_pump_stop/join, whose
 * broadcast of w_cv finally lets the worker drain. Holding the message's chunk
 * mutex makes X lead before the failure is recorded; the last step is a race (the worker against
 * X's release), so rounds repeat, each rescuing a stuck pump by broadcasting w_cv itself. */
static void test_failure_while_consumer_leads(void)
{
    int stuck = 0, rounds = 8;
    for (int round = 0; round < rounds; round++) {
        fake_backend *f = fake_new(64);
        fp_pump_config c = base_cfg();
        c.threads = 1;
        c.outstanding = 8;
        c.batch = 4;
        fp_pump *p = must_start(f, &c);
        CHECK(fake_wait_gets(f, 8, 2000));
        CHECK(WAIT_UNTIL(QREAD(p, p->leader) == LEAD_WORKER, 2000)); /* no consumer yet */
        enum { N = 3 };
        consumer cs[N];
        fp_thread th[N];
        for (int i = 0; i < N; i++)
            consumer_go(&cs[i], &th[i], p, -1);
        CHECK(WAIT_UNTIL(QREAD(p, p->consumers_idle) == N, 2000));
        fp_mutex_lock(&p->chunks[0].mu); /* the worker will stop in chunks_process phase 1 */
        fp_mutex_lock(&f->mu);
        uint64_t id = f->next_id++; /* a message into the oldest get (slot 0) ... */
        f->rec[id].len = MSG_SIZE;
        f->rec[id].reply_length = REPLY_LEN;
        f->rec[id].state = FAKE_QUEUED;
        f->ring[f->tail++ % f->cap] = id;
        fake_pump_locked(f);
        fake_fail_gets_locked(f, 5, FP_E_INVALID_HANDLE); /* ... and a get that failed */
        fp_mutex_unlock(&f->mu);
        CHECK(WAIT_UNTIL(QREAD(p, p->leader) == LEAD_CONSUMER, 2000)); /* X took the token */
        fp_mutex_unlock(&p->chunks[0].mu);
        if (!WAIT_UNTIL(QREAD(p, p->ended), 1000)) {
            stuck++;
            fp_mutex_lock(&p->q_mu); /* rescue, so the round can end */
            fp_cond_broadcast(&p->w_cv);
            fp_mutex_unlock(&p->q_mu);
        }
        int batches = 0, fails = 0;
        for (int i = 0; i < N; i++) {
            fp_thread_join(th[i]);
            batches += cs[i].rc == FP_PUMP_BATCH;
            fails += cs[i].rc == FP_PUMP_FAILED;
            consumer_release(&cs[i]);
        }
        CHECK_EQ(batches, 1);
        CHECK_EQ(fails, N - 1);
        CHECK_EQ((uint32_t)fp_pump_error(p), (uint32_t)FP_E_INVALID_HANDLE);
        CHECK_EQ((uint32_t)fp_pump_destroy(p), (uint32_t)FP_S_OK);
        fake_destroy(&f->base);
    }
    if (stuck)
        fprintf(stderr, "failure_while_consumer_leads: pump never ended in %d of %d rounds\n",
                stuck, rounds);
    CHECK_EQ(stuck, 0);
}

/* ------------------------------------------------------------------ bug 5
 * A chunk freed inside chunks_process (its last get completed without a message: a foreign
 * CancelIoEx; or, with deadline 0, the reaper answered between the two phases) goes back to the
 * free list without after_free: the overflow gets posted while no chunk was free are not
 * cancelled (cancel_overflow runs only from after_free, chunks.c). They stay first in line at the
 * source, so the next messages land in overflow slots and get default_reply at once
 * (defaulted_overflow) although a chunk is free. */
static bool overflow_get_pending(fake_backend *f, uint32_t base)
{
    fp_mutex_lock(&f->mu);
    bool any = false;
    for (uint32_t i = 0; i < f->ngets; i++)
        any |= f->gets[i].slot >= base;
    fp_mutex_unlock(&f->mu);
    return any;
}

static bool get_pending_in(fake_backend *f, uint32_t slot)
{
    fp_mutex_lock(&f->mu);
    bool any = false;
    for (uint32_t i = 0; i < f->ngets; i++)
        any |= f->gets[i].slot == slot;
    fp_mutex_unlock(&f->mu);
    return any;
}

static void test_chunk_freed_by_completion_keeps_overflow_gets(void)
{
    fake_backend *f = fake_new(64);
    fp_pump_config c = base_cfg();
    c.threads = 1;
    c.outstanding = 4;
    c.batch = 2;
    c.nchunks = 2; /* slots 0..3 in chunks; overflow slots from 4 */
    c.deadline_ns = 10000 * MS; /* overflow on; the reaper stays out of the way */
    fp_pump *p = must_start(f, &c);
    const uint32_t base = 4;
    CHECK(fake_wait_gets(f, 4, 2000));
    fake_push(f, MSG_SIZE, REPLY_LEN); /* into slot 0 */
    fp_batch b = {0};
    CHECK_EQ(fp_pump_next(p, 2000 * MS, &b), FP_PUMP_BATCH);
    /* its get is re-posted into an overflow slot: both chunks are in use */
    CHECK(WAIT_UNTIL(overflow_get_pending(f, base), 2000));
    fp_batch_release(p, &b); /* chunk 0 not free yet: slot 1's get is pending */
    f->base.ops->cancel(&f->base, 1); /* someone cancels that get: chunk 0 is free now */
    CHECK(WAIT_UNTIL(get_pending_in(f, 0), 2000)); /* chunk 0 taken again: slot 0 re-posted */
    /* the overflow get should have been cancelled and re-posted into the free chunk */
    CHECK(WAIT_UNTIL(!overflow_get_pending(f, base), 2000));
    for (int i = 0; i < 3; i++) /* slots 2, 3, then the oldest remaining get */
        fake_push(f, MSG_SIZE, REPLY_LEN);
    CHECK(fake_wait_answered(f, 1, 2000));
    fp_pump_stats st;
    CHECK(WAIT_UNTIL((fp_pump_stats_get(p, &st), st.received == 4), 2000));
    CHECK_EQ(st.defaulted_overflow, 0); /* the bug: 1, a message answered for want of a chunk */
    fp_pump_stop(p);
    CHECK_EQ((uint32_t)fp_pump_destroy(p), (uint32_t)FP_S_OK);
    fake_destroy(&f->base);
}

/* ------------------------------------------------------------------ bug 6
 * fp_batch_reply copies the reply payload "now" (the consumer may reuse its reply slots at once)
 * but not the status: the reply thread reads c->status[i] when it takes the chunk off its queue
 * (answer.c, replier_main), unlocked against the consumer, who owns the status array. A consumer
 * that writes status again after reply() returned (numpy `batch.status[:] = ...` between two
 * masked replies) changes what is sent for a reply already made; it is also a data race. The
 * reply thread is held in the port (a gated reply) so that the second reply stays queued. */
static fp_mutex gate_mu = FP_MUTEX_INIT;
static fp_cond gate_cv = FP_COND_INIT;
static bool gate_closed;
static int gate_waiting;

static fp_hresult gated_reply(fp_backend *b, fp_reply *e, uint32_t n)
{
    fp_mutex_lock(&gate_mu);
    gate_waiting++;
    fp_cond_broadcast(&gate_cv);
    while (gate_closed)
        fp_cond_wait(&gate_cv, &gate_mu);
    gate_waiting--;
    fp_mutex_unlock(&gate_mu);
    return fake_reply(b, e, n);
}

static void test_status_read_after_reply_returned(void)
{
    fake_backend *f = fake_new(16);
    fp_backend_ops ops = fake_ops;
    ops.reply = gated_reply;
    f->base.ops = &ops;
    fp_pump_config c = base_cfg();
    c.threads = 1;
    c.outstanding = 4;
    c.batch = 1; /* one message per chunk: two chunks, two queue entries */
    c.reply_threads = 1;
    fp_pump *p = must_start(f, &c);
    CHECK(fake_wait_gets(f, 4, 2000));
    uint64_t id1 = fake_push(f, MSG_SIZE, REPLY_LEN), id2 = fake_push(f, MSG_SIZE, REPLY_LEN);
    fp_batch b1 = {0}, b2 = {0};
    CHECK_EQ(fp_pump_next(p, 2000 * MS, &b1), FP_PUMP_BATCH);
    CHECK_EQ(fp_pump_next(p, 2000 * MS, &b2), FP_PUMP_BATCH);
    fp_batch_info i1, i2;
    fp_batch_get_info(p, &b1, &i1);
    fp_batch_get_info(p, &b2, &i2);
    fp_mutex_lock(&gate_mu);
    gate_closed = true;
    fp_mutex_unlock(&gate_mu);
    i1.status[0] = 1;
    CHECK_EQ((uint32_t)fp_batch_reply(p, &b1, NULL, NULL), (uint32_t)FP_S_OK);
    fp_mutex_lock(&gate_mu); /* the reply thread sends the first one: held in the port */
    while (gate_waiting == 0)
        fp_cond_wait(&gate_cv, &gate_mu);
    fp_mutex_unlock(&gate_mu);
    i2.status[0] = 5;
    CHECK_EQ((uint32_t)fp_batch_reply(p, &b2, NULL, NULL), (uint32_t)FP_S_OK); /* queued */
    i2.status[0] = 9; /* after reply() returned: must not change what it sends */
    fp_mutex_lock(&gate_mu);
    gate_closed = false;
    fp_cond_broadcast(&gate_cv);
    fp_mutex_unlock(&gate_mu);
    CHECK(fake_wait_answered(f, 2, 2000));
    CHECK_EQ(fake_record(f, id1).status, 1);
    CHECK_EQ(fake_record(f, id2).status, 5); /* the bug: 9 */
    fp_batch_release(p, &b1);
    fp_batch_release(p, &b2);
    CHECK_EQ((uint32_t)fp_pump_destroy(p), (uint32_t)FP_S_OK);
    f->base.ops = &fake_ops;
    fake_destroy(&f->base);
}

/* ------------------------------------------------------------------ cancel storm (probe) */
typedef struct storm {
    fake_backend *f;
    _Atomic int stop;
    uint64_t cancels;
} storm;

static fp_thread_ret FP_THREAD_API storm_main(void *arg)
{
    storm *st = arg;
    while (!atomic_load(&st->stop)) {
        st->f->base.ops->cancel(&st->f->base, FP_SLOT_ALL);
        st->cancels++;
        fp_yield();
    }
    return 0;
}

typedef struct pusher {
    fake_backend *f;
    uint32_t n;
} pusher;

static fp_thread_ret FP_THREAD_API pusher_main(void *arg)
{
    pusher *pu = arg;
    for (uint32_t i = 0; i < pu->n; i++) {
        fake_push(pu->f, MSG_SIZE, (i % 7) ? REPLY_LEN : 0);
        if (i % 16 == 0)
            fp_yield();
    }
    return 0;
}

typedef struct eater {
    fp_pump *p;
    uint64_t msgs;
    int mode;
} eater;

static fp_thread_ret FP_THREAD_API eater_main(void *arg)
{
    eater *e = arg;
    for (;;) {
        fp_batch b = {0};
        int rc = e->mode == 2 ? fp_pump_try_next(e->p, &b)
                              : fp_pump_next(e->p, e->mode ? 5 * MS : -1, &b);
        if (rc == FP_PUMP_STOPPED || rc == FP_PUMP_FAILED)
            return 0;
        if (rc != FP_PUMP_BATCH) {
            fp_yield();
            continue;
        }
        e->msgs += b.count;
        if (e->msgs % 3)
            fp_batch_reply(e->p, &b, NULL, NULL);
        fp_batch_release(e->p, &b);
    }
}

static void test_cancel_storm_probe(void)
{
    const uint32_t total = 20000;
    fake_backend *f = fake_new(total);
    fp_pump_config c = base_cfg();
    c.threads = 2;
    c.outstanding = 8;
    c.batch = 4;
    c.nchunks = 3;
    c.reply_threads = 1;
    c.deadline_ns = 2 * MS;
    fp_pump *p = must_start(f, &c);
    storm st = {f, 0, 0};
    pusher pu = {f, total};
    eater es[3] = {{p, 0, 0}, {p, 0, 1}, {p, 0, 2}};
    fp_thread ts, tp, te[3];
    fp_thread_start(&ts, storm_main, &st);
    for (int i = 0; i < 3; i++)
        fp_thread_start(&te[i], eater_main, &es[i]);
    fp_thread_start(&tp, pusher_main, &pu);
    fp_thread_join(tp);
    bool all = fake_wait_answered(f, total, 20000);
    CHECK(all);
    atomic_store(&st.stop, 1);
    fp_thread_join(ts);
    fp_pump_stop(p);
    for (int i = 0; i < 3; i++)
        fp_thread_join(te[i]);
    fp_pump_join(p);
    fp_pump_stats s;
    fp_pump_stats_get(p, &s);
    CHECK_EQ(f->double_posts, 0);
    uint64_t twice = 0;
    for (uint64_t id = 1; id <= total; id++)
        twice += f->rec[id].accepted > 1;
    CHECK_EQ(twice, 0);
    CHECK_EQ(s.received, total);
    CHECK_EQ(s.received, s.replied + s.reply_failed + s.no_reply + s.defaulted_deadline + s.defaulted_error +
                             s.defaulted_release + s.defaulted_stop + s.defaulted_overflow);
    CHECK_EQ(s.chunks_free, s.chunks_total);
    CHECK_EQ((uint32_t)fp_pump_destroy(p), (uint32_t)FP_S_OK);
    fake_destroy(&f->base);
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    test_case tests[] = {
        {"two_batches_wake_one_consumer", test_two_batches_wake_one_consumer},
        {"fd_while_consumer_leads", test_fd_while_consumer_leads},
        {"fd_readable_after_deadline_freed_chunk", test_fd_readable_after_deadline_freed_chunk},
        {"failure_while_consumer_leads", test_failure_while_consumer_leads},
        {"chunk_freed_by_completion_keeps_overflow_gets",
         test_chunk_freed_by_completion_keeps_overflow_gets},
        {"status_read_after_reply_returned", test_status_read_after_reply_returned},
        {"cancel_storm_probe", test_cancel_storm_probe},
    };
    int tests_passed = 0, tests_failed = 0;
    run_tests(tests, sizeof tests / sizeof tests[0], &tests_passed, &tests_failed);
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}
