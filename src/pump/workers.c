/* Posting gets, the leader token, the worker threads, the deadline reaper, start / stop / join.
 *
 * The leader token. One thread at a time reaps (blocks in the backend's reap): the leader. An
 * idle consumer (waiting in fp_pump_next) leads when it can, so at low load a message goes from
 * the port to the handler with one wake-up, as in a hand-written loop; workers stand by while a
 * consumer is around and take the lead once it has been away (running its handler) for
 * TAKEOVER_NS, so gets are re-posted and batches published while Python works, and a hung
 * handler never stops the pump from receiving. A worker that reaped hands the token back before
 * it processes what it got, so another thread can reap meanwhile. Parked workers look again
 * after TAKEOVER_NS when the consumer is away, and back off to PARK_MAX_NS while it is present.
 * With consumer_reap off (or once the event fd is used) workers lead whenever the token is free.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---------------------------------------------------------------- posting */

/* A free chunk to post into, reset for its new life (q_mu for the cursors, its mu for answers). */
static fp_chunk *take_free(fp_pump *p)
{
    fp_mutex_lock(&p->q_mu);
    fp_chunk *c = p->free_head;
    if (c) {
        p->free_head = c->next;
        c->next = NULL;
        c->is_free = false;
        p->nfree--;
        c->scan = c->untaken = 0;
        memset(c->kind, SLOT_EMPTY, p->cfg.batch);
        atomic_store(&c->posted, 0); /* now, under q_mu: a free check never sees a stale count */
    }
    fp_mutex_unlock(&p->q_mu);
    if (c) {
        fp_mutex_lock(&c->mu);
        for (uint32_t i = 0; i < p->cfg.batch; i++)
            atomic_store_explicit(&c->answered[i], ANS_NONE, RLX);
        fp_mutex_unlock(&c->mu);
    }
    return c;
}

/* Posts gets until `target` are in flight: into the current chunk in slot order, then into the
 * next free chunk; with no free chunk, into overflow slots (deadline set) or not at all
 * (backpressure). Serialised by post_mu, so the source sees the gets in slot order. */
void top_up(fp_pump *p)
{
    const uint32_t batch = p->cfg.batch, base = p->cfg.nchunks * batch;
    fp_hresult fail = FP_S_OK;
    uint32_t posted = 0;
    fp_mutex_lock(&p->post_mu);
    while (!p->post_stop && atomic_load(&p->inflight) < p->target) {
        fp_chunk *c = p->cur;
        if (!c || atomic_load(&c->posted) == batch) {
            c = p->cur = take_free(p);
        }
        uint32_t slot, ofl = 0;
        uint8_t *buf;
        if (c) {
            uint32_t i = atomic_load(&c->posted);
            slot = c->index * batch + i;
            buf = slot_at(p, c, i);
            /* counted before the post: its completion may be processed before post() returns,
             * and the chunk's free check must see the slot as posted and in flight */
            atomic_fetch_add(&c->inflight, 1);
            atomic_fetch_add(&c->posted, 1);
        } else if (p->overflow_on && p->ofl_nfree) {
            ofl = p->ofl_free[--p->ofl_nfree];
            p->ofl_state[ofl] = OFL_POSTED;
            slot = base + ofl;
            buf = p->ofl_slots + (size_t)ofl * p->slot_size;
        } else {
            break;
        }
        atomic_fetch_add(&p->inflight, 1);
        fp_hresult hr = p->b->ops->post(p->b, slot, buf, (uint32_t)p->message_bytes);
        if (!FP_SUCCEEDED(hr)) { /* nothing was posted: undo */
            atomic_fetch_sub(&p->inflight, 1);
            if (c) {
                atomic_fetch_sub(&c->posted, 1);
                atomic_fetch_sub(&c->inflight, 1);
            } else {
                p->ofl_state[ofl] = OFL_FREE;
                p->ofl_free[p->ofl_nfree++] = ofl;
            }
            fail = hr;
            break;
        }
        posted++;
    }
    fp_mutex_unlock(&p->post_mu);
    count(&p->posts, posted);
    if (fail != FP_S_OK)
        pump_fail(p, fail);
}

/* A chunk is free again: the gets waiting in overflow slots would answer their messages with
 * default_reply, so they are cancelled and posted into the chunk instead. */
void cancel_overflow(fp_pump *p)
{
    const uint32_t base = p->cfg.nchunks * p->cfg.batch;
    if (!atomic_exchange(&p->ofl_recheck, false))
        return;
    fp_mutex_lock(&p->post_mu);
    if (!p->post_stop && p->ofl_nfree < p->noverflow)
        for (uint32_t j = 0; j < p->noverflow; j++)
            if (p->ofl_state[j] == OFL_POSTED) {
                p->ofl_state[j] = OFL_CANCELLED;
                p->b->ops->cancel(p->b, base + j);
            }
    fp_mutex_unlock(&p->post_mu);
}

