# Mirrors src/common/histogram.h (what the extension uses of it).
from libc.stdint cimport uint64_t

cdef extern from "common/histogram.h" nogil:
    ctypedef struct fp_hist:
        pass
    ctypedef struct fp_hist_summary:
        uint64_t count, min, max, mean
        uint64_t p50, p90, p99, p999
