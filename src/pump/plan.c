/* The pump's plan: configuration, geometry, the one allocation of everything, layout, destroy. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Allocation counters (always on: touched only at create/destroy), for leak checks. */
static _Atomic int64_t dbg_slabs_alloc, dbg_slabs_freed, dbg_chunks_alloc, dbg_chunks_freed,
    dbg_pumps_live;
#define DBG_ADD(c, n) atomic_fetch_add_explicit(&(c), (n), RLX)

void fp_pump_debug_counters(fp_pump_debug *out)
{
    out->slabs_allocated = atomic_load(&dbg_slabs_alloc);
    out->slabs_freed = atomic_load(&dbg_slabs_freed);
    out->chunks_allocated = atomic_load(&dbg_chunks_alloc);
    out->chunks_freed = atomic_load(&dbg_chunks_freed);
    out->pumps_live = atomic_load(&dbg_pumps_live);
}

static size_t round_up(size_t v, size_t a)
{
    return (v + a - 1) / a * a;
}

static bool mul_ok(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

void fp_pump_config_init(fp_pump_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->threads = 2;
    cfg->outstanding = 16;
    cfg->batch = 64;
    cfg->deadline_ns = -1;
    cfg->overflow = -1;
    cfg->consumer_reap = 1;
}

static void free_all(fp_pump *p)
{
    if (p->chunks) {
        for (uint32_t i = 0; i < p->cfg.nchunks; i++)
            fp_mutex_destroy(&p->chunks[i].mu);
        DBG_ADD(dbg_chunks_freed, p->cfg.nchunks);
    }
    if (p->slab)
        DBG_ADD(dbg_slabs_freed, 1);
    fp_aligned_free(p->slab);
    fp_aligned_free(p->reply_area);
    fp_aligned_free(p->meta);
    fp_aligned_free(p->chunks);
    fp_aligned_free(p->workers);
    fp_aligned_free(p->ofl_slots);
    fp_aligned_free(p->ofl_replies);
    free(p->ofl_free);
    free(p->ofl_state);
    free(p->o_tids);
    if (p->o_args)
        for (uint32_t t = 0; t < p->cfg.reply_threads; t++) {
            free(p->o_args[t].send);
            free(p->o_args[t].idx);
        }
    free(p->o_args);
    free(p->default_reply);
    if (p->efd != FP_EVENT_NONE)
        fp_event_close(p->efd);
    fp_mutex_destroy(&p->post_mu);
    fp_mutex_destroy(&p->q_mu);
    fp_cond_destroy(&p->ready_cv);
    fp_cond_destroy(&p->exit_cv);
    fp_cond_destroy(&p->w_cv);
    fp_mutex_destroy(&p->r_mu);
    fp_cond_destroy(&p->r_cv);
    fp_mutex_destroy(&p->join_mu);
    fp_mutex_destroy(&p->o_mu);
    fp_cond_destroy(&p->o_cv);
    fp_aligned_free(p);
}

static bool config_valid(const fp_pump_config *c)
{
    return c->threads >= 1 && c->threads <= FP_PUMP_MAX_THREADS && c->outstanding >= 1 &&
           c->outstanding <= FP_PUMP_MAX_OUTSTANDING &&
           (uint64_t)c->threads * c->outstanding <= FP_PUMP_MAX_INFLIGHT && c->batch >= 1 &&
           c->batch <= FP_PUMP_MAX_BATCH && c->nchunks <= FP_PUMP_MAX_CHUNKS &&
           c->message_size <= FP_PUMP_MAX_MESSAGE && c->reply_size <= FP_PUMP_MAX_MESSAGE &&
           c->reply_threads <= FP_PUMP_MAX_THREADS && c->consumer_reap <= 1;
}

fp_hresult fp_pump_create(fp_backend *backend, const fp_pump_config *cfg_in, fp_pump **out)
{
    if (!out)
        return FP_E_INVALIDARG;
    *out = NULL;
    if (!backend || !backend->ops || !backend->ops->attach || !backend->ops->post ||
        !backend->ops->reap || !backend->ops->wake || !backend->ops->cancel ||
        !backend->ops->reply || !cfg_in || !config_valid(cfg_in))
        return FP_E_INVALIDARG;
    fp_pump_config cfg = *cfg_in;
    uint32_t target = cfg.threads * cfg.outstanding;
    if (cfg.nchunks == 0) {
        /* the chunks the gets in flight span (+1: posting runs on into the next), and room for
         * batches with the consumer and the reply threads */
        uint64_t n = ((uint64_t)target + cfg.batch - 1) / cfg.batch + 1 + 2u * cfg.threads + 4u;
        cfg.nchunks = n > FP_PUMP_MAX_CHUNKS ? FP_PUMP_MAX_CHUNKS : (uint32_t)n;
    }
    bool overflow_on = cfg.overflow < 0 ? cfg.deadline_ns >= 0 : cfg.overflow > 0;
    uint32_t noverflow = overflow_on ? target : 0;

    size_t slot_size = round_up(FP_SLOT_HEADER + (size_t)cfg.message_size, FP_PUMP_SLOT_ALIGN);
    size_t reply_stride = round_up(FP_REPLY_HEADER_AREA + (size_t)cfg.reply_size,
                                   FP_PUMP_REPLY_ALIGN);
    size_t chunk_bytes, chunk_reply_bytes, slab_bytes, replies_bytes, area_bytes, ofl_bytes,
        ofl_reply_bytes;
    if (!mul_ok(slot_size, cfg.batch, &chunk_bytes) ||
        !mul_ok(reply_stride, cfg.batch, &chunk_reply_bytes))
        return FP_E_OUTOFMEMORY;
    chunk_reply_bytes = round_up(chunk_reply_bytes, CACHELINE);
    if (!mul_ok(chunk_bytes, cfg.nchunks, &slab_bytes) ||
        !mul_ok(chunk_reply_bytes, cfg.nchunks, &replies_bytes) ||
        !mul_ok(replies_bytes, 3, &area_bytes) || !mul_ok(slot_size, noverflow, &ofl_bytes) ||
        !mul_ok(reply_stride, noverflow, &ofl_reply_bytes))
        return FP_E_OUTOFMEMORY;
    slab_bytes = round_up(slab_bytes, PAGE);

    /* per-chunk metadata block, each array 64-aligned so chunks never share a line */
    size_t B = cfg.batch;
    size_t off_recv = 0;
    size_t off_msgid = round_up(off_recv + 8 * B, CACHELINE);
    size_t off_len = round_up(off_msgid + 8 * B, CACHELINE);
    size_t off_status = round_up(off_len + 4 * B, CACHELINE);
    size_t off_send = round_up(off_status + 4 * B, CACHELINE);
    size_t off_sidx = round_up(off_send + sizeof(fp_reply) * B, CACHELINE);
    size_t off_oidx = round_up(off_sidx + 4 * B, CACHELINE);
    size_t off_ans = round_up(off_oidx + 4 * B, CACHELINE);
    size_t off_kind = round_up(off_ans + B, CACHELINE);
    size_t meta_chunk = round_up(off_kind + B, CACHELINE), meta_bytes;
    if (!mul_ok(meta_chunk, cfg.nchunks, &meta_bytes))
        return FP_E_OUTOFMEMORY;
    if (slab_bytes > FP_PUMP_MAX_BYTES || area_bytes > FP_PUMP_MAX_BYTES ||
        meta_bytes > FP_PUMP_MAX_BYTES || ofl_bytes > FP_PUMP_MAX_BYTES)
        return FP_E_OUTOFMEMORY;
    /* Every page is touched at create: refuse more than half the machine's memory rather than
     * invite the OOM killer. */
    uint64_t phys = fp_phys_memory();
    if (phys && (uint64_t)(slab_bytes / 2 + area_bytes / 2 + meta_bytes / 2 + ofl_bytes / 2) >
                    phys / 4)
        return FP_E_OUTOFMEMORY;

    fp_pump *p = fp_aligned_alloc(CACHELINE, sizeof *p);
    if (!p)
        return FP_E_OUTOFMEMORY;
    memset(p, 0, sizeof *p);
    p->efd = FP_EVENT_NONE;
    if (fp_mutex_init(&p->post_mu) || fp_mutex_init(&p->q_mu) ||
        fp_cond_init(&p->ready_cv) ||
        fp_cond_init(&p->exit_cv) || fp_cond_init(&p->w_cv) ||
        fp_mutex_init(&p->r_mu) || fp_cond_init(&p->r_cv) ||
        fp_mutex_init(&p->join_mu) || fp_mutex_init(&p->o_mu) ||
        fp_cond_init(&p->o_cv)) {
        fp_aligned_free(p); /* init failures on Linux only happen for bad attributes; nothing to destroy */
        return FP_E_OUTOFMEMORY;
    }
    p->b = backend;
    p->cfg = cfg;
    p->target = target;
    p->noverflow = noverflow;
    p->overflow_on = overflow_on;
    p->reaper_polls = cfg.deadline_ns >= (int64_t)REAPER_POLL_MIN_NS;
    p->nslots = cfg.nchunks * cfg.batch + noverflow;
    p->consumer_reap = cfg.consumer_reap != 0;
    p->slot_size = slot_size;
    p->message_bytes = FP_SLOT_HEADER + (size_t)cfg.message_size;
    p->reply_stride = reply_stride;
    p->reply_bytes = FP_REPLY_HEADER_AREA + (size_t)cfg.reply_size;
    p->chunk_bytes = chunk_bytes;
    p->chunk_reply_bytes = chunk_reply_bytes;
    p->slab_bytes = slab_bytes;
    p->reply_area_bytes = round_up(area_bytes, PAGE);
    fp_hist_init(&p->lat);

    void *mem;
    if (!(mem = fp_aligned_alloc(PAGE, slab_bytes)))
        goto oom;
    p->slab = mem;
    DBG_ADD(dbg_slabs_alloc, 1);
    if (!(mem = fp_aligned_alloc(PAGE, p->reply_area_bytes)))
        goto oom;
    p->reply_area = mem;
    if (!(mem = fp_aligned_alloc(CACHELINE, meta_bytes)))
        goto oom;
    p->meta = mem;
    if (!(mem = fp_aligned_alloc(CACHELINE, sizeof(fp_chunk) * cfg.nchunks)))
        goto oom;
    p->chunks = mem;
    if (!(mem = fp_aligned_alloc(CACHELINE, sizeof(worker) * cfg.threads)))
        goto oom;
    p->workers = mem;
    memset(p->workers, 0, sizeof(worker) * cfg.threads);
    if (noverflow) {
        if (!(mem = fp_aligned_alloc(CACHELINE, ofl_bytes)))
            goto oom;
        p->ofl_slots = mem;
        if (!(mem = fp_aligned_alloc(CACHELINE, ofl_reply_bytes)))
            goto oom;
        p->ofl_replies = mem;
        if (!(p->ofl_free = calloc(noverflow, sizeof(uint32_t))) ||
            !(p->ofl_state = calloc(noverflow, 1)))
            goto oom;
    }
    if (cfg.reply_threads) {
        if (!(p->o_tids = calloc(cfg.reply_threads, sizeof(fp_thread))) ||
            !(p->o_args = calloc(cfg.reply_threads, sizeof(replier))))
            goto oom;
        for (uint32_t t = 0; t < cfg.reply_threads; t++) {
            replier *r = &p->o_args[t];
            r->pump = p;
            if (!(r->send = calloc(cfg.batch, sizeof(fp_reply))) ||
                !(r->idx = calloc(cfg.batch, sizeof(uint32_t))))
                goto oom;
        }
    }
    p->default_reply = calloc(1, cfg.reply_size ? cfg.reply_size : 1);
    if (!p->default_reply)
        goto oom;
    if (cfg.default_reply && cfg.reply_size)
        memcpy(p->default_reply, cfg.default_reply, cfg.reply_size);
    p->cfg.default_reply = p->default_reply;

    memset(p->slab, 0, slab_bytes); /* touch the pages now, not on the hot path */
    memset(p->reply_area, 0, p->reply_area_bytes);
    memset(p->meta, 0, meta_bytes);
    for (uint32_t j = 0; j < noverflow; j++) {
        memset(p->ofl_slots + (size_t)j * slot_size, 0, slot_size);
        uint8_t *r = p->ofl_replies + (size_t)j * reply_stride;
        memset(r, 0, reply_stride);
        memcpy(r + FP_REPLY_HEADER_AREA, p->default_reply, cfg.reply_size);
        p->ofl_free[j] = noverflow - 1 - j;
    }
    p->ofl_nfree = noverflow;

    for (uint32_t i = 0; i < cfg.nchunks; i++) {
        fp_chunk *c = &p->chunks[i];
        memset(c, 0, sizeof *c);
        fp_mutex_init(&c->mu);
        c->pump = p;
        c->index = i;
        c->slots = p->slab + (size_t)i * chunk_bytes;
        c->replies = p->reply_area + (size_t)i * chunk_reply_bytes;
        c->defaults = p->reply_area + replies_bytes + (size_t)i * chunk_reply_bytes;
        c->outbox = p->reply_area + 2 * replies_bytes + (size_t)i * chunk_reply_bytes;
        uint8_t *m = p->meta + (size_t)i * meta_chunk;
        c->recv_ns = (uint64_t *)(void *)(m + off_recv);
        c->msgid = (uint64_t *)(void *)(m + off_msgid);
        c->length = (uint32_t *)(void *)(m + off_len);
        c->status = (int32_t *)(void *)(m + off_status);
        c->send = (fp_reply *)(void *)(m + off_send);
        c->send_idx = (uint32_t *)(void *)(m + off_sidx);
        c->out_idx = (uint32_t *)(void *)(m + off_oidx);
        c->answered = (_Atomic uint8_t *)(void *)(m + off_ans);
        c->kind = m + off_kind;
        for (uint32_t s = 0; s < cfg.batch; s++)
            memcpy(c->defaults + (size_t)s * reply_stride + FP_REPLY_HEADER_AREA, p->default_reply,
                   cfg.reply_size);
        c->is_free = true;
    }
    DBG_ADD(dbg_chunks_alloc, cfg.nchunks);
    /* free list in index order (LIFO afterwards: a recycled chunk is cache-warm) */
    for (uint32_t i = cfg.nchunks; i-- > 0;) {
        p->chunks[i].next = p->free_head;
        p->free_head = &p->chunks[i];
    }
    p->nfree = cfg.nchunks;
    for (uint32_t t = 0; t < cfg.threads; t++)
        p->workers[t].pump = p;
    fp_hresult hr = backend->ops->attach(backend, p->nslots);
    if (!FP_SUCCEEDED(hr)) {
        free_all(p);
        return hr;
    }
    DBG_ADD(dbg_pumps_live, 1);
    *out = p;
    return FP_S_OK;
oom:
    if (p->chunks) { /* mutexes not initialised yet on this path */
        fp_aligned_free(p->chunks);
        p->chunks = NULL;
    }
    free_all(p);
    return FP_E_OUTOFMEMORY;
}

fp_hresult fp_pump_destroy(fp_pump *p)
{
    if (!p)
        return FP_S_OK;
    fp_pump_join(p);
    fp_mutex_lock(&p->q_mu);
    uint32_t held = p->nheld;
    fp_mutex_unlock(&p->q_mu);
    if (held)
        return FP_PUMP_E_BUSY;
    DBG_ADD(dbg_pumps_live, -1);
    free_all(p);
    return FP_S_OK;
}

void fp_pump_get_layout(const fp_pump *p, fp_pump_layout *out)
{
    out->slab = p->slab;
    out->slab_bytes = p->slab_bytes;
    out->replies = p->reply_area;
    out->replies_bytes = p->chunk_reply_bytes * p->cfg.nchunks;
    out->slot_size = p->slot_size;
    out->message_bytes = p->message_bytes;
    out->reply_stride = p->reply_stride;
    out->reply_bytes = p->reply_bytes;
    out->chunk_bytes = p->chunk_bytes;
    out->chunk_reply_bytes = p->chunk_reply_bytes;
    out->nchunks = p->cfg.nchunks;
    out->batch = p->cfg.batch;
    out->threads = p->cfg.threads;
    out->outstanding = p->cfg.outstanding;
    out->overflow_slots = p->noverflow;
}
