# Mirrors src/cref/cref.h.
from libc.stdint cimport int32_t, uint32_t, uint64_t

cdef extern from "cref/cref.h" nogil:
    const uint32_t FP_CREF_MAX_THREADS
    const uint32_t FP_CREF_MAX_OUTSTANDING
    ctypedef struct fp_cref:
        pass
    ctypedef struct fp_cref_stats:
        uint64_t received
        uint64_t replied
        uint64_t no_reply
        uint64_t late
        uint64_t truncated
        uint64_t errors
        uint64_t batches
        int32_t last_error
        uint32_t threads_running
    int32_t fp_cref_start(void *port, uint32_t threads, uint32_t outstanding, int protocol,
                          uint32_t max_payload, fp_cref **out)
    void fp_cref_stop(fp_cref *c)
    void fp_cref_join(fp_cref *c)
    void fp_cref_stats_get(fp_cref *c, fp_cref_stats *out)
    void fp_cref_destroy(fp_cref *c)
