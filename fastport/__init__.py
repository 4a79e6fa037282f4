"""fastport: answer Filter Manager communication-port messages (and fanotify permission events)
from Python at the speed of C.

- `connect(name)` -> `Port`: the FltLib-shaped user side, one call per message.
- `Pump(port, message=..., reply=...)`: C worker threads, zero-copy numpy batches (the product).
- `fastport.sim.FilterManager`: the emulated kernel side that tests and benchmarks run on.
- `fastport.status`, `fastport.dtypes`, `PortError`.
"""
from __future__ import annotations

from fastport import dtypes, status
from fastport._ext import Batch, Message, Port, _connect_sim
from fastport.pump import Pump
from fastport.status import PortError

__all__ = ["connect", "Port", "Message", "Pump", "Batch", "PortError", "status", "dtypes"]
__version__ = "0.1.0"


def connect(name: str, *, context: bytes = b"", backend: str | None = None,
            sync: bool = False) -> Port:
    """FilterConnectCommunicationPort: connect to the communication port `name`.

    The port is found wherever it lives: in this process (emulated, inproc transport) or in
    another process (emulated, socket transport). context: up to 65535 bytes handed to the
    port's ConnectNotify (copied). backend: None or "sim" (the emulated Filter Manager; the only
    backend on this platform). sync: FLT_PORT_FLAG_SYNC_HANDLE. Raises PortError: PortNotFound
    (0x80070002), ConnectionLimit (0x800704D6), AccessDenied (0x80070005), ..."""
    if backend not in (None, "sim"):
        raise ValueError(f"unknown backend {backend!r}: expected None or 'sim'")
    return _connect_sim(name, context, bool(sync))
