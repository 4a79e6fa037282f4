# Mirrors src/common/fp_wire.h: FILTER_MESSAGE_HEADER and FILTER_REPLY_HEADER.
from libc.stdint cimport int32_t, uint32_t, uint64_t

cdef extern from "common/fp_wire.h" nogil:
    ctypedef struct FP_MESSAGE_HEADER:
        uint32_t ReplyLength
        uint64_t MessageId
    ctypedef struct FP_REPLY_HEADER:
        int32_t Status
        uint64_t MessageId
