"""NTSTATUS and HRESULT codes of Filter Manager communication ports, and the exceptions for them.

The values mirror ``src/common/fp_status.h`` (tests/test_status.py checks that they agree) under
their Windows names, without the header's ``FP_`` prefix. HRESULTs that wrap a Win32 error carry
the Win32 name: ``ERROR_FILE_NOT_FOUND`` here is ``HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)`` =
0x80070002, the value FltLib returns.

Every code is an unsigned 32-bit int (``0x801F0020``, never negative). Functions taking a code
accept the signed form as well, as C hands it over (``fp_hresult`` is an ``int32_t``).

Errors are raised as :class:`PortError` or one of its subclasses; :func:`error_from_hresult` and
:func:`error_from_ntstatus` pick the class for a code.
"""

from __future__ import annotations

import errno as _errno
import operator
from typing import Final, NamedTuple

__all__ = [
    # NTSTATUS
    "STATUS_SUCCESS",
    "STATUS_TIMEOUT",
    "STATUS_BUFFER_OVERFLOW",
    "STATUS_INVALID_HANDLE",
    "STATUS_INVALID_PARAMETER",
    "STATUS_ACCESS_DENIED",
    "STATUS_OBJECT_NAME_INVALID",
    "STATUS_OBJECT_NAME_NOT_FOUND",
    "STATUS_OBJECT_NAME_COLLISION",
    "STATUS_PORT_DISCONNECTED",
    "STATUS_INSUFFICIENT_RESOURCES",
    "STATUS_CONNECTION_COUNT_LIMIT",
    # HRESULT
    "S_OK",
    "ERROR_FILE_NOT_FOUND",
    "E_ACCESSDENIED",
    "ERROR_INVALID_HANDLE",
    "E_OUTOFMEMORY",
    "E_INVALIDARG",
    "ERROR_INSUFFICIENT_BUFFER",
    "ERROR_FILENAME_EXCED_RANGE",
    "ERROR_OPERATION_ABORTED",
    "ERROR_IO_PENDING",
    "ERROR_NOT_FOUND",
    "ERROR_CONNECTION_COUNT_LIMIT",
    "ERROR_TIMEOUT",
    "ERROR_FLT_NO_WAITER_FOR_REPLY",
    # functions
    "ntstatus_name",
    "hresult_name",
    "ntstatus_description",
    "hresult_description",
    "nt_success",
    "succeeded",
    "hresult_from_win32",
    "error_from_hresult",
    "error_from_ntstatus",
    # exceptions
    "PortError",
    "PortDisconnected",
    "NoWaiterForReply",
    "PortNotFound",
    "PortTimeout",
    "OperationAborted",
    "AccessDenied",
    "ConnectionLimit",
    "BufferTooSmall",
]

# ---- NTSTATUS (kernel side) ----
STATUS_SUCCESS: Final = 0x00000000
STATUS_TIMEOUT: Final = 0x00000102  # a success code
STATUS_BUFFER_OVERFLOW: Final = 0x80000005  # a warning: NT_SUCCESS is false
STATUS_INVALID_HANDLE: Final = 0xC0000008
STATUS_INVALID_PARAMETER: Final = 0xC000000D
STATUS_ACCESS_DENIED: Final = 0xC0000022
STATUS_OBJECT_NAME_INVALID: Final = 0xC0000033
STATUS_OBJECT_NAME_NOT_FOUND: Final = 0xC0000034
STATUS_OBJECT_NAME_COLLISION: Final = 0xC0000035
STATUS_PORT_DISCONNECTED: Final = 0xC0000037
STATUS_INSUFFICIENT_RESOURCES: Final = 0xC000009A
STATUS_CONNECTION_COUNT_LIMIT: Final = 0xC0000246

