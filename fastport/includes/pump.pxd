# Mirrors src/pump/pump.h.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from fastport.includes.backend cimport fp_backend

cdef extern from "pump/pump.h" nogil:
    const int32_t FP_PUMP_E_BUSY
    const uint32_t FP_PUMP_MAX_THREADS, FP_PUMP_MAX_BATCH, FP_PUMP_MAX_OUTSTANDING
    const uint32_t FP_PUMP_MAX_INFLIGHT
    ctypedef struct fp_pump:
        pass
    ctypedef struct fp_chunk:
        pass
    ctypedef struct fp_pump_config:
        uint32_t threads
        uint32_t outstanding
        uint32_t batch
        uint32_t nchunks
        int64_t deadline_ns
        int32_t overflow
        uint32_t message_size
        uint32_t reply_size
        const void *default_reply
        uint32_t reply_threads
        uint32_t consumer_reap
    void fp_pump_config_init(fp_pump_config *cfg)
    int32_t fp_pump_create(fp_backend *backend, const fp_pump_config *cfg, fp_pump **out)
    int32_t fp_pump_start(fp_pump *p)
    void fp_pump_stop(fp_pump *p)
    void fp_pump_join(fp_pump *p)
    int32_t fp_pump_destroy(fp_pump *p)

    ctypedef struct fp_batch:
        fp_chunk *chunk
        uint32_t start
        uint32_t count
    enum:
        FP_PUMP_BATCH
        FP_PUMP_TIMEOUT
        FP_PUMP_STOPPED
        FP_PUMP_FAILED
    int fp_pump_next(fp_pump *p, int64_t timeout_ns, fp_batch *out)
    int fp_pump_try_next(fp_pump *p, fp_batch *out)
    int32_t fp_pump_error(fp_pump *p)
    int fp_pump_fd(fp_pump *p)

    ctypedef struct fp_batch_info:
        uint32_t chunk
        uint32_t start
        uint32_t count
        uint8_t *slots
        size_t slot_size
        uint8_t *reply_payload
        size_t reply_stride
        int32_t *status
        const uint64_t *recv_ns
        const uint32_t *length
    void fp_batch_get_info(const fp_pump *p, const fp_batch *b, fp_batch_info *out)

    ctypedef struct fp_reply_result:
        uint32_t sent
        uint32_t already
        uint32_t no_reply
        uint32_t late
        uint32_t errors
    int32_t fp_batch_reply(fp_pump *p, const fp_batch *b, const uint8_t *mask,
                           fp_reply_result *res)
    enum:
        FP_FINISH_RELEASE
        FP_FINISH_ERROR
    int32_t fp_batch_finish(fp_pump *p, const fp_batch *b, int reason)
    void fp_batch_release(fp_pump *p, const fp_batch *b)

    ctypedef struct fp_pump_stats:
        uint64_t received
        uint64_t replied
        uint64_t reply_failed
        uint64_t no_reply
        uint64_t defaulted_deadline
        uint64_t defaulted_error
        uint64_t defaulted_release
        uint64_t defaulted_stop
        uint64_t defaulted_overflow
        uint64_t late_replies
        uint64_t late_python
        uint64_t errors
        uint64_t truncated
        uint64_t batches
        uint64_t posts
        uint64_t reaps
        uint64_t reply_calls
        uint64_t inflight
        uint64_t chunks_total
        uint64_t chunks_free
        uint64_t chunks_filling
        uint64_t chunks_ready
        uint64_t chunks_held
        uint64_t latency_count
        uint64_t latency_min_ns, latency_mean_ns, latency_max_ns
        uint64_t latency_p50_ns, latency_p90_ns, latency_p99_ns, latency_p999_ns
    void fp_pump_stats_get(fp_pump *p, fp_pump_stats *out)
    uint64_t fp_pump_overflowed(fp_pump *p)

    ctypedef struct fp_pump_layout:
        uint8_t *slab
        size_t slab_bytes
        uint8_t *replies
        size_t replies_bytes
        size_t slot_size
        size_t message_bytes
        size_t reply_stride
        size_t reply_bytes
        size_t chunk_bytes
        size_t chunk_reply_bytes
        uint32_t nchunks, batch, threads, outstanding, overflow_slots
    void fp_pump_get_layout(const fp_pump *p, fp_pump_layout *out)

    ctypedef struct fp_pump_debug:
        int64_t slabs_allocated, slabs_freed
        int64_t chunks_allocated, chunks_freed
        int64_t pumps_live
    void fp_pump_debug_counters(fp_pump_debug *out)
