/* Completions become messages in slots, runs of messages become batches, and chunks go back to
 * the free list when nothing needs them anymore. See internal.h for the locks. */
#include <string.h>

#include "internal.h"

/* The wake-up object's level: set iff a batch is ready or next() would return stopped/failed.
 * q_mu held. */
void efd_update_locked(fp_pump *p)
{
    if (p->efd == FP_EVENT_NONE)
        return;
    bool want = p->ready_head || p->user_stop || p->ended;
    if (want && !p->efd_armed) {
        fp_event_set(p->efd);
        p->efd_armed = true;
    } else if (!want && p->efd_armed) {
        fp_event_clear(p->efd);
        p->efd_armed = false;
    }
}

static bool is_message(fp_hresult hr)
{
    return hr == FP_S_OK || hr == FP_E_INSUFFICIENT_BUFFER;
}

static void ready_append(fp_pump *p, fp_chunk *c)
{
    c->in_ready = true;
    c->next = NULL;
    c->prev = p->ready_tail;
    if (p->ready_tail)
        p->ready_tail->next = c;
    else
        p->ready_head = c;
    p->ready_tail = c;
    p->nready++;
    efd_update_locked(p);
}

static void ready_unlink(fp_pump *p, fp_chunk *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        p->ready_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        p->ready_tail = c->prev;
    c->next = c->prev = NULL;
    c->in_ready = false;
    p->nready--;
    efd_update_locked(p); /* set exactly while something can be handed out */
}

/* Nothing needs c anymore: every slot posted and completed, every message answered (its send
 * returned), no batch held. q_mu held. */
static bool freeable(const fp_pump *p, const fp_chunk *c)
{
    if (c->is_free || c->holds || atomic_load(&c->posted) != p->cfg.batch ||
        atomic_load(&c->inflight) || atomic_load(&c->unanswered))
        return false;
    /* messages nobody took may be dropped once the deadline answered them; any other (one that
     * expects no reply, one the stop answered after a failure) waits for the consumer */
    for (uint32_t i = c->scan; i < p->cfg.batch && c->untaken; i++)
        if (c->kind[i] == SLOT_MSG &&
            atomic_load_explicit(&c->answered[i], RLX) != ANS_EXPIRED)
            return false;
    return true;
}

/* q_mu held. Returns true if c went back to the free list. */
static bool free_if_done_locked(fp_pump *p, fp_chunk *c)
{
    if (!freeable(p, c))
        return false;
#ifdef FASTPORT_DEBUG
    /* Poison recycled slots: a view used past its life reads 0xDB, not a stranger's message. */
    memset(c->slots, 0xDB, p->chunk_bytes);
#endif
    if (c->in_ready)
        ready_unlink(p, c);
    c->is_free = true;
    c->next = p->free_head;
    p->free_head = c;
    p->nfree++;
    if (p->overflow_on) /* whoever unlocks next cancels the gets waiting in overflow slots */
        atomic_store_explicit(&p->ofl_recheck, true, RLX);
    return true;
}

/* A freed chunk may be what a stalled pump waits for: with nothing in flight nobody reaps, so the
 * thread that freed it posts (outside q_mu: post_mu comes first in the lock order). */
static void after_free(fp_pump *p)
{
    if (atomic_load(&p->stopping))
        return;
    overflow_recheck(p);
    if (atomic_load(&p->inflight) != 0)
        return;
    top_up(p);
    fp_mutex_lock(&p->q_mu); /* whoever waits for something to reap may lead now */
    fp_cond_broadcast(&p->ready_cv);
    fp_cond_broadcast(&p->w_cv);
    fp_mutex_unlock(&p->q_mu);
}

void chunk_check_free(fp_pump *p, fp_chunk *c)
{
    fp_mutex_lock(&p->q_mu);
    bool freed = free_if_done_locked(p, c);
    fp_mutex_unlock(&p->q_mu);
    if (freed)
        after_free(p);
}

void chunk_unhold(fp_pump *p, fp_chunk *c)
{
    fp_mutex_lock(&p->q_mu);
    bool freed = false;
    if (c->holds && --c->holds == 0) {
        p->nheld--;
        freed = free_if_done_locked(p, c);
    }
    fp_mutex_unlock(&p->q_mu);
    if (freed)
        after_free(p);
}

