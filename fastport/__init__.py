"""fastport: answer Filter Manager communication-port messages (and fanotify permission events)
from Python at the speed of C.

- `connect(name)` -> `Port`: the FltLib-shaped user side, one call per message.
- `Pump(port, message=..., reply=...)`: C worker threads, zero-copy numpy batches (the product).
- `fastport.sim.FilterManager`: the emulated kernel side that tests and benchmarks run on
  (POSIX only: on Windows `import fastport.sim` raises ImportError).
- `fastport.status`, `fastport.dtypes`, `PortError` and its subclasses.

Lifecycle (connect, close) is logged on the `fastport` logger hierarchy: `fastport.port` for
ports, `fastport.sim` for the emulated kernel side, `fastport.pump` for the pump.
"""
from __future__ import annotations

import numbers as _numbers
import sys as _sys
import time as _time

from fastport import dtypes, status
from fastport._ext import Batch, Message, Port, _connect_fltlib
from fastport.pump import Pump
from fastport.status import (AccessDenied, BufferTooSmall, ConnectionLimit, NoWaiterForReply,
                             OperationAborted, PortDisconnected, PortError, PortNotFound,
                             PortTimeout)

__all__ = ["connect", "Port", "Message", "Pump", "Batch", "status", "dtypes",
           "PortError", "PortDisconnected", "NoWaiterForReply", "PortNotFound", "PortTimeout",
           "OperationAborted", "AccessDenied", "ConnectionLimit", "BufferTooSmall"]
__version__ = "0.1.0"

try:  # the emulated Filter Manager: POSIX builds only
    from fastport._ext import _connect_sim
except ImportError:
    _connect_sim = None

#: connect()'s backend values and what they are
BACKENDS = {
    "fltlib": "FltLib's calls: the real FLTLIB.DLL on Windows; elsewhere the emulated Filter "
              "Manager's Win32 face (what the FltLib code is tested on)",
    "sim": "the emulated Filter Manager's own calls (POSIX only)",
}
#: connect()'s backend when none is given: the real Filter Manager on Windows
DEFAULT_BACKEND = "fltlib" if _sys.platform == "win32" else "sim"

# between connection attempts of connect(wait=...)
_RETRY_S = 0.05


def connect(name: str, *, context: bytes = b"", backend: str | None = None,
            sync: bool = False, wait: float | None = None) -> Port:
    """FilterConnectCommunicationPort: connect to the communication port `name` (e.g.
    "\\ScannerPort", the name the minifilter gave FltCreateCommunicationPort).

    backend: None = DEFAULT_BACKEND: "fltlib" on Windows (the minifilter's port, through
    FLTLIB.DLL), "sim" elsewhere (the emulated Filter Manager: a port in this process, inproc
    transport, or in another one, socket transport). "fltlib" on Linux reaches the emulator
    through its Win32 face, running the code Windows runs. A backend this platform lacks ("sim"
    on Windows) raises ValueError. context: up to 65535 bytes handed to the port's ConnectNotify
    (copied). sync: FLT_PORT_FLAG_SYNC_HANDLE. wait: seconds to keep retrying while the port
    does not exist yet (None or 0: one attempt), for a service started before its driver; Ctrl-C
    interrupts the wait. Raises PortError: PortNotFound (0x80070002; after `wait` seconds),
    ConnectionLimit (0x800704D6), AccessDenied (0x80070005: the port's security descriptor
    admits administrators and SYSTEM by default), ..."""
    connect_one = _connector(backend)
    if wait is None:
        return connect_one(name, context, bool(sync))
    if isinstance(wait, bool) or not isinstance(wait, _numbers.Real):
        raise TypeError(f"wait must be a number of seconds or None, not {type(wait).__name__}")
    if not float(wait) >= 0:
        raise ValueError(f"wait must be >= 0 seconds or None, got {wait}")
    deadline = _time.monotonic() + float(wait)
    while True:
        try:
            return connect_one(name, context, bool(sync))
        except PortNotFound:
            left = deadline - _time.monotonic()
            if left <= 0:
                raise
        _time.sleep(min(_RETRY_S, left))  # Ctrl-C raises KeyboardInterrupt here


def _connector(backend: str | None):
    """The _ext function that connects through `backend` (looked up when called, so tests can
    wrap it)."""
    if backend is None:
        backend = DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected None or one of "
                         f"{', '.join(map(repr, BACKENDS))}")
    fn = globals()[f"_connect_{backend}"]
    if fn is None:
        have = [b for b in BACKENDS if globals()[f"_connect_{b}"] is not None]
        raise ValueError(f"backend {backend!r} ({BACKENDS[backend]}) is not available on "
                         f"{_sys.platform}: this build has {', '.join(map(repr, have))}")
    return fn
