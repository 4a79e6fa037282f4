# Shared helpers of the extension: status checks and argument conversion.
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.exc cimport PyErr_CheckSignals, PyErr_Occurred
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t, uintptr_t
cdef extern from *:
    """
    #ifdef _WIN32
    #include <process.h>
    #define fp_getpid() _getpid()
    #else
    #include <unistd.h>
    #define fp_getpid() getpid()
    #endif
    """
    int getpid "fp_getpid" () nogil

import numbers as _numbers
import operator as _operator

from numpy import bool_ as _np_bool

from fastport import status as _status

cdef inline int _check_hr(int32_t hr, str what) except -1:
    """Raise the PortError subclass for a failed HRESULT (the numeric code and its name)."""
    if hr < 0:
        raise _status.error_from_hresult(<uint32_t>hr, what)
    return 0

cdef inline int _check_nt(int32_t st, str what) except -1:
    if st < 0:
        raise _status.error_from_ntstatus(<uint32_t>st, what)
    return 0

# Blocking calls wait in slices of this many ms, releasing the GIL, and check for signals
# (Ctrl-C) between two.
cdef uint32_t _SIGNAL_SLICE_MS = 100

cdef extern from *:
    """
    #if PY_VERSION_HEX >= 0x030D0000
    #define fp_py_finalizing() Py_IsFinalizing()
    #else
    #define fp_py_finalizing() _Py_IsFinalizing()
    #endif
    """
    int _py_finalizing "fp_py_finalizing" () nogil
    int _run_signal_handlers "PyErr_CheckSignals" ()  # leaves a handler's exception set

cdef int _interrupt_hook(void *arg) noexcept nogil:
    """A port's interrupt hook (fp_port_ops.interrupt_hook): runs Python's signal handlers
    (on the main thread); nonzero when one raised (Ctrl-C), its exception left set for the
    caller to raise with _raise_interrupt() once the C call has returned; and from then on, so
    that a call made of several waits gives up on the next one too. While the interpreter
    finalizes it gives up without taking the GIL (a thread that took it then would never return
    to unlink its waiters)."""
    if _py_finalizing():
        return 1
    with gil:
        return PyErr_Occurred() != NULL or _run_signal_handlers() != 0

cdef inline void _hook_on(const fp_port_ops *ops) noexcept:
    if ops.interrupt_hook is not NULL:
        ops.interrupt_hook(_interrupt_hook, NULL)

cdef inline void _hook_off(const fp_port_ops *ops) noexcept:
    if ops.interrupt_hook is not NULL:
        ops.interrupt_hook(NULL, NULL)

cdef int _raise_interrupt() except -1:
    """Raises what _interrupt_hook left set (a signal handler's exception), if anything: the
    C call it interrupted may have completed all the same."""
    if PyErr_Occurred() != NULL:
        return -1
    return 0

cdef inline bint _forked(int owner) noexcept:
    """Whether this is a child forked from process `owner` (which made the object)."""
    return getpid() != owner

cdef inline int _own(int owner, str what) except -1:
    """Refuse to use, in a child forked from process `owner`, what that process made: its C
    threads do not exist here, and its connections are the parent's (a call from the child would
    disturb them)."""
    if getpid() != owner:
        raise RuntimeError(f"{what} belongs to process {owner}, and this is process {getpid()}, "
                           "forked from it: a child cannot use it (its threads and connections "
                           "stay the parent's); create a new one in the child")
    return 0

cdef object _int_value(object value, str name):
    """An integer argument as a Python int: an int or a numpy integer scalar (anything with
    __index__), never a bool (True is not a size)."""
    if value is None or isinstance(value, (bool, _np_bool)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    try:
        return _operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None

cdef object _real_value(object value, str name, str what="a number"):
    """A real-number argument as a Python int or float: int, float, numpy integer or floating
    scalar (any numbers.Real), never a bool."""
    if isinstance(value, (bool, _np_bool)) or not isinstance(value, _numbers.Real):
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, _numbers.Integral):
        return _operator.index(value)
    return float(value)

cdef uint32_t _u32_arg(object value, str name, uint32_t lo=0, uint32_t hi=0xFFFFFFFFu) except? 0xFFFFFFFF:
    """A size argument: an int in [lo, hi], else ValueError/TypeError (never a silent wrap)."""
    value = _int_value(value, name)
    if value < lo or value > hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
    return <uint32_t>value

cdef int32_t _status_arg(object value, str name) except? -1:
    """An NTSTATUS given as a signed or an unsigned 32-bit int."""
    value = _int_value(value, name)
    if value < -0x80000000 or value > 0xFFFFFFFF:
        raise ValueError(f"{name} must fit in 32 bits, got {value}")
    return <int32_t><uint32_t>(value & 0xFFFFFFFF)

cdef int64_t _timeout_ns(object timeout, str name="timeout") except? -2:
    """Seconds (None = forever, returned as -1) to nanoseconds; errors name the argument."""
    if timeout is None:
        return -1
    timeout = _real_value(timeout, name, "a number of seconds or None")
    if not timeout >= 0:
        raise ValueError(f"{name} must be >= 0 seconds or None, got {timeout}")
    if timeout > 1e9:
        return -1
    return <int64_t>(timeout * 1e9)

cdef bytes _name_arg(object name):
    if not isinstance(name, str):
        raise TypeError(f"port name must be a str, not {type(name).__name__}")
    cdef bytes b = name.encode("utf-8")
    if len(b) == 0:
        raise ValueError("port name must not be empty")
    if len(b) > FP_PORT_MAX_NAME:
        raise ValueError(f"port name is {len(b)} bytes; the limit is {FP_PORT_MAX_NAME}")
    if b"\0" in b:
        raise ValueError("port name must not contain NUL")
    return b