/* Records the completions of one reap. Phase 1, per chunk under its mu: the message's metadata
 * and answer state (so the deadline reaper and the answers see it). Phase 2, under q_mu: the slot
 * kinds and the ready list (so consumers see it). Overflow slots are answered at once. Then the
 * gets are re-issued (measured: deferring that until a consumer that reaped comes back gained
 * nothing measurable, and left fewer gets in flight while it was away). */
void chunks_process(fp_pump *p, const fp_completion *comp, uint32_t n)
{
    const uint32_t batch = p->cfg.batch, chunk_slots = p->cfg.nchunks * batch;
    const uint32_t msg_bytes = (uint32_t)p->message_bytes;
    const uint32_t rs = p->cfg.reply_size;
    const uint64_t now = fp_now_ns();
    fp_completion ofl[REAP_MAX]; /* overflow slots' completions: answered once no mu is held */
    uint32_t nofl = 0, ofl_msgs = 0, pend = 0, trunc = 0, noreply = 0, msgs = 0, errs = 0;
    fp_hresult fail = FP_S_OK;
    fp_chunk *locked = NULL;
    for (uint32_t k = 0; k < n; k++) {
        const fp_completion *e = &comp[k];
        if (e->slot >= chunk_slots) {
            /* not answered here: answer_overflow takes post_mu, which top_up holds while it
             * takes a chunk's mu (lock order: post_mu before any chunk's mu) */
            ofl_msgs += is_message(e->hr);
            ofl[nofl++] = *e;
            continue;
        }
        if (!is_message(e->hr))
            continue;
        fp_chunk *c = &p->chunks[e->slot / batch];
        uint32_t i = e->slot % batch;
        if (c != locked) {
            if (locked)
                fp_mutex_unlock(&locked->mu);
            fp_mutex_lock(&c->mu);
            locked = c;
        }
        uint8_t *s = slot_at(p, c, i);
        uint32_t len = e->length > msg_bytes ? msg_bytes : e->length;
        if (len < msg_bytes) /* never let a handler see an older message's bytes */
            memset(s + len, 0, msg_bytes - len);
        c->recv_ns[i] = now;
        c->length[i] = len;
        c->msgid[i] = e->id;
        if (rs)
            memcpy(c->replies + (size_t)i * p->reply_stride + FP_REPLY_HEADER_AREA,
                   p->default_reply, rs);
        c->status[i] = 0;
        if (e->reply_length) {
            atomic_store_explicit(&c->answered[i], ANS_PENDING, RLX);
            atomic_fetch_add(&c->unanswered, 1);
            pend++;
        } else {
            atomic_store_explicit(&c->answered[i], ANS_NOREPLY, RLX);
            noreply++;
        }
        if (e->hr == FP_E_INSUFFICIENT_BUFFER)
            trunc++;
        msgs++;
    }
    if (locked)
        fp_mutex_unlock(&locked->mu);

    /* counted before anything is published: a consumer never holds a message stats lack */
    count(&p->received, msgs + ofl_msgs);
    count(&p->truncated, trunc);
    count(&p->no_reply, noreply);

    fp_chunk *touched[REAP_MAX];
    uint32_t nt = 0;
    bool wake_leader = false;
    fp_mutex_lock(&p->q_mu);
    for (uint32_t k = 0; k < n; k++) {
        const fp_completion *e = &comp[k];
        if (e->slot >= chunk_slots)
            continue;
        fp_chunk *c = &p->chunks[e->slot / batch];
        if (is_message(e->hr)) {
            c->kind[e->slot % batch] = SLOT_MSG;
            c->untaken++;
        } else {
            c->kind[e->slot % batch] = SLOT_HOLE;
        }
        atomic_fetch_sub(&c->inflight, 1);
        if (!is_message(e->hr) && e->hr != FP_E_OPERATION_ABORTED) {
            errs++;
            if (fail == FP_S_OK)
                fail = e->hr;
        }
        if (nt == 0 || touched[nt - 1] != c) {
            uint32_t j = 0;
            while (j < nt && touched[j] != c)
                j++;
            if (j == nt)
                touched[nt++] = c;
        }
    }
    bool was_empty = p->ready_head == NULL;
    for (uint32_t j = 0; j < nt; j++) {
        fp_chunk *c = touched[j];
        if (c->untaken && !c->in_ready)
            ready_append(p, c);
        free_if_done_locked(p, c); /* all holes, say */
    }
    if (was_empty && p->ready_head) {
        efd_update_locked(p);
        if (p->next_waiters)
            fp_cond_signal(&p->ready_cv);
        wake_leader = p->leader == LEAD_CONSUMER;
    }
    fp_mutex_unlock(&p->q_mu);
    /* a consumer blocked in reap would not see what we published: make its reap return */
    if (wake_leader)
        p->b->ops->wake(p->b);

    /* drained while stopping: a leader blocked in reap waits for nothing now */
    if (atomic_fetch_sub(&p->inflight, n) == n && atomic_load(&p->stopping))
        p->b->ops->wake(p->b);
    count(&p->errors, errs);
    if (nofl)
        answer_overflow(p, ofl, nofl);
    overflow_recheck(p); /* a touched chunk may have been freed above */
    /* pairs with the reaper's idle store before it scans (see reaper_main) */
    if (pend && p->cfg.deadline_ns >= 0 && !p->reaper_polls && atomic_load(&p->reaper_idle))
        reaper_kick(p);
    if (fail != FP_S_OK)
        pump_fail(p, fail);
    else /* re-issue the gets: another thread may already be blocked in a reap */
        top_up(p);
}

