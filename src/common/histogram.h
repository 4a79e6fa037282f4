/* Log-linear latency histogram (nanoseconds), lock-free.
 *
 * Buckets: values 0..15 have one bucket each; above that, every power of two [2^k, 2^(k+1)) is split
 * into FP_HIST_SUB (16) equal sub-buckets, so a bucket's width is at most 1/16 of its low bound:
 * any percentile is reported with a relative error below 6.25%. 976 buckets cover all of uint64.
 *
 * Recording is a few relaxed atomic adds (no lock): many threads may record into one histogram,
 * and a reader may snapshot it (fp_hist_copy / fp_hist_merge / percentiles) at the same time; a
 * snapshot taken during recording may be off by the records in flight, never torn per bucket.
 * Percentiles walk the buckets, so they use the bucket sum as the total, not `count`.
 *
 * The load-generating driver keeps one histogram per sender thread and merges them.
 */
#ifndef FP_HISTOGRAM_H
#define FP_HISTOGRAM_H

#include <stdatomic.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FP_HIST_SUB_BITS 4u
#define FP_HIST_SUB (1u << FP_HIST_SUB_BITS)
#define FP_HIST_BUCKETS ((64u - FP_HIST_SUB_BITS + 1u) * FP_HIST_SUB) /* 976 */

typedef struct fp_hist {
    _Atomic uint64_t count;
    _Atomic uint64_t sum;  /* wraps after ~584 years of summed nanoseconds */
    _Atomic uint64_t min;  /* UINT64_MAX while empty */
    _Atomic uint64_t max;
    _Atomic uint64_t buckets[FP_HIST_BUCKETS];
} fp_hist;

/* Plain summary; every field 0 when the histogram is empty. */
typedef struct fp_hist_summary {
    uint64_t count, min, max, mean;
    uint64_t p50, p90, p99, p999;
} fp_hist_summary;

void fp_hist_init(fp_hist *h);   /* = reset; for embedded/static histograms */
void fp_hist_reset(fp_hist *h);  /* not atomic as a whole: do not race it with records */
fp_hist *fp_hist_new(void);      /* malloc + init; NULL on out of memory */
void fp_hist_free(fp_hist *h);

void fp_hist_record(fp_hist *h, uint64_t value);
void fp_hist_record_n(fp_hist *h, uint64_t value, uint64_t n); /* n records of one value */

/* dst += src (bucket by bucket; min/max/count/sum combined). dst and src may be recorded into
 * concurrently. dst == src is refused (no-op). */
void fp_hist_merge(fp_hist *dst, const fp_hist *src);
void fp_hist_copy(fp_hist *dst, const fp_hist *src); /* reset + merge */

/* Value at quantile q in [0, 1] (0.5 = p50, 0.999 = p999): the highest value of the bucket that
 * holds the ceil(q * total)-th smallest record, clamped to [min, max]; q >= 1 gives max, q <= 0
 * gives min. 0 when empty. */
uint64_t fp_hist_quantile(const fp_hist *h, double q);
void fp_hist_summarize(const fp_hist *h, fp_hist_summary *out);

/* Bucket geometry (for plotting and tests). */
uint32_t fp_hist_bucket_of(uint64_t value);
uint64_t fp_hist_bucket_low(uint32_t bucket);
uint64_t fp_hist_bucket_high(uint32_t bucket); /* inclusive */

#ifdef __cplusplus
}
#endif
#endif
