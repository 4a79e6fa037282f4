# Mirrors src/backends/fanotify.h.
from libc.stdint cimport int32_t, uint32_t, uint64_t
from fastport.includes.backend cimport fp_backend

cdef extern from "backends/fanotify.h" nogil:
    const uint32_t FP_FAN_MESSAGE_FIXED
    const uint32_t FP_FAN_ALLOW
    const uint32_t FP_FAN_DENY
    const uint32_t FP_FAN_AUDIT
    ctypedef struct fp_fan_stats:
        uint64_t read
        uint64_t delivered
        uint64_t excluded
        uint64_t replied
        uint64_t stale
        uint64_t overflows
        uint64_t notify
        uint64_t overflowed
        uint64_t audit_refused
        uint32_t held
        uint32_t budget
    ctypedef struct fp_fan_config:
        int fd
        uint32_t reply_size
        uint32_t path_bytes
        uint32_t fd_budget
        uint32_t deny_errno
        uint32_t overflow_verdict
        int exclude_self
        const int32_t *exclude_pids
        uint32_t n_exclude_pids
        const uint32_t *exclude_uids
        uint32_t n_exclude_uids
        fp_fan_stats *stats
    fp_backend *fp_fan_backend_new(const fp_fan_config *cfg, int32_t *hr)
    void fp_fan_backend_stats(fp_backend *b, fp_fan_stats *out)
    uint32_t fp_fan_default_budget()

cdef extern from "cref/fan_loop.h" nogil:
    int fp_fan_cref_run(int group_fd, int stop_fd, uint64_t *events)