/* Hands out the next run of messages (q_mu held): the first maximal run of consecutive MSG slots
 * of the oldest ready chunk. Messages the deadline already answered are skipped where a run would
 * start: nobody should work on those. Sources serve gets oldest first, so runs are normally the
 * chunk's slots in order; a source that does not still gets every message handed out once. */
bool chunks_take_locked(fp_pump *p, fp_batch *out)
{
    const uint32_t batch = p->cfg.batch;
    fp_chunk *c;
    while ((c = p->ready_head)) {
        while (c->scan < batch && (c->kind[c->scan] == SLOT_TAKEN || c->kind[c->scan] == SLOT_HOLE))
            c->scan++;
        uint32_t s = c->scan;
        for (; s < batch && c->untaken; s++) {
            if (c->kind[s] != SLOT_MSG)
                continue;
            if (atomic_load_explicit(&c->answered[s], RLX) != ANS_EXPIRED)
                break;
            c->kind[s] = SLOT_TAKEN; /* skipped */
            c->untaken--;
        }
        if (!c->untaken) {
            ready_unlink(p, c);
            free_if_done_locked(p, c);
            continue;
        }
        uint32_t e = s;
        while (e < batch && c->kind[e] == SLOT_MSG) {
            c->kind[e] = SLOT_TAKEN;
            e++;
        }
        c->untaken -= e - s;
        if (!c->untaken)
            ready_unlink(p, c);
        if (c->holds++ == 0)
            p->nheld++;
        out->chunk = c;
        out->start = s;
        out->count = e - s;
        count(&p->batches, 1);
        efd_update_locked(p);
        return true;
    }
    return false;
}

void chunks_drop_ready_locked(fp_pump *p)
{
    fp_chunk *c;
    while ((c = p->ready_head)) {
        for (uint32_t i = 0; i < p->cfg.batch; i++)
            if (c->kind[i] == SLOT_MSG)
                c->kind[i] = SLOT_TAKEN;
        c->untaken = 0;
        ready_unlink(p, c);
        free_if_done_locked(p, c);
    }
}

void fp_batch_get_info(const fp_pump *p, const fp_batch *b, fp_batch_info *out)
{
    const fp_chunk *c = b->chunk;
    out->chunk = c->index;
    out->start = b->start;
    out->count = b->count;
    out->slots = slot_at(p, c, b->start);
    out->slot_size = p->slot_size;
    out->reply_payload = c->replies + (size_t)b->start * p->reply_stride + FP_REPLY_HEADER_AREA;
    out->reply_stride = p->reply_stride;
    out->status = c->status + b->start;
    out->recv_ns = c->recv_ns + b->start;
    out->length = c->length + b->start;
}