# ---- HRESULT (user side) ----
S_OK: Final = 0x00000000
ERROR_FILE_NOT_FOUND: Final = 0x80070002
E_ACCESSDENIED: Final = 0x80070005
ERROR_INVALID_HANDLE: Final = 0x80070006  # what FltLib reports when the port is disconnected
E_OUTOFMEMORY: Final = 0x8007000E
E_INVALIDARG: Final = 0x80070057
ERROR_INSUFFICIENT_BUFFER: Final = 0x8007007A
ERROR_FILENAME_EXCED_RANGE: Final = 0x800700CE
ERROR_OPERATION_ABORTED: Final = 0x800703E3
ERROR_IO_PENDING: Final = 0x800703E5
ERROR_NOT_FOUND: Final = 0x80070490
ERROR_CONNECTION_COUNT_LIMIT: Final = 0x800704D6
ERROR_TIMEOUT: Final = 0x800705B4  # emulator: a get's own timeout
ERROR_FLT_NO_WAITER_FOR_REPLY: Final = 0x801F0020

_FACILITY_WIN32: Final = 7


class PortError(OSError):
    """A communication-port call failed with an HRESULT (user side) or an NTSTATUS (kernel side).

    Exactly one of ``hresult`` and ``ntstatus`` is given; the other attribute is ``None``. Both
    are stored unsigned. ``name`` is the code's symbolic name, ``strerror`` its description,
    ``errno`` the matching POSIX errno where an obvious one exists (else ``None``) and
    ``context`` what the caller was doing (e.g. ``"FilterReplyMessage"``), prefixed to the message:
    ``"FilterReplyMessage: ERROR_FLT_NO_WAITER_FOR_REPLY (0x801F0020): no one waits for a reply
    to this message"``.

    Prefer :func:`error_from_hresult` / :func:`error_from_ntstatus`, which choose the subclass.
    """

    hresult: int | None
    ntstatus: int | None
    name: str
    context: str

    def __init__(
        self, hresult: int | None = None, ntstatus: int | None = None, context: str = ""
    ) -> None:
        if hresult is not None and ntstatus is None:
            code = _u32(hresult)
            info = _HRESULTS.get(code)
            self.name, description = hresult_name(code), hresult_description(code)
        elif ntstatus is not None and hresult is None:
            code = _u32(ntstatus)
            info = _NTSTATUSES.get(code)
            self.name, description = ntstatus_name(code), ntstatus_description(code)
        else:
            raise TypeError("PortError needs exactly one of hresult and ntstatus")
        self.hresult = None if hresult is None else code
        self.ntstatus = None if ntstatus is None else code
        self.context = context
        message = (
            f"{self.name} (0x{code:08X}): {description}" if info else f"{self.name}: {description}"
        )
        super().__init__(f"{context}: {message}" if context else message)
        self.errno = info.errno if info else None
        self.strerror = description

    def __str__(self) -> str:
        # OSError would print "[Errno N] strerror" once errno is set.
        return str(self.args[0])

    def __reduce__(self) -> tuple[type[PortError], tuple[int | None, int | None, str]]:
        return (type(self), (self.hresult, self.ntstatus, self.context))


class PortDisconnected(PortError, ConnectionResetError):
    """The connection is gone: ERROR_INVALID_HANDLE (user side) or STATUS_PORT_DISCONNECTED."""


class NoWaiterForReply(PortError):
    """ERROR_FLT_NO_WAITER_FOR_REPLY: the reply's MessageId is unknown, already answered, timed
    out or expected no reply. Production services treat it as "the kernel gave up", not fatal."""


class PortNotFound(PortError, FileNotFoundError):
    """No port has that name: ERROR_FILE_NOT_FOUND or STATUS_OBJECT_NAME_NOT_FOUND."""


class PortTimeout(PortError, TimeoutError):
    """The wait timed out: ERROR_TIMEOUT, or STATUS_TIMEOUT (a success code for NT_SUCCESS)."""


class OperationAborted(PortError):
    """ERROR_OPERATION_ABORTED: a pending get was cancelled (CancelIoEx)."""


class AccessDenied(PortError, PermissionError):
    """The port's security descriptor refuses the caller: E_ACCESSDENIED or STATUS_ACCESS_DENIED."""


class ConnectionLimit(PortError):
    """The port's MaxConnections is reached: ERROR_CONNECTION_COUNT_LIMIT or
    STATUS_CONNECTION_COUNT_LIMIT."""


class BufferTooSmall(PortError):
    """A message or reply is larger than the buffer meant for it: ERROR_INSUFFICIENT_BUFFER, or
    STATUS_BUFFER_OVERFLOW on the sending side of a reply."""


class _Info(NamedTuple):
    name: str
    description: str
    errno: int | None
    error: type[PortError]


