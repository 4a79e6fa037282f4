# Mirrors src/common/fp_status.h (the codes the Cython layer tests against).
from libc.stdint cimport int32_t

cdef extern from "common/fp_status.h" nogil:
    const int32_t FP_STATUS_SUCCESS
    const int32_t FP_STATUS_TIMEOUT
    const int32_t FP_STATUS_BUFFER_OVERFLOW
    const int32_t FP_STATUS_INVALID_PARAMETER
    const int32_t FP_STATUS_ACCESS_DENIED
    const int32_t FP_STATUS_PORT_DISCONNECTED
    const int32_t FP_S_OK
    const int32_t FP_E_TIMEOUT
    const int32_t FP_E_INSUFFICIENT_BUFFER
    const int32_t FP_E_OPERATION_ABORTED
    const int32_t FP_E_NOT_FOUND
    const int32_t FP_E_INVALID_HANDLE
    const int32_t FP_E_INVALIDARG
    const int32_t FP_E_OUTOFMEMORY
    const int32_t FP_E_FLT_NO_WAITER_FOR_REPLY
