#include "histogram.h"
#include "fp_bits.h"

#include <stdlib.h>

#define RLX memory_order_relaxed

_Static_assert(FP_HIST_BUCKETS == 976, "bucket count");

uint32_t fp_hist_bucket_of(uint64_t v)
{
    if (v < FP_HIST_SUB)
        return (uint32_t)v;
    uint32_t k = 63u - (uint32_t)fp_clz64(v); /* >= FP_HIST_SUB_BITS */
    uint32_t sub = (uint32_t)(v >> (k - FP_HIST_SUB_BITS)) - FP_HIST_SUB;
    return (k - FP_HIST_SUB_BITS + 1u) * FP_HIST_SUB + sub;
}

uint64_t fp_hist_bucket_low(uint32_t b)
{
    if (b >= FP_HIST_BUCKETS)
        return UINT64_MAX;
    if (b < FP_HIST_SUB)
        return b;
    uint32_t g = b / FP_HIST_SUB, sub = b % FP_HIST_SUB;
    return (uint64_t)(FP_HIST_SUB + sub) << (g - 1u);
}

uint64_t fp_hist_bucket_high(uint32_t b)
{
    if (b >= FP_HIST_BUCKETS - 1u)
        return UINT64_MAX;
    if (b < FP_HIST_SUB)
        return b;
    return fp_hist_bucket_low(b) + ((uint64_t)1 << (b / FP_HIST_SUB - 1u)) - 1u;
}

void fp_hist_reset(fp_hist *h)
{
    atomic_store_explicit(&h->count, 0, RLX);
    atomic_store_explicit(&h->sum, 0, RLX);
    atomic_store_explicit(&h->min, UINT64_MAX, RLX);
    atomic_store_explicit(&h->max, 0, RLX);
    for (uint32_t i = 0; i < FP_HIST_BUCKETS; i++)
        atomic_store_explicit(&h->buckets[i], 0, RLX);
}

void fp_hist_init(fp_hist *h)
{
    fp_hist_reset(h);
}

fp_hist *fp_hist_new(void)
{
    fp_hist *h = malloc(sizeof *h);
    if (h)
        fp_hist_init(h);
    return h;
}

void fp_hist_free(fp_hist *h)
{
    free(h);
}

static void update_min(fp_hist *h, uint64_t v)
{
    uint64_t cur = atomic_load_explicit(&h->min, RLX);
    while (v < cur && !atomic_compare_exchange_weak_explicit(&h->min, &cur, v, RLX, RLX))
        ;
}

static void update_max(fp_hist *h, uint64_t v)
{
    uint64_t cur = atomic_load_explicit(&h->max, RLX);
    while (v > cur && !atomic_compare_exchange_weak_explicit(&h->max, &cur, v, RLX, RLX))
        ;
}

void fp_hist_record_n(fp_hist *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    atomic_fetch_add_explicit(&h->buckets[fp_hist_bucket_of(v)], n, RLX);
    atomic_fetch_add_explicit(&h->count, n, RLX);
    atomic_fetch_add_explicit(&h->sum, v * n, RLX);
    update_min(h, v);
    update_max(h, v);
}

void fp_hist_record(fp_hist *h, uint64_t v)
{
    fp_hist_record_n(h, v, 1);
}

void fp_hist_merge(fp_hist *dst, const fp_hist *src)
{
    if (dst == src)
        return;
    fp_hist *s = (fp_hist *)src; /* atomic loads want non-const pointers in older compilers */
    uint64_t total = 0;
    for (uint32_t i = 0; i < FP_HIST_BUCKETS; i++) {
        uint64_t n = atomic_load_explicit(&s->buckets[i], RLX);
        if (n) {
            atomic_fetch_add_explicit(&dst->buckets[i], n, RLX);
            total += n;
        }
    }
    if (!total)
        return;
    atomic_fetch_add_explicit(&dst->count, atomic_load_explicit(&s->count, RLX), RLX);
    atomic_fetch_add_explicit(&dst->sum, atomic_load_explicit(&s->sum, RLX), RLX);
    update_min(dst, atomic_load_explicit(&s->min, RLX));
    update_max(dst, atomic_load_explicit(&s->max, RLX));
}

void fp_hist_copy(fp_hist *dst, const fp_hist *src)
{
    if (dst == src)
        return;
    fp_hist_reset(dst);
    fp_hist_merge(dst, src);
}

uint64_t fp_hist_quantile(const fp_hist *h, double q)
{
    fp_hist *s = (fp_hist *)h;
    uint64_t total = 0;
    for (uint32_t i = 0; i < FP_HIST_BUCKETS; i++)
        total += atomic_load_explicit(&s->buckets[i], RLX);
    if (!total)
        return 0;
    uint64_t mn = atomic_load_explicit(&s->min, RLX), mx = atomic_load_explicit(&s->max, RLX);
    if (q >= 1.0)
        return mx;
    if (!(q > 0.0)) /* also NaN */
        return mn;
    double r = q * (double)total;
    uint64_t rank = (uint64_t)r;
    if ((double)rank < r)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < FP_HIST_BUCKETS; i++) {
        seen += atomic_load_explicit(&s->buckets[i], RLX);
        if (seen >= rank) {
            uint64_t v = fp_hist_bucket_high(i);
            if (v > mx)
                v = mx;
            if (v < mn)
                v = mn;
            return v;
        }
    }
    return mx; /* buckets grew under us */
}

void fp_hist_summarize(const fp_hist *h, fp_hist_summary *out)
{
    fp_hist *s = (fp_hist *)h;
    *out = (fp_hist_summary){0};
    uint64_t n = atomic_load_explicit(&s->count, RLX);
    if (!n)
        return;
    out->count = n;
    out->min = atomic_load_explicit(&s->min, RLX);
    out->max = atomic_load_explicit(&s->max, RLX);
    out->mean = atomic_load_explicit(&s->sum, RLX) / n;
    out->p50 = fp_hist_quantile(h, 0.5);
    out->p90 = fp_hist_quantile(h, 0.9);
    out->p99 = fp_hist_quantile(h, 0.99);
    out->p999 = fp_hist_quantile(h, 0.999);
}
