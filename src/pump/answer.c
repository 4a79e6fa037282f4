/* Exactly one answer per message: the consumer's reply (sent here or by a reply thread), or
 * default_reply from C (release, handler error, deadline, stop, overflow). A message's answered[]
 * state changes under its chunk's mu, once; `unanswered` drops only after the answer's send has
 * returned, so a chunk is never recycled under a send. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void add_outcomes(fp_pump *p, uint32_t late, uint32_t errs)
{
    count(&p->late_replies, late);
    count(&p->errors, errs);
}

/* Sends n replies, records their latency and outcome counts. Returns the backend call's result. */
static fp_hresult send_entries(fp_pump *p, const fp_chunk *c, fp_reply *send, const uint32_t *idx,
                               uint32_t n, uint32_t *late, uint32_t *errs)
{
    fp_hresult hr = p->b->ops->reply(p->b, send, n);
    uint64_t now = fp_now_ns();
    count(&p->reply_calls, 1);
    if (!FP_SUCCEEDED(hr)) {
        *errs += n;
        return hr;
    }
    /* receive times come in runs (one clock read per reap): one histogram add per run */
    uint64_t run_v = 0, run_n = 0;
    for (uint32_t k = 0; k < n; k++) {
        fp_hresult e = send[k].hr;
        if (e == FP_E_FLT_NO_WAITER_FOR_REPLY)
            (*late)++;
        else if (!FP_SUCCEEDED(e))
            (*errs)++;
        uint64_t r = c->recv_ns[idx[k]];
        uint64_t v = now > r ? now - r : 0;
        if (run_n && v == run_v) {
            run_n++;
        } else {
            fp_hist_record_n(&p->lat, run_v, run_n);
            run_v = v;
            run_n = 1;
        }
    }
    fp_hist_record_n(&p->lat, run_v, run_n);
    return hr;
}

uint64_t answer_defaults_locked(fp_pump *p, fp_chunk *c, uint32_t from, uint32_t to,
                                uint64_t cutoff, int reason)
{
    uint32_t n = 0, late = 0, errs = 0;
    uint32_t left = atomic_load(&c->unanswered);
    uint64_t next = UINT64_MAX;
    for (uint32_t i = from; i < to && left; i++) {
        if (atomic_load_explicit(&c->answered[i], RLX) != ANS_PENDING)
            continue;
        left--;
        if (c->recv_ns[i] > cutoff) {
            if (c->recv_ns[i] < next)
                next = c->recv_ns[i];
            continue;
        }
        atomic_store_explicit(&c->answered[i], reason == DEF_DEADLINE ? ANS_EXPIRED : ANS_DEFAULT,
                              RLX);
        c->send[n] = (fp_reply){c->defaults + (size_t)i * p->reply_stride,
                                (uint32_t)p->reply_bytes, 0, c->msgid[i], FP_S_OK, 0};
        c->send_idx[n] = i;
        n++;
    }
    if (n) {
        send_entries(p, c, c->send, c->send_idx, n, &late, &errs);
        atomic_fetch_sub(&c->unanswered, n);
        count(&p->defaulted[reason], n - late - errs); /* the defaults the port accepted */
        count(&p->reply_failed, late + errs);
        add_outcomes(p, late, errs);
    }
    return next;
}

/* Sends the chunk's outbox (chunk mu held). Returns the backend call's result. */
/* The send entry of outbox slot i (its status was stashed at fp_batch_reply). */
static fp_reply outbox_entry(const fp_pump *p, const fp_chunk *c, uint32_t i)
{
    uint8_t *out = c->outbox + (size_t)i * p->reply_stride;
    int32_t status;
    memcpy(&status, out, sizeof status);
    return (fp_reply){out, (uint32_t)p->reply_bytes, status, c->msgid[i], FP_S_OK, 0};
}

