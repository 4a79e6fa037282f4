"""The emulated Filter Manager (kernel side), for tests, the load-generating test driver and the
benchmarks: `FilterManager().create_port(...)` is FltCreateCommunicationPort; `ServerPort.send` is
FltSendMessage. It behaves as Windows documents FltSendMessage and the FltLib calls:

- A send waits for a FilterGetMessage (delivery at once when one is already waiting) and, when
  `reply_length` is given, for FilterReplyMessage. `timeout` bounds delivery plus reply together:
  a message not delivered in time is withdrawn (never delivered later) and the send returns
  STATUS_TIMEOUT (0x00000102, a success code); a reply that comes later gets
  ERROR_FLT_NO_WAITER_FOR_REPLY (0x801F0020) on the user side.
- The connection closing while a send waits: STATUS_PORT_DISCONNECTED (0xC0000037).
- A reply longer than `reply_length`: the sender gets STATUS_BUFFER_OVERFLOW (0x80000005) with
  nothing copied, the replier 0x8007007A. Replies carry FILTER_REPLY_HEADER.Status, handed to the
  sender as `SendResult.reply_status`.
- Closing a server port stops new connections only; live connections go on until either side
  closes them (FilterManager.close() disconnects them too).

Where Windows does not say, the emulator decides; the README lists those choices ("The
emulator's choices").

Transports: "inproc" (the service connects from this process) and "socket" (from any process,
over AF_UNIX SOCK_SEQPACKET sockets in a runtime directory: $FASTPORT_RUNTIME_DIR, else
$XDG_RUNTIME_DIR/fastport, else /tmp/fastport-<uid>; one that is not the user's own or that
others may write to is refused with AccessDenied naming it and the reason)."""
from __future__ import annotations

import sys
from typing import Callable, Optional

if sys.platform == "win32":
    raise ImportError("fastport.sim (the emulated Filter Manager) is POSIX-only and not part of "
                      "the Windows build: on Windows, serve the minifilter's own port with "
                      "fastport.connect(name)")

from fastport._ext import ClientPort, SendResult, ServerPort, _create_port

__all__ = ["FilterManager", "ServerPort", "ClientPort", "SendResult"]

ConnectNotify = Callable[[ClientPort, bytes], Optional[int]]
DisconnectNotify = Callable[[ClientPort], None]
MessageNotify = Callable[[ClientPort, bytes, int], bytes]


class FilterManager:
    """The kernel side of communication ports. A context manager: leaving it unloads the filter
    (every client is disconnected and every port closed)."""

    def __init__(self, transport: str = "inproc") -> None:
        if transport not in ("inproc", "socket"):
            raise ValueError(f"transport must be 'inproc' or 'socket', not {transport!r}")
        self.transport = transport
        self._ports: list[ServerPort] = []

    def create_port(
        self,
        name: str,
        *,
        max_connections: int = 1,
        connect_notify: Optional[ConnectNotify] = None,
        disconnect_notify: Optional[DisconnectNotify] = None,
        message_notify: Optional[MessageNotify] = None,
        access: str = "owner",
    ) -> ServerPort:
        """FltCreateCommunicationPort.

        connect_notify(client, context) accepts by returning None and rejects by returning a
        failure NTSTATUS or raising. disconnect_notify(client) runs once per accepted connection,
        whichever side closes it. message_notify(client, data, out_size) -> bytes serves
        Port.send_message (FilterSendMessage). access: "owner" (root and this user) or
        "everyone". Raises PortError (STATUS_OBJECT_NAME_COLLISION, ...) on failure."""
        port = _create_port(name, self.transport, max_connections, access, connect_notify,
                            disconnect_notify, message_notify)
        self._ports.append(port)
        return port

    @property
    def ports(self) -> list[ServerPort]:
        return list(self._ports)

    def close(self) -> None:
        """Unload: disconnect every client of every port, close every port."""
        ports, self._ports = self._ports, []
        for p in ports:
            p._unload()

    def __enter__(self) -> "FilterManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
