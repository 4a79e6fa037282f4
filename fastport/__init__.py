"""fastport: answer Filter Manager communication-port messages (and fanotify permission events)
from Python at the speed of C.

- `connect(name)` -> `Port`: the FltLib-shaped user side, one call per message.
- `Pump(port, message=..., reply=...)`: C worker threads, zero-copy numpy batches (the product).
- `fastport.sim.FilterManager`: the emulated kernel side that tests and benchmarks run on.
- `fastport.status`, `fastport.dtypes`, `PortError` and its subclasses.

Lifecycle (connect, close) is logged on the `fastport` logger hierarchy: `fastport.port` for
ports, `fastport.sim` for the emulated kernel side, `fastport.pump` for the pump.
"""
from __future__ import annotations

import numbers as _numbers
import time as _time

from fastport import dtypes, status
from fastport._ext import Batch, Message, Port, _connect_sim
from fastport.pump import Pump
from fastport.status import (AccessDenied, BufferTooSmall, ConnectionLimit, NoWaiterForReply,
                             OperationAborted, PortDisconnected, PortError, PortNotFound,
                             PortTimeout)

__all__ = ["connect", "Port", "Message", "Pump", "Batch", "status", "dtypes",
           "PortError", "PortDisconnected", "NoWaiterForReply", "PortNotFound", "PortTimeout",
           "OperationAborted", "AccessDenied", "ConnectionLimit", "BufferTooSmall"]
__version__ = "0.1.0"

# between connection attempts of connect(wait=...)
_RETRY_S = 0.05


def connect(name: str, *, context: bytes = b"", backend: str | None = None,
            sync: bool = False, wait: float | None = None) -> Port:
    """FilterConnectCommunicationPort: connect to the communication port `name`.

    The port is found wherever it lives: in this process (emulated, inproc transport) or in
    another process (emulated, socket transport). context: up to 65535 bytes handed to the
    port's ConnectNotify (copied). backend: None or "sim" (the emulated Filter Manager; the only
    backend on this platform). sync: FLT_PORT_FLAG_SYNC_HANDLE. wait: seconds to keep retrying
    while the port does not exist yet (None or 0: one attempt), for a service started before its
    driver; Ctrl-C interrupts the wait. Raises PortError: PortNotFound (0x80070002; after `wait`
    seconds), ConnectionLimit (0x800704D6), AccessDenied (0x80070005), ..."""
    if backend not in (None, "sim"):
        raise ValueError(f"unknown backend {backend!r}: expected None or 'sim'")
    if wait is None:
        return _connect_sim(name, context, bool(sync))
    if isinstance(wait, bool) or not isinstance(wait, _numbers.Real):
        raise TypeError(f"wait must be a number of seconds or None, not {type(wait).__name__}")
    if not float(wait) >= 0:
        raise ValueError(f"wait must be >= 0 seconds or None, got {wait}")
    deadline = _time.monotonic() + float(wait)
    while True:
        try:
            return _connect_sim(name, context, bool(sync))
        except PortNotFound:
            left = deadline - _time.monotonic()
            if left <= 0:
                raise
        _time.sleep(min(_RETRY_S, left))  # Ctrl-C raises KeyboardInterrupt here
