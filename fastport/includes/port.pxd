# Mirrors src/backends/port.h: the user side of a port, over the emulator or over FltLib.
from libc.stddef cimport wchar_t
from libc.stdint cimport int32_t, uint32_t

cdef extern from "backends/port.h" nogil:
    const uint32_t FP_PORT_INFINITE
    const uint32_t FP_PORT_MAX_CONTEXT
    const uint32_t FP_PORT_MAX_MESSAGE
    const uint32_t FP_PORT_MAX_NAME
    const uint32_t FP_PORT_SYNC_HANDLE
    ctypedef struct fp_port_ops:
        const char *name
        int32_t (*get)(void *port, void *buffer, uint32_t size, uint32_t timeout_ms,
                       uint32_t *got) noexcept nogil
        int32_t (*reply)(void *port, const void *buffer, uint32_t size) noexcept nogil
        int32_t (*send)(void *port, const void *inp, uint32_t in_size, void *out,
                        uint32_t out_size, uint32_t *returned) noexcept nogil
        int32_t (*cancel)(void *port) noexcept nogil
        int (*local_replies)(void *port) noexcept nogil
        void (*close)(void *port) noexcept nogil
        int32_t (*send_start)(void *port, const void *inp, uint32_t in_size, uint32_t out_size,
                              void **op) noexcept nogil
        int (*send_wait)(void *op, uint32_t timeout_ms, void *out, uint32_t out_size,
                         uint32_t *returned, int32_t *hr) noexcept nogil
        void (*send_end)(void *op) noexcept nogil
        void (*forsake)(void *port) noexcept nogil
        void (*interrupt_hook)(int (*fn)(void *arg) noexcept nogil, void *arg) noexcept nogil
    const fp_port_ops fp_port_fltlib
    const fp_port_ops fp_port_fltlib_sync
    int32_t fp_port_fltlib_connect(const wchar_t *name, uint32_t options, const void *context,
                                   uint32_t context_size, void **port)