_NTSTATUSES: Final[dict[int, _Info]] = {
    STATUS_SUCCESS: _Info(
        "STATUS_SUCCESS", "the operation completed successfully", None, PortError
    ),
    STATUS_TIMEOUT: _Info(
        "STATUS_TIMEOUT", "the wait timed out (a success code)", _errno.ETIMEDOUT, PortTimeout
    ),
    STATUS_BUFFER_OVERFLOW: _Info(
        "STATUS_BUFFER_OVERFLOW",
        "the reply is larger than the sender's reply buffer; nothing was copied",
        _errno.EMSGSIZE,
        BufferTooSmall,
    ),
    STATUS_INVALID_HANDLE: _Info(
        "STATUS_INVALID_HANDLE", "the handle is invalid", _errno.EBADF, PortError
    ),
    STATUS_INVALID_PARAMETER: _Info(
        "STATUS_INVALID_PARAMETER", "a parameter is invalid", _errno.EINVAL, PortError
    ),
    STATUS_ACCESS_DENIED: _Info(
        "STATUS_ACCESS_DENIED", "access is denied", _errno.EACCES, AccessDenied
    ),
    STATUS_OBJECT_NAME_INVALID: _Info(
        "STATUS_OBJECT_NAME_INVALID", "the port name is invalid", _errno.EINVAL, PortError
    ),
    STATUS_OBJECT_NAME_NOT_FOUND: _Info(
        "STATUS_OBJECT_NAME_NOT_FOUND", "no port has this name", _errno.ENOENT, PortNotFound
    ),
    STATUS_OBJECT_NAME_COLLISION: _Info(
        "STATUS_OBJECT_NAME_COLLISION",
        "a port with this name already exists",
        _errno.EEXIST,
        PortError,
    ),
    STATUS_PORT_DISCONNECTED: _Info(
        "STATUS_PORT_DISCONNECTED",
        "the connection was closed",
        _errno.ECONNRESET,
        PortDisconnected,
    ),
    STATUS_INSUFFICIENT_RESOURCES: _Info(
        "STATUS_INSUFFICIENT_RESOURCES",
        "out of memory or message queue space",
        _errno.ENOMEM,
        PortError,
    ),
    STATUS_CONNECTION_COUNT_LIMIT: _Info(
        "STATUS_CONNECTION_COUNT_LIMIT",
        "the port accepts no more connections",
        None,
        ConnectionLimit,
    ),
}

_HRESULTS: Final[dict[int, _Info]] = {
    S_OK: _Info("S_OK", "the operation completed successfully", None, PortError),
    ERROR_FILE_NOT_FOUND: _Info(
        "ERROR_FILE_NOT_FOUND", "no communication port has this name", _errno.ENOENT, PortNotFound
    ),
    E_ACCESSDENIED: _Info(
        "E_ACCESSDENIED",
        "the port's security descriptor denies access",
        _errno.EACCES,
        AccessDenied,
    ),
    ERROR_INVALID_HANDLE: _Info(
        "ERROR_INVALID_HANDLE",
        "the port is disconnected or the handle is invalid",
        _errno.ECONNRESET,
        PortDisconnected,
    ),
    E_OUTOFMEMORY: _Info("E_OUTOFMEMORY", "out of memory", _errno.ENOMEM, PortError),
    E_INVALIDARG: _Info("E_INVALIDARG", "an argument is invalid", _errno.EINVAL, PortError),
    ERROR_INSUFFICIENT_BUFFER: _Info(
        "ERROR_INSUFFICIENT_BUFFER",
        "the buffer is too small for the message or reply",
        _errno.EMSGSIZE,
        BufferTooSmall,
    ),
    ERROR_FILENAME_EXCED_RANGE: _Info(
        "ERROR_FILENAME_EXCED_RANGE", "the port name is too long", _errno.ENAMETOOLONG, PortError
    ),
    ERROR_OPERATION_ABORTED: _Info(
        "ERROR_OPERATION_ABORTED",
        "the operation was cancelled",
        _errno.ECANCELED,
        OperationAborted,
    ),
    ERROR_IO_PENDING: _Info(
        "ERROR_IO_PENDING", "the overlapped operation is in progress", _errno.EINPROGRESS, PortError
    ),
    ERROR_NOT_FOUND: _Info(
        "ERROR_NOT_FOUND", "no pending operation to cancel", _errno.ENOENT, PortError
    ),
    ERROR_CONNECTION_COUNT_LIMIT: _Info(
        "ERROR_CONNECTION_COUNT_LIMIT",
        "the port accepts no more connections",
        None,
        ConnectionLimit,
    ),
    ERROR_TIMEOUT: _Info("ERROR_TIMEOUT", "the wait timed out", _errno.ETIMEDOUT, PortTimeout),
    ERROR_FLT_NO_WAITER_FOR_REPLY: _Info(
        "ERROR_FLT_NO_WAITER_FOR_REPLY",
        "no one waits for a reply to this message",
        None,
        NoWaiterForReply,
    ),
}