/* ---------------------------------------------------------------- failure and stop */

static void stop_posting_and_cancel(fp_pump *p)
{
    fp_mutex_lock(&p->post_mu); /* after this no get is posted, so the cancel reaches all */
    p->post_stop = true;
    fp_mutex_unlock(&p->post_mu);
    p->b->ops->cancel(p->b, FP_SLOT_ALL);
    p->b->ops->wake(p->b); /* a leader with nothing in flight would wait forever */
}

/* Stops the pump because of a backend failure; the first failure becomes the terminal error
 * unless the user had already asked to stop (then failures are part of shutting down). */
void pump_fail(fp_pump *p, fp_hresult hr)
{
    fp_mutex_lock(&p->q_mu);
    if (!p->user_stop) {
        fp_hresult expect = FP_S_OK;
        atomic_compare_exchange_strong(&p->terminal, &expect, hr);
    }
    bool first = !atomic_exchange(&p->stopping, 1);
    fp_cond_broadcast(&p->w_cv);
    fp_cond_broadcast(&p->ready_cv);
    fp_mutex_unlock(&p->q_mu);
    if (first)
        stop_posting_and_cancel(p);
}

void fp_pump_stop(fp_pump *p)
{
    if (!p)
        return;
    fp_mutex_lock(&p->q_mu);
    p->user_stop = true;
    bool first = !atomic_exchange(&p->stopping, 1);
    efd_update_locked(p);
    fp_cond_broadcast(&p->w_cv);
    fp_cond_broadcast(&p->ready_cv);
    bool started = p->started;
    fp_mutex_unlock(&p->q_mu);
    if (started && first)
        stop_posting_and_cancel(p);
    else if (!started) {
        fp_mutex_lock(&p->post_mu);
        p->post_stop = true;
        fp_mutex_unlock(&p->post_mu);
    }
}

/* ---------------------------------------------------------------- workers */

/* After a reap: the token is free again; let whoever waits for it know. q_mu held. */
void token_released_locked(fp_pump *p)
{
    p->leader = LEAD_NONE;
    /* an idle consumer leads next; else a worker: consumers may not lead anymore (the event fd
     * is in use), and while stopping only workers drain */
    bool stopping = atomic_load(&p->stopping);
    if (p->consumer_reap && p->consumers_idle && !stopping)
        fp_cond_signal(&p->ready_cv);
    else if (p->parked && !(p->consumer_reap && p->consumers_in && !stopping))
        fp_cond_signal(&p->w_cv); /* not while a consumer is in next(): no worker would lead
                                     then, it would only wake to park again; they take over by
                                     their timed park once it has left */
}

void lead_reap(fp_pump *p, fp_completion *comp, uint32_t timeout_ms)
{
    uint32_t got = 0;
    fp_hresult hr = p->b->ops->reap(p->b, comp, REAP_MAX, timeout_ms, &got);
    count(&p->reaps, got ? 1 : 0);
    fp_mutex_lock(&p->q_mu);
    token_released_locked(p); /* before processing: another thread may reap meanwhile */
    fp_mutex_unlock(&p->q_mu);
    if (FP_SUCCEEDED(hr) && got)
        chunks_process(p, comp, got);
    else if (!FP_SUCCEEDED(hr) && hr != FP_E_TIMEOUT)
        pump_fail(p, hr);
}

