# fanotify (Linux): a group whose permission events a Pump serves like a communication port's
# messages. fastport.fanotify.open checks the arguments and calls _fan_open; the C backend
# (src/backends/fanotify.c) does the rest without the GIL.
from libc.errno cimport errno
from libc.string cimport memset

import os as _os

cdef extern from "<sys/fanotify.h>" nogil:
    int fanotify_init(unsigned int flags, unsigned int event_f_flags)
    int fanotify_mark(int fd, unsigned int flags, uint64_t mask, int dirfd, const char *pathname)

cdef extern from "<fcntl.h>" nogil:
    const int AT_FDCWD
    const int O_RDONLY
    const int O_LARGEFILE
    const int O_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    int close(int fd)

_fan_log = _logging.getLogger("fastport.fanotify")


cdef class FanotifyPort(_Source):
    """A fanotify group with its marks: serve it with `Pump(port, message=port.message,
    reply=port.reply, default_reply=port.default_reply, deadline=...)`. Make one with
    `fastport.fanotify.open`. Context manager: leaving the block closes the group (the kernel
    allows whatever nobody answered)."""
    cdef int _fd
    cdef readonly object message
    cdef readonly object reply
    cdef readonly object default_reply
    cdef readonly tuple paths
    cdef readonly uint64_t mask
    cdef fp_fan_config _cfg
    cdef fp_fan_stats _stats
    cdef bytes _pids, _uids
    cdef object _user  # id() of the pump using it now, or None

    def __cinit__(self):
        self._fd = -1
        memset(&self._cfg, 0, sizeof(self._cfg))
        memset(&self._stats, 0, sizeof(self._stats))

    def __init__(self, *args, **kwargs):
        raise TypeError("FanotifyPort objects come from fastport.fanotify.open(); they cannot be "
                        "created directly")

    def __dealloc__(self):
        if self._fd >= 0:
            close(self._fd)
            self._fd = -1

    cdef fp_backend *_backend_new(self, object pump) except NULL:
        if self._fd < 0:
            raise _status.error_from_hresult(<uint32_t>FP_E_INVALID_HANDLE,
                                             "the fanotify group is closed")
        if self._user is not None:
            raise RuntimeError(f"{self!r} is already served by a pump: one pump at a time")
        cdef fp_fan_config cfg = self._cfg
        cfg.fd = self._fd
        cfg.reply_size = <uint32_t>pump.reply_dtype.itemsize
        cfg.exclude_pids = <const int32_t *><const char *>self._pids
        cfg.exclude_uids = <const uint32_t *><const char *>self._uids
        cfg.stats = &self._stats
        # the queue-full policy: with the fd budget spent, answer at once unless the pump waits
        if (<_PumpCore>pump).on_full == "wait":
            cfg.overflow_verdict = 0
        cdef int32_t hr = 0
        cdef fp_backend *b = fp_fan_backend_new(&cfg, &hr)
        if b is NULL:
            _check_hr(hr, "creating the fanotify backend")
            raise MemoryError()
        self._user = id(pump)
        return b

    cdef _backend_done(self, object pump):
        if self._user == id(pump):
            self._user = None

    @property
    def closed(self):
        return self._fd < 0

    def fileno(self):
        """The group's file descriptor (-1 once closed)."""
        return self._fd

    @property
    def stats(self):
        """Counters of this group's backends so far: read, delivered, excluded (answered ALLOW
        in C: this process, listed pids/uids), replied, stale (replies to events no longer
        held), overflows (FAN_Q_OVERFLOW events: the kernel's queue was full and it dropped
        events, allowing the permission ones), overflowed (answered with the on_overflow
        verdict in C because the fd budget was spent), audit_refused (verdicts with AUDIT on a
        group opened without audit=True, sent without it), notify, held (event fds held now),
        budget (most held at once). Read without a lock while a pump runs."""
        cdef fp_fan_stats s = self._stats
        return {"read": s.read, "delivered": s.delivered, "excluded": s.excluded,
                "replied": s.replied, "stale": s.stale, "overflows": s.overflows,
                "overflowed": s.overflowed, "audit_refused": s.audit_refused,
                "notify": s.notify, "held": s.held, "budget": s.budget or self._cfg.fd_budget}

    @property
    def on_full(self):
        """"default": a Pump serving this group answers what finds its slab full (or the fd
        budget spent) at once with default_reply (the on_overflow verdict) instead of leaving it
        waiting in the kernel, unless the Pump is made with on_full="wait"."""
        return "default"

    def close(self):
        """Close the group (its marks go with it); a pump serving it must be stopped first.
        Safe to call twice."""
        if self._user is not None:
            raise RuntimeError("stop the pump serving this group before closing it")
        if self._fd >= 0:
            close(self._fd)
            self._fd = -1
            _fan_log.info("fanotify group on %r closed", self.paths)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<FanotifyPort {list(self.paths)!r}{' closed' if self._fd < 0 else ''}>"