def _u32(code: int) -> int:
    """The unsigned 32-bit form of a signed or unsigned 32-bit code."""
    value = operator.index(code)
    if not -0x80000000 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{code!r} is not a 32-bit status code")
    return value & 0xFFFFFFFF


def ntstatus_name(code: int) -> str:
    """Symbolic name of an NTSTATUS, e.g. ``"STATUS_PORT_DISCONNECTED"``; an unknown code gives
    ``"NTSTATUS 0xC0001234"``. Accepts the signed or unsigned 32-bit form."""
    value = _u32(code)
    info = _NTSTATUSES.get(value)
    return info.name if info else f"NTSTATUS 0x{value:08X}"


def hresult_name(code: int) -> str:
    """Symbolic name of an HRESULT, e.g. ``"ERROR_FLT_NO_WAITER_FOR_REPLY"``; an unknown code gives
    ``"HRESULT 0x80070099"``. Accepts the signed or unsigned 32-bit form."""
    value = _u32(code)
    info = _HRESULTS.get(value)
    return info.name if info else f"HRESULT 0x{value:08X}"


def ntstatus_description(code: int) -> str:
    """A short human description of an NTSTATUS (``"unknown code"`` for an unknown one)."""
    info = _NTSTATUSES.get(_u32(code))
    return info.description if info else "unknown code"


def hresult_description(code: int) -> str:
    """A short human description of an HRESULT. An unknown code that wraps a Win32 error gives
    ``"Win32 error N"``, any other unknown one ``"unknown code"``."""
    value = _u32(code)
    info = _HRESULTS.get(value)
    if info:
        return info.description
    if value >> 16 == 0x8000 | _FACILITY_WIN32:
        return f"Win32 error {value & 0xFFFF}"
    return "unknown code"


def nt_success(code: int) -> bool:
    """``NT_SUCCESS``: true for success and informational codes (STATUS_TIMEOUT included), false
    for warnings (STATUS_BUFFER_OVERFLOW) and errors."""
    return _u32(code) < 0x80000000


def succeeded(hr: int) -> bool:
    """``SUCCEEDED``: true when the HRESULT's severity bit is clear."""
    return _u32(hr) < 0x80000000


def hresult_from_win32(err: int) -> int:
    """``HRESULT_FROM_WIN32``: a Win32 error code as an unsigned HRESULT (``2`` -> 0x80070002).
    Zero and values that are negative as 32-bit signed ints (already HRESULTs) pass unchanged."""
    value = _u32(err)
    if value == 0 or value >= 0x80000000:
        return value
    return 0x80000000 | (_FACILITY_WIN32 << 16) | (value & 0xFFFF)


def error_from_hresult(hr: int, context: str = "") -> PortError:
    """The exception for an HRESULT: a :class:`PortError` subclass chosen by the code (plain
    :class:`PortError` for codes without one). Deciding that the code is a failure is the
    caller's business; ``context`` prefixes the message."""
    info = _HRESULTS.get(_u32(hr))
    return (info.error if info else PortError)(hresult=hr, context=context)


def error_from_ntstatus(st: int, context: str = "") -> PortError:
    """The exception for an NTSTATUS, as :func:`error_from_hresult` does for HRESULTs.
    STATUS_TIMEOUT maps to :class:`PortTimeout` for callers that treat it as a failure."""
    info = _NTSTATUSES.get(_u32(st))
    return (info.error if info else PortError)(ntstatus=st, context=context)
