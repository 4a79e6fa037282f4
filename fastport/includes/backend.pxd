# Mirrors src/backends/backend.h (what the extension uses of it).
from libc.stdint cimport uint32_t

cdef extern from "backends/backend.h" nogil:
    const uint32_t FP_BACKEND_LOCAL_REPLY
    ctypedef struct fp_backend_ops:
        void (*destroy)(fp_backend *b)
    ctypedef struct fp_backend:
        const fp_backend_ops *ops
        uint32_t flags