def _fan_open(tuple paths, uint32_t init_flags, uint64_t mask, uint32_t mark_flags,
              message, reply, default_reply, bint exclude_self, bytes pids, bytes uids,
              uint32_t path_bytes, uint32_t deny_errno, uint32_t fd_budget,
              uint32_t overflow_verdict):
    """Backs fastport.fanotify.open once its arguments are checked: the group, then the marks
    (every mark or none: the group is closed on the first failure). Raises OSError with the
    errno and the call that failed."""
    cdef int fd
    cdef int e
    with nogil:
        fd = fanotify_init(init_flags, O_RDONLY | O_LARGEFILE | O_CLOEXEC)
        e = errno
    if fd < 0:
        if e == 1:  # EPERM
            raise PermissionError(e, "fanotify_init: permission events need CAP_SYS_ADMIN (run "
                                     "as root or grant the capability)")
        raise OSError(e, f"fanotify_init(0x{init_flags:x}): {_os.strerror(e)}")
    cdef bytes bp
    cdef const char *cp
    cdef int rc
    try:
        for p in paths:
            bp = _os.fsencode(p)
            cp = bp
            with nogil:
                rc = fanotify_mark(fd, 1 | mark_flags, mask, AT_FDCWD, cp)  # FAN_MARK_ADD
                e = errno
            if rc < 0:
                raise OSError(e, f"fanotify_mark(0x{mask:x}) on {p!r}: {_os.strerror(e)}", p)
    except BaseException:
        close(fd)
        raise
    cdef FanotifyPort port = FanotifyPort.__new__(FanotifyPort)
    port._fd = fd
    port.paths = paths
    port.mask = mask
    port.message = message
    port.reply = reply
    port.default_reply = default_reply
    port._pids = pids
    port._uids = uids
    port._cfg.exclude_self = exclude_self
    port._cfg.n_exclude_pids = <uint32_t>(len(pids) // 4)
    port._cfg.n_exclude_uids = <uint32_t>(len(uids) // 4)
    port._cfg.path_bytes = path_bytes
    port._cfg.deny_errno = deny_errno
    port._cfg.overflow_verdict = overflow_verdict
    port._cfg.fd_budget = fd_budget or fp_fan_default_budget()
    _fan_log.info("fanotify group on %r (mask 0x%x)", paths, mask)
    return port


def _fan_cref_run(FanotifyPort port not None, int stop_fd):
    """The C reference loop (src/cref/fan_loop.c) on `port`'s group until `stop_fd` (an
    eventfd) is readable; returns the events answered. Without the GIL."""
    cdef int fd = port._fd
    cdef uint64_t n = 0
    cdef int rc
    if fd < 0:
        raise ValueError("the fanotify group is closed")
    with nogil:
        rc = fp_fan_cref_run(fd, stop_fd, &n)
    if rc:
        raise OSError(rc, f"fanotify reference loop: {_os.strerror(rc)}")
    return n