static fp_hresult flush_outbox_locked(fp_pump *p, fp_chunk *c, uint32_t *late, uint32_t *errs)
{
    uint32_t n = c->out_n;
    for (uint32_t k = 0; k < n; k++) {
        c->send[k] = outbox_entry(p, c, c->out_idx[k]);
        c->send_idx[k] = c->out_idx[k];
    }
    c->out_n = 0;
    if (!n)
        return FP_S_OK;
    uint32_t failed = *late + *errs;
    fp_hresult hr = send_entries(p, c, c->send, c->send_idx, n, late, errs);
    failed = *late + *errs - failed;
    atomic_fetch_sub(&c->unanswered, n);
    count(&p->replied, n - failed);
    count(&p->reply_failed, failed);
    return hr;
}

fp_hresult fp_batch_reply(fp_pump *p, const fp_batch *b, const uint8_t *mask, fp_reply_result *res)
{
    fp_reply_result r = {0};
    if (res)
        *res = r;
    if (!p || !b || !b->chunk || b->chunk->pump != p)
        return FP_E_INVALIDARG;
    fp_chunk *c = b->chunk;
    fp_hresult hr = FP_S_OK;
    uint32_t n = 0;
    const size_t stride = p->reply_stride;
    const size_t payload = p->reply_bytes - FP_REPLY_HEADER_AREA;
    bool queue = false, kick = false;
    fp_mutex_lock(&c->mu);
    for (uint32_t k = 0; k < b->count; k++) {
        if (mask && !mask[k])
            continue;
        uint32_t i = b->start + k;
        switch (atomic_load_explicit(&c->answered[i], RLX)) {
        case ANS_PENDING: {
            atomic_store_explicit(&c->answered[i], ANS_CONSUMER, RLX);
            /* payload and status are copied now: the consumer may reuse its reply slot at once.
             * The status waits in the outbox slot's header area, which the backend fills with the
             * real header at the send. */
            uint8_t *out = c->outbox + (size_t)i * stride;
            memcpy(out, &c->status[i], sizeof(int32_t));
            memcpy(out + FP_REPLY_HEADER_AREA,
                   c->replies + (size_t)i * stride + FP_REPLY_HEADER_AREA, payload);
            c->out_idx[c->out_n++] = i;
            n++;
            break;
        }
        case ANS_NOREPLY:
            r.no_reply++;
            break;
        default:
            r.already++;
            break;
        }
    }
    if (n) {
        fp_mutex_lock(&p->o_mu);
        bool here = (p->b->flags & FP_BACKEND_LOCAL_REPLY) && n <= FP_PUMP_INLINE_REPLIES &&
                    !p->o_head && !c->out_queued; /* (the outbox then holds only these n) */
        if (p->o_started && !p->o_stop && !here) {
            queue = true;
            if (!c->out_queued) {
                c->out_queued = true;
                c->out_next = NULL;
                if (p->o_tail)
                    p->o_tail->out_next = c;
                else
                    p->o_head = c;
                p->o_tail = c;
                kick = true;
            }
        }
        fp_mutex_unlock(&p->o_mu);
        if (kick) { /* the reply thread's hold, dropped after it sent */
            fp_mutex_lock(&p->q_mu);
            if (c->holds++ == 0)
                p->nheld++;
            fp_mutex_unlock(&p->q_mu);
        }
        if (!queue)
            hr = flush_outbox_locked(p, c, &r.late, &r.errors);
    }
    fp_mutex_unlock(&c->mu);
    /* Signalled with no lock held: the reply thread then never wakes into a lock we hold. */
    if (kick)
        fp_cond_signal(&p->o_cv);
    r.sent = n;
    count(&p->late_python, r.already);
    add_outcomes(p, r.late, r.errors);
    if (res)
        *res = r;
    return hr;
}

/* A reply thread: takes a chunk's queued replies under its lock, then sends them without it, so
 * the consumer's next batch never waits for the port. The chunk stays held (and its outbox slots
 * untouched: every message is answered once) until the send is done. */