fp_thread_ret FP_THREAD_API worker_main(void *arg)
{
    worker *w = arg;
    fp_pump *p = w->pump;
    fp_thread_name("fp-worker-", (unsigned)(w - p->workers));
    fp_completion comp[REAP_MAX];
    w->park_ns = TAKEOVER_NS;
    fp_mutex_lock(&p->q_mu);
    for (;;) {
        bool stopping = atomic_load(&p->stopping);
        if (stopping && atomic_load(&p->inflight) == 0)
            break; /* drained: every posted get has completed */
        bool lead = p->leader == LEAD_NONE;
        uint64_t until = 0;
        if (lead && p->consumer_reap && !stopping) {
            if (p->consumers_in) {
                lead = false; /* a consumer leads, is about to, or processes its reap */
            } else {
                uint64_t back = p->consumer_left_ns + TAKEOVER_NS, now = fp_now_ns();
                if (now < back) {
                    lead = false;
                    until = back;
                }
            }
        }
        if (lead && !stopping && atomic_load(&p->inflight) == 0) {
            /* nothing to reap: post first (a chunk may have been freed) */
            fp_mutex_unlock(&p->q_mu);
            top_up(p);
            fp_mutex_lock(&p->q_mu);
            if (atomic_load(&p->inflight) == 0 && !atomic_load(&p->stopping)) {
                p->parked++;
                fp_cond_wait(&p->w_cv, &p->q_mu); /* a freed chunk or stop wakes us */
                p->parked--;
            }
            continue;
        }
        if (!lead) {
            p->parked++;
            if (p->consumer_reap && !stopping) {
                if (!until) {
                    until = fp_now_ns() + w->park_ns;
                    w->park_ns = w->park_ns * 2 > PARK_MAX_NS ? PARK_MAX_NS : w->park_ns * 2;
                }
                fp_cond_wait_until(&p->w_cv, &p->q_mu, until);
            } else {
                fp_cond_wait(&p->w_cv, &p->q_mu);
            }
            p->parked--;
            continue;
        }
        p->leader = LEAD_WORKER;
        w->park_ns = TAKEOVER_NS;
        fp_mutex_unlock(&p->q_mu);
        top_up(p);
        lead_reap(p, comp, FP_INFINITE_MS);
        fp_mutex_lock(&p->q_mu);
    }
    if (--p->workers_live == 0) {
        p->ended = true;
        efd_update_locked(p);
        fp_cond_broadcast(&p->ready_cv);
        fp_cond_broadcast(&p->exit_cv);
    }
    fp_cond_broadcast(&p->w_cv); /* the others see the drain too */
    fp_mutex_unlock(&p->q_mu);
    return 0;
}

/* ---------------------------------------------------------------- deadline reaper */

void reaper_kick(fp_pump *p)
{
    fp_mutex_lock(&p->r_mu);
    p->r_kick = true;
    fp_cond_signal(&p->r_cv);
    fp_mutex_unlock(&p->r_mu);
}

/* Sleeps until the earliest deadline among pending messages. When nothing is pending:
 * - deadline >= REAPER_POLL_MIN_NS: it sleeps one deadline from the start of its scan, no kicks
 *   (a message that arrived after the scan started is due after that, and one before it was
 *   seen by the scan), so a message costs the reaper nothing at low load;
 * - shorter deadlines: it sleeps until a completion kicks it: chunks_process adds a message's
 *   answer state under the chunk mutex, then loads reaper_idle; the reaper stores
 *   reaper_idle = 1, then reads every chunk under the same mutexes, so either the reaper sees the
 *   new messages or the worker sees idle and kicks.
 * A new message's deadline is later than the ones already pending, so the timed sleep never
 * oversleeps one. */
fp_thread_ret FP_THREAD_API reaper_main(void *arg)
{
    fp_pump *p = arg;
    const uint64_t dl = (uint64_t)p->cfg.deadline_ns;
    fp_thread_name("fp-reaper", 0);
    for (;;) {
        atomic_store(&p->reaper_idle, 1);
        uint64_t now = fp_now_ns();
        uint64_t cutoff = now >= dl ? now - dl : 0;
        uint64_t next = UINT64_MAX;
        for (uint32_t i = 0; i < p->cfg.nchunks; i++) {
            fp_chunk *c = &p->chunks[i];
            if (!atomic_load(&c->unanswered))
                continue;
            fp_mutex_lock(&c->mu);
            uint64_t r = answer_defaults_locked(p, c, 0, p->cfg.batch, cutoff, DEF_DEADLINE);
            bool all = atomic_load(&c->unanswered) == 0;
            fp_mutex_unlock(&c->mu);
            if (r < next)
                next = r;
            if (all) /* answered before the consumer took them: back into circulation */
                chunk_check_free(p, c);
        }
        fp_mutex_lock(&p->r_mu);
        if (p->r_stop) {
            fp_mutex_unlock(&p->r_mu);
            break;
        }
        if (next != UINT64_MAX) {
            atomic_store(&p->reaper_idle, 0);
            if (!p->r_kick) {
                fp_cond_wait_until(&p->r_cv, &p->r_mu, next + dl);
            }
        } else if (p->reaper_polls) {
            if (!p->r_kick && !p->r_stop)
                fp_cond_wait_until(&p->r_cv, &p->r_mu, now + dl);
        } else {
            while (!p->r_kick && !p->r_stop)
                fp_cond_wait(&p->r_cv, &p->r_mu);
        }
        p->r_kick = false;
        bool stop = p->r_stop;
        fp_mutex_unlock(&p->r_mu);
        if (stop)
            break;
    }
    return 0;
}

/* ---------------------------------------------------------------- start / join */

