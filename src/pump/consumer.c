/* The consumer's side: fp_pump_next (which reaps itself while idle, see workers.c), the wake-up
 * object for event loops, and the stats. */
#include <errno.h>
#include <string.h>

#include "internal.h"

/* Reaps once as the leader (q_mu held on entry and on return). Returns false when the reap could
 * not run because nothing is in flight (backpressure). */
static bool consumer_reap_locked(fp_pump *p, int64_t timeout_ns, uint64_t until)
{
    fp_completion comp[REAP_MAX];
    p->leader = LEAD_CONSUMER;
    fp_mutex_unlock(&p->q_mu);
    top_up(p);
    bool ran = atomic_load(&p->inflight) > 0;
    if (ran) {
        uint32_t ms = FP_INFINITE_MS;
        if (timeout_ns > 0) {
            uint64_t now = fp_now_ns(), left = until > now ? until - now : 0;
            ms = (uint32_t)((left + FP_NS_PER_MS - 1) / FP_NS_PER_MS);
            if (ms == FP_INFINITE_MS)
                ms--;
        }
        lead_reap(p, comp, ms);
    } else {
        fp_mutex_lock(&p->q_mu);
        token_released_locked(p);
        fp_mutex_unlock(&p->q_mu);
    }
    fp_mutex_lock(&p->q_mu);
    return ran;
}

int fp_pump_next(fp_pump *p, int64_t timeout_ns, fp_batch *out)
{
    memset(out, 0, sizeof *out);
    uint64_t until = timeout_ns > 0 ? fp_now_ns() + (uint64_t)timeout_ns : 0;
    int rc;
    /* only a consumer that may wait counts as "around" (workers stand by for it); one that polls
     * (timeout 0, an event loop's try_next) never leads, so it must not keep workers away */
    const bool waits = timeout_ns != 0;
    fp_mutex_lock(&p->q_mu);
    p->consumers_in += waits;
    for (;;) {
        bool failed = atomic_load_explicit(&p->terminal, RLX) != FP_S_OK;
        if (!failed && p->user_stop) {
            rc = FP_PUMP_STOPPED;
            break;
        }
        if (chunks_take_locked(p, out)) {
            rc = FP_PUMP_BATCH;
            if (p->ready_head && p->next_waiters) /* more ready: the next waiting consumer */
                fp_cond_signal(&p->ready_cv);
            break;
        }
        if (p->ended) {
            rc = failed ? FP_PUMP_FAILED : FP_PUMP_STOPPED;
            break;
        }
        if (timeout_ns == 0 || (timeout_ns > 0 && fp_now_ns() >= until)) {
            rc = FP_PUMP_TIMEOUT;
            break;
        }
        if (p->consumer_reap && p->started && p->leader == LEAD_NONE &&
            !atomic_load(&p->stopping) && consumer_reap_locked(p, timeout_ns, until))
            continue;
        p->consumers_idle++;
        p->next_waiters++;
        if (timeout_ns < 0) {
            fp_cond_wait(&p->ready_cv, &p->q_mu);
        } else {
            fp_cond_wait_until(&p->ready_cv, &p->q_mu, until);
        }
        p->next_waiters--;
        p->consumers_idle--;
    }
    if (waits) {
        p->consumers_in--;
        p->consumer_left_ns = fp_now_ns();
    }
    fp_mutex_unlock(&p->q_mu);
    overflow_recheck(p); /* taking may have freed a chunk whose messages the deadline answered */
    return rc;
}

int fp_pump_try_next(fp_pump *p, fp_batch *out)
{
    return fp_pump_next(p, 0, out);
}

fp_hresult fp_pump_error(fp_pump *p)
{
    return atomic_load(&p->terminal);
}

/* The wake-up object, created on first use (FP_EVENT_NONE if it cannot be). */
static fp_event wakeup(fp_pump *p)
{
    fp_mutex_lock(&p->q_mu);
    if (p->efd == FP_EVENT_NONE) {
        if (fp_event_open(&p->efd)) {
            p->efd_armed = false;
            efd_update_locked(p);
        } else {
            p->efd = FP_EVENT_NONE;
        }
        /* an event-loop consumer never blocks in the pump: workers reap from now on */
        p->consumer_reap = false;
        fp_cond_broadcast(&p->w_cv);
    }
    fp_event e = p->efd;
    fp_mutex_unlock(&p->q_mu);
    return e;
}

#ifdef _WIN32
int fp_pump_fd(fp_pump *p)
{
    (void)p;
    errno = ENOSYS;
    return -1;
}

void *fp_pump_wait_handle(fp_pump *p)
{
    return wakeup(p);
}
#else
int fp_pump_fd(fp_pump *p)
{
    return wakeup(p);
}

void *fp_pump_wait_handle(fp_pump *p)
{
    (void)p;
    return NULL;
}
#endif

void fp_pump_stats_get(fp_pump *p, fp_pump_stats *out)
{
    memset(out, 0, sizeof *out);
    out->received = atomic_load_explicit(&p->received, RLX);
    out->truncated = atomic_load_explicit(&p->truncated, RLX);
    out->no_reply = atomic_load_explicit(&p->no_reply, RLX);
    out->batches = atomic_load_explicit(&p->batches, RLX);
    out->posts = atomic_load_explicit(&p->posts, RLX);
    out->reaps = atomic_load_explicit(&p->reaps, RLX);
    out->errors = atomic_load_explicit(&p->errors, RLX);
    out->replied = atomic_load_explicit(&p->replied, RLX);
    out->reply_failed = atomic_load_explicit(&p->reply_failed, RLX);
    out->defaulted_deadline = atomic_load_explicit(&p->defaulted[DEF_DEADLINE], RLX);
    out->defaulted_error = atomic_load_explicit(&p->defaulted[DEF_ERROR], RLX);
    out->defaulted_release = atomic_load_explicit(&p->defaulted[DEF_RELEASE], RLX);
    out->defaulted_stop = atomic_load_explicit(&p->defaulted[DEF_STOP], RLX);
    out->defaulted_overflow = atomic_load_explicit(&p->defaulted[DEF_OVERFLOW], RLX);
    out->late_replies = atomic_load_explicit(&p->late_replies, RLX);
    out->late_python = atomic_load_explicit(&p->late_python, RLX);
    out->reply_calls = atomic_load_explicit(&p->reply_calls, RLX);
    out->inflight = atomic_load(&p->inflight);
    fp_mutex_lock(&p->q_mu);
    out->chunks_total = p->cfg.nchunks;
    for (uint32_t i = 0; i < p->cfg.nchunks; i++) {
        const fp_chunk *c = &p->chunks[i];
        if (c->is_free) {
            out->chunks_free++;
            continue;
        }
        out->chunks_held += c->holds != 0;
        out->chunks_ready += c->in_ready;
        out->chunks_filling += !c->holds && !c->in_ready;
    }
    fp_mutex_unlock(&p->q_mu);
    fp_hist_summary s;
    fp_hist_summarize(&p->lat, &s);
    out->latency_count = s.count;
    out->latency_min_ns = s.min;
    out->latency_mean_ns = s.mean;
    out->latency_max_ns = s.max;
    out->latency_p50_ns = s.p50;
    out->latency_p90_ns = s.p90;
    out->latency_p99_ns = s.p99;
    out->latency_p999_ns = s.p999;
}

uint64_t fp_pump_overflowed(fp_pump *p)
{
    return atomic_load_explicit(&p->defaulted[DEF_OVERFLOW], RLX);
}