fp_thread_ret FP_THREAD_API replier_main(void *arg)
{
    replier *r = arg;
    fp_pump *p = r->pump;
    fp_thread_name("fp-reply-", (unsigned)(r - p->o_args));
    for (;;) {
        fp_mutex_lock(&p->o_mu);
        while (!p->o_head && !p->o_stop)
            fp_cond_wait(&p->o_cv, &p->o_mu);
        fp_chunk *c = p->o_head;
        if (!c) { /* stopping and drained */
            fp_mutex_unlock(&p->o_mu);
            return 0;
        }
        p->o_head = c->out_next;
        if (!p->o_head)
            p->o_tail = NULL;
        c->out_next = NULL;
        fp_mutex_unlock(&p->o_mu);

        fp_mutex_lock(&c->mu);
        c->out_queued = false;
        uint32_t n = c->out_n;
        for (uint32_t k = 0; k < n; k++) {
            r->idx[k] = c->out_idx[k];
            r->send[k] = outbox_entry(p, c, c->out_idx[k]);
        }
        c->out_n = 0;
        fp_mutex_unlock(&c->mu);
        if (n) {
            uint32_t late = 0, errs = 0;
            send_entries(p, c, r->send, r->idx, n, &late, &errs);
            atomic_fetch_sub(&c->unanswered, n);
            count(&p->replied, n - late - errs);
            count(&p->reply_failed, late + errs);
            add_outcomes(p, late, errs);
        }
        chunk_unhold(p, c);
    }
}

fp_hresult fp_batch_finish(fp_pump *p, const fp_batch *b, int reason)
{
    if (!p || !b || !b->chunk || b->chunk->pump != p ||
        (reason != FP_FINISH_RELEASE && reason != FP_FINISH_ERROR))
        return FP_E_INVALIDARG;
    fp_chunk *c = b->chunk;
    fp_mutex_lock(&c->mu);
    answer_defaults_locked(p, c, b->start, b->start + b->count, UINT64_MAX,
                           reason == FP_FINISH_ERROR ? DEF_ERROR : DEF_RELEASE);
    fp_mutex_unlock(&c->mu);
    return FP_S_OK;
}

void fp_batch_release(fp_pump *p, const fp_batch *b)
{
    if (fp_batch_finish(p, b, FP_FINISH_RELEASE) != FP_S_OK)
        return;
    chunk_unhold(p, b->chunk);
}

/* Messages that landed in overflow slots (no chunk was free): answered with default_reply now,
 * and the slots given back. Any completion of an overflow slot comes here. */
void answer_overflow(fp_pump *p, const fp_completion *comp, uint32_t n)
{
    const uint32_t base = p->cfg.nchunks * p->cfg.batch;
    fp_reply send[REAP_MAX];
    uint32_t k = 0, noreply = 0;
    for (uint32_t j = 0; j < n; j++) {
        const fp_completion *e = &comp[j];
        if (e->hr != FP_S_OK && e->hr != FP_E_INSUFFICIENT_BUFFER)
            continue;
        if (!e->reply_length) {
            noreply++;
            continue;
        }
        uint8_t *r = p->ofl_replies + (size_t)(e->slot - base) * p->reply_stride;
        send[k++] = (fp_reply){r, (uint32_t)p->reply_bytes, 0, e->id, FP_S_OK, 0};
    }
    if (k) {
        fp_hresult hr = p->b->ops->reply(p->b, send, k);
        count(&p->reply_calls, 1);
        uint32_t late = 0, errs = 0;
        for (uint32_t j = 0; j < k; j++) {
            fp_hresult e = FP_SUCCEEDED(hr) ? send[j].hr : hr;
            if (e == FP_E_FLT_NO_WAITER_FOR_REPLY)
                late++;
            else if (!FP_SUCCEEDED(e))
                errs++;
        }
        count(&p->defaulted[DEF_OVERFLOW], k - late - errs);
        count(&p->reply_failed, late + errs);
        add_outcomes(p, late, errs);
    }
    count(&p->no_reply, noreply);
    fp_mutex_lock(&p->post_mu);
    for (uint32_t j = 0; j < n; j++) {
        p->ofl_state[comp[j].slot - base] = OFL_FREE;
        p->ofl_free[p->ofl_nfree++] = comp[j].slot - base;
    }
    fp_mutex_unlock(&p->post_mu);
}