fp_hresult fp_pump_start(fp_pump *p)
{
    if (!p)
        return FP_E_INVALIDARG;
    fp_mutex_lock(&p->q_mu);
    if (p->started || p->user_stop) {
        fp_mutex_unlock(&p->q_mu);
        return FP_E_INVALIDARG;
    }
    p->started = true;
    p->workers_live = p->cfg.threads;
    fp_mutex_unlock(&p->q_mu);

    bool failed = false;
    for (uint32_t t = 0; t < p->cfg.reply_threads && !failed; t++) {
        fp_mutex_lock(&p->o_mu);
        if (fp_thread_start(&p->o_tids[t], replier_main, &p->o_args[t]) == 0)
            p->o_started++;
        else
            failed = true;
        fp_mutex_unlock(&p->o_mu);
    }
    if (!failed && p->cfg.deadline_ns >= 0) {
        if (fp_thread_start(&p->r_tid, reaper_main, p) == 0)
            p->r_started = true;
        else
            failed = true;
    }
    if (!failed)
        top_up(p);
    for (uint32_t t = 0; t < p->cfg.threads; t++) {
        worker *w = &p->workers[t];
        if (!failed && fp_thread_start(&w->tid, worker_main, w) == 0) {
            w->started = true;
            continue;
        }
        failed = true;
        fp_mutex_lock(&p->q_mu); /* account for the worker that will never run */
        if (--p->workers_live == 0) {
            p->ended = true;
            fp_cond_broadcast(&p->exit_cv);
            fp_cond_broadcast(&p->ready_cv);
        }
        fp_mutex_unlock(&p->q_mu);
    }
    if (failed) {
        fp_pump_join(p);
        return FP_E_OUTOFMEMORY;
    }
    return FP_S_OK;
}

void fp_pump_join(fp_pump *p)
{
    if (!p)
        return;
    fp_mutex_lock(&p->join_mu);
    if (p->joined) {
        fp_mutex_unlock(&p->join_mu);
        return;
    }
    fp_pump_stop(p);
    fp_mutex_lock(&p->q_mu);
    bool drain_here = p->started && p->workers_live == 0 && atomic_load(&p->inflight) > 0;
    while (p->started && p->workers_live > 0)
        fp_cond_wait(&p->exit_cv, &p->q_mu);
    fp_mutex_unlock(&p->q_mu);
    if (drain_here) { /* no worker ever ran (thread creation failed): reap what start posted */
        fp_completion comp[REAP_MAX];
        while (atomic_load(&p->inflight) > 0) {
            uint32_t got = 0;
            fp_hresult hr = p->b->ops->reap(p->b, comp, REAP_MAX, 100, &got);
            if (FP_SUCCEEDED(hr) && got)
                chunks_process(p, comp, got);
            else if (!FP_SUCCEEDED(hr) && hr != FP_E_TIMEOUT)
                break;
        }
    }
    for (uint32_t t = 0; t < p->cfg.threads; t++) {
        if (p->workers[t].started) {
            fp_thread_join(p->workers[t].tid);
            p->workers[t].started = false;
        }
    }
    if (p->r_started) {
        fp_mutex_lock(&p->r_mu);
        p->r_stop = true;
        fp_cond_signal(&p->r_cv);
        fp_mutex_unlock(&p->r_mu);
        fp_thread_join(p->r_tid);
        p->r_started = false;
    }
    /* reply threads send what is queued, then exit; replies queued later are sent in place */
    fp_mutex_lock(&p->o_mu);
    p->o_stop = true;
    fp_cond_broadcast(&p->o_cv);
    uint32_t repliers = p->o_started;
    fp_mutex_unlock(&p->o_mu);
    for (uint32_t t = 0; t < repliers; t++)
        fp_thread_join(p->o_tids[t]);
    /* the chunk being posted into gets no more gets: it may go back to the free list */
    fp_mutex_lock(&p->post_mu);
    fp_chunk *cur = p->cur;
    p->cur = NULL;
    if (cur)
        atomic_store(&cur->posted, p->cfg.batch);
    fp_mutex_unlock(&p->post_mu);
    /* every get has completed: answer what is left, wherever it is */
    for (uint32_t i = 0; i < p->cfg.nchunks; i++) {
        fp_chunk *c = &p->chunks[i];
        fp_mutex_lock(&c->mu);
        if (atomic_load(&c->unanswered))
            answer_defaults_locked(p, c, 0, p->cfg.batch, UINT64_MAX, DEF_STOP);
        fp_mutex_unlock(&c->mu);
    }
    if (atomic_load(&p->terminal) == FP_S_OK) { /* a user stop: nothing more is handed out */
        fp_mutex_lock(&p->q_mu);
        chunks_drop_ready_locked(p);
        efd_update_locked(p);
        fp_mutex_unlock(&p->q_mu);
    }
    for (uint32_t i = 0; i < p->cfg.nchunks; i++)
        chunk_check_free(p, &p->chunks[i]);
    p->joined = true;
    fp_mutex_unlock(&p->join_mu);
}
