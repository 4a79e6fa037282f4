# Kernel side of the emulated Filter Manager: server ports, client ports, FltSendMessage.
# The C core calls back into Python (ConnectNotify etc.) from the thread that caused the event:
# the connecting or closing thread on inproc, a transport thread on the socket transport. The
# callbacks are noexcept: they catch, log, and keep the exception on the ServerPort.
import logging as _logging

from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

# Its own name: every .pxi shares one module namespace (a `_log` in another .pxi would replace
# this one).
_sim_log = _logging.getLogger("fastport.sim")

import traceback as _traceback

# ServerPort.callback_errors keeps this many of the newest failures (each also logged).
cdef Py_ssize_t _CALLBACK_ERRORS_KEPT = 32

import weakref as _weakref

# key -> ServerPort, weakly. The C server holds only the key, so a callback that fires after the
# ServerPort is gone finds nothing and does nothing.
cdef object _servers = _weakref.WeakValueDictionary()
cdef uint64_t _next_server_key = 1


cdef str _sim_context(str what):
    """`what`, plus why this thread's last port creation or connect failed when the emulator says
    more than the code (a refused runtime directory: its path and the reason)."""
    cdef bytes detail = fsim_error_detail()
    return f"{what}: {detail.decode(errors='replace')}" if detail else what


cdef class SendResult:
    """What FltSendMessage returned: `status` (NTSTATUS, unsigned int), `reply` (bytes, or None
    when no reply was expected or none came), `reply_status` (the replier's
    FILTER_REPLY_HEADER.Status, or None)."""
    cdef readonly object status
    cdef readonly object reply
    cdef readonly object reply_status

    def __init__(self, *args, **kwargs):
        raise TypeError("SendResult objects come from ServerPort.send(); they cannot be created "
                        "directly")

    @property
    def name(self):
        """Symbolic name of `status`, e.g. "STATUS_TIMEOUT"."""
        if self.status is None:
            return None
        return _status.ntstatus_name(self.status)

    def __repr__(self):
        if self.status is None:
            return "SendResult(status=None)"
        return (f"SendResult(status={self.name} (0x{self.status:08X}), reply={self.reply!r}, "
                f"reply_status={self.reply_status!r})")


cdef SendResult _send_result(uint32_t status, object reply=None, object reply_status=None):
    cdef SendResult r = SendResult.__new__(SendResult)
    r.status = status
    r.reply = reply
    r.reply_status = reply_status
    return r


cdef class ClientPort:
    """The kernel's view of one connection (a client port). Compare by identity: a connection
    has exactly one ClientPort object for its whole life."""
    cdef fsim_client *_c
    cdef readonly ServerPort server
    cdef readonly uint64_t id
    cdef int _pid  # the process of the server port: a child forked from it may not use it

    def __cinit__(self):
        self._c = NULL
        self._pid = getpid()

    def __init__(self, *args, **kwargs):
        raise TypeError("ClientPort objects come from the emulator (ServerPort.clients, the "
                        "callbacks' first argument); they cannot be created directly")

    def __dealloc__(self):
        if self._c is not NULL and not _forked(self._pid):
            fsim_client_release(self._c)
        self._c = NULL

    cdef fsim_client *_client(self) except NULL:
        if self._c is NULL:  # made with ClientPort.__new__
            raise RuntimeError("this ClientPort is no connection: client ports come from "
                               "ServerPort.clients and the callbacks")
        _own(self._pid, "this client port")
        return self._c

    @property
    def connected(self):
        """True from the moment ConnectNotify returned (admitted) until either side closes the
        connection; False while ConnectNotify runs."""
        return bool(fsim_client_connected(self._client()))

    @property
    def pid(self):
        """Process id of the connecting process."""
        return fsim_client_peer_pid(self._client())

    @property
    def uid(self):
        """User id of the connecting process."""
        return fsim_client_peer_uid(self._client())

    @property
    def pending_gets(self):
        """Gets of the user side waiting at the kernel for a message now (to wait on state)."""
        return fsim_client_pending_gets(self._client())

    @property
    def queued(self):
        """Sends queued on this connection for want of a get now (to wait on state)."""
        return fsim_client_queued(self._client())

    @property
    def awaiting_reply(self):
        """Sends delivered on this connection and waiting for their reply now."""
        return fsim_client_awaiting_reply(self._client())

    def close(self):
        """FltCloseClientPort: disconnect. Senders waiting on it get STATUS_PORT_DISCONNECTED."""
        cdef fsim_client *c = self._client()
        with nogil:
            fsim_close_client(c)

    def __repr__(self):
        if self._c is NULL:
            return "<ClientPort (no connection)>"
        return f"<ClientPort id={self.id} pid={self.pid} connected={self.connected}>"


cdef ClientPort _wrap_client(ServerPort server, fsim_client *c):
    cdef ClientPort cp = ClientPort.__new__(ClientPort)
    fsim_client_retain(c)
    cp._c = c
    cp.server = server
    cp.id = fsim_client_id(c)
    return cp


cdef int32_t _on_connect(void *cookie, fsim_client *c, const void *ctx, uint32_t n,
                         void **cc) noexcept with gil:
    srv = _servers.get(<uint64_t><uintptr_t>cookie)
    if srv is None:
        return FP_STATUS_ACCESS_DENIED
    try:
        return (<ServerPort>srv)._connect(c, (<const char *>ctx)[:n] if n else b"")
    except BaseException as e:
        (<ServerPort>srv)._callback_failed("connect_notify", e)
        return FP_STATUS_INVALID_PARAMETER


cdef void _on_disconnect(void *cookie, fsim_client *c) noexcept with gil:
    srv = _servers.get(<uint64_t><uintptr_t>cookie)
    if srv is None:
        return
    try:
        (<ServerPort>srv)._disconnect(c)
    except BaseException as e:
        (<ServerPort>srv)._callback_failed("disconnect_notify", e)


cdef int32_t _on_message(void *cookie, fsim_client *c, const void *inp, uint32_t in_size,
                         void *out, uint32_t out_size, uint32_t *returned) noexcept with gil:
    srv = _servers.get(<uint64_t><uintptr_t>cookie)
    if srv is None:
        return FP_STATUS_PORT_DISCONNECTED
    cdef bytes result
    try:
        result = (<ServerPort>srv)._message(c, (<const char *>inp)[:in_size] if in_size else b"",
                                            out_size)
    except BaseException as e:
        (<ServerPort>srv)._callback_failed("message_notify", e)
        return FP_STATUS_INVALID_PARAMETER
    if len(result) > out_size:
        return FP_STATUS_BUFFER_OVERFLOW
    if len(result):
        memcpy(out, <const char *>result, len(result))
    returned[0] = <uint32_t>len(result)
    return FP_STATUS_SUCCESS


cdef class ServerPort:
    """A server port of the emulated Filter Manager (FltCreateCommunicationPort). Create it with
    `fastport.sim.FilterManager.create_port`.

    A callback that raises is logged on the `fastport.sim` logger; `callback_errors` keeps the
    newest 32 as (callback name, exception) with their tracebacks' frames cleared, and
    `callback_errors_dropped` counts the older ones no longer kept."""
    cdef fsim_server *_s
    cdef uint64_t _key
    cdef readonly str name
    cdef readonly str transport
    cdef readonly uint32_t max_connections
    cdef readonly str access
    cdef object _connect_notify, _disconnect_notify, _message_notify
    cdef dict _clients          # id -> ClientPort, while connected
    cdef readonly list callback_errors  # (callback name, exception): the newest failures
    cdef readonly uint64_t callback_errors_dropped  # older failures no longer kept
    cdef dict _closed_stats     # stats as of close()
    cdef object __weakref__
    cdef int _pid  # the process that created it: a child forked from it may not use it

    def __cinit__(self):
        self._pid = getpid()
        self._s = NULL
        self._clients = {}
        self.callback_errors = []

    def __init__(self, *args, **kwargs):
        raise TypeError("ServerPort objects come from fastport.sim.FilterManager().create_port(); "
                        "they cannot be created directly")

    def __dealloc__(self):
        # Unload: nobody can reach the clients from Python any more. In a child forked from the
        # creating process the port is the parent's: left alone (it dies with the child).
        if self._s is not NULL and not _forked(self._pid):
            with nogil:
                fsim_disconnect_all(self._s)
                fsim_close_server(self._s)
            self._s = NULL

    @property
    def closed(self):
        """True once close() was called (live connections may still go on)."""
        return self._s is NULL

    @property
    def stats(self):
        """What the socket transport refused or cut off to protect this port from hostile or
        broken local peers (all 0 on inproc; as of close() once closed), a dict:

        - ``peers_timed_out``: connections hung up on because the peer did not send its HELLO, or
          the rest of a frame it had begun, within the frame deadline
          ($FASTPORT_SOCK_FRAME_TIMEOUT_MS, default 10 s).
        - ``connections_refused``: connections closed unheard because 128 were already in their
          handshake.
        - ``sends_dropped``: FilterSendMessage requests answered E_OUTOFMEMORY at once because
          the connection's queue (64 requests or 8 MiB of input beyond the 16 running) was full.
        - ``slow_peers_dropped``: connections hung up on because they left more than 128 MiB of
          answers to their own requests unread ($FASTPORT_SOCK_MAX_UNREAD_ANSWERS)."""
        if self._s is NULL:
            return dict(self._closed_stats) if self._closed_stats is not None else \
                _server_stats(NULL)
        return _server_stats(self._s)

    @property
    def clients(self):
        """Connected client ports, oldest first."""
        return [c for c in self._clients.values() if c.connected]

    def send(self, ClientPort client not None, data, *, reply_length=None, timeout=None):
        """FltSendMessage: send `data` (bytes-like) to `client`.

        reply_length: None = no reply expected (returns once delivered); else the size of the
        reply buffer in bytes (the reply payload, header excluded). timeout: seconds bounding
        delivery plus reply together; None = forever. Returns a SendResult; STATUS_TIMEOUT and
        STATUS_PORT_DISCONNECTED are statuses, not exceptions.

        The wait wakes for signals: Ctrl-C raises KeyboardInterrupt out of it, and the send is
        abandoned as its timeout would abandon it: a message not delivered yet is withdrawn
        (never delivered later), a delivered one's reply finds no waiter (the replier gets
        ERROR_FLT_NO_WAITER_FOR_REPLY). Nothing stays pending."""
        _own(self._pid, f"server port {self.name!r}")
        cdef fsim_client *c = client._client()
        if client.server is not self:
            raise ValueError("client is not connected to this server port")
        cdef int64_t t = _timeout_ns(timeout)
        cdef uint32_t cap = 0
        cdef int want = reply_length is not None
        if want:
            cap = _u32_arg(reply_length, "reply_length", 0, FSIM_MAX_MESSAGE)
        cdef Py_buffer buf
        PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
        cdef char *reply = NULL
        cdef int32_t st = 0
        cdef fsim_sendq *q = NULL
        cdef fsim_send_req req
        cdef fsim_send_req *got = NULL
        cdef uint32_t n = 0
        memset(&req, 0, sizeof(req))
        try:
            if <size_t>buf.len > FSIM_MAX_MESSAGE:
                raise ValueError(f"message is {buf.len} bytes; the limit is {FSIM_MAX_MESSAGE}")
            if want:
                reply = <char *>malloc(cap if cap else 1)
                if reply is NULL:
                    raise MemoryError()
            if fsim_sendq_create(&q) < 0:
                raise MemoryError()
            # fsim_send's path, waited for in slices (a blocked fsim_send would not see Ctrl-C)
            req.data = buf.buf
            req.length = <uint32_t>buf.len
            req.reply = reply
            req.reply_cap = cap
            req.timeout_ns = t
            with nogil:
                st = fsim_send_async(c, &req, q)
            _check_nt(st, "FltSendMessage")
            try:
                while True:
                    with nogil:
                        n = fsim_sendq_wait(q, &got, 1, _SIGNAL_SLICE_MS * 1000000)
                    if n:
                        break
                    PyErr_CheckSignals()
            except BaseException:
                with nogil:
                    fsim_send_abandon(&req)
                    while fsim_sendq_wait(q, &got, 1, -1) == 0:
                        pass
                raise
            st = req.status
            if want and st == FP_STATUS_SUCCESS:
                return _send_result(<uint32_t>st, reply[:req.reply_length],
                                    <uint32_t>req.reply_status)
            return _send_result(<uint32_t>st)
        finally:
            if q is not NULL:
                fsim_sendq_destroy(q)  # every send on it was handed back
            free(reply)
            PyBuffer_Release(&buf)

    def close(self):
        """FltCloseCommunicationPort: stop accepting connections; live ones go on. In a child
        forked from the creating process it only drops the child's copy (the parent's port goes
        on)."""
        if _forked(self._pid):
            self._s = NULL
            return
        if self._s is not NULL:
            self._closed_stats = _server_stats(self._s)
            with nogil:
                fsim_close_server(self._s)
            self._s = NULL
            _sim_log.info("server port %r closed (%d connection(s) go on)", self.name,
                      len(self.clients))

    def _unload(self):
        """Disconnect every client, then close (what unloading the filter does). In a child
        forked from the creating process: only close (the clients are the parent's)."""
        cdef ClientPort c
        if _forked(self._pid):
            self.close()
            return
        clients = list(self._clients.values())
        if clients:
            _sim_log.debug("server port %r: disconnecting %d client(s)", self.name, len(clients))
        for c in clients:
            c.close()
        self.close()

    def __repr__(self):
        return (f"<ServerPort {self.name!r} transport={self.transport} clients={len(self.clients)}"
                f"{' closed' if self._s is NULL else ''}>")

    # -- callbacks (GIL held) --
    cdef int32_t _connect(self, fsim_client *c, bytes context) except? -1:
        cdef ClientPort cp = _wrap_client(self, c)
        if self._connect_notify is not None:
            verdict = self._connect_notify(cp, context)
            if verdict is not None:
                st = _status_arg(verdict, "connect_notify's result")
                if st < 0:
                    return st
        self._clients[cp.id] = cp
        _sim_log.debug("server port %r: client %d connected (pid %d)", self.name, cp.id,
                   fsim_client_peer_pid(c))
        return FP_STATUS_SUCCESS

    cdef _disconnect(self, fsim_client *c):
        cp = self._clients.pop(fsim_client_id(c), None)
        _sim_log.debug("server port %r: client %d disconnected", self.name, fsim_client_id(c))
        if cp is not None and self._disconnect_notify is not None:
            self._disconnect_notify(cp)

    cdef bytes _message(self, fsim_client *c, bytes data, uint32_t out_size):
        cp = self._clients.get(fsim_client_id(c))
        if cp is None:
            cp = _wrap_client(self, c)
        result = self._message_notify(cp, data, out_size)
        if result is None:
            return b""
        if not isinstance(result, (bytes, bytearray, memoryview)):
            raise TypeError(f"message_notify must return bytes or None, not "
                            f"{type(result).__name__}")
        return bytes(result)

    cdef _callback_failed(self, str which, BaseException e):
        # Every failure is logged; the newest _CALLBACK_ERRORS_KEPT stay on the port for tests
        # and post-mortems, with their frames cleared so that a failing callback's locals (a
        # 1 MiB message...) are not kept alive by its traceback.
        _sim_log.error("%s of port %r raised", which, self.name, exc_info=e)
        seen = set()
        cdef object x = e
        while x is not None and id(x) not in seen:
            seen.add(id(x))
            _traceback.clear_frames(x.__traceback__)
            x = x.__cause__ if x.__cause__ is not None else x.__context__
        self.callback_errors.append((which, e))
        cdef Py_ssize_t extra = len(self.callback_errors) - _CALLBACK_ERRORS_KEPT
        if extra > 0:
            del self.callback_errors[:extra]
            self.callback_errors_dropped += extra


cdef dict _server_stats(fsim_server *s):
    cdef fsim_server_stats st
    memset(&st, 0, sizeof(st))
    if s is not NULL:
        fsim_server_stats_get(s, &st)
    return {"peers_timed_out": st.peers_timed_out,
            "connections_refused": st.connections_refused,
            "sends_dropped": st.sends_dropped,
            "slow_peers_dropped": st.slow_peers_dropped}


def _create_port(str name not None, str transport not None, max_connections, access,
                 connect_notify, disconnect_notify, message_notify):
    """Backs fastport.sim.FilterManager.create_port (which documents the arguments)."""
    global _next_server_key
    cdef bytes bname = _name_arg(name)
    cdef uint32_t maxc = _u32_arg(max_connections, "max_connections", 1)
    cdef fsim_transport tr
    if transport == "inproc":
        tr = FSIM_INPROC
    elif transport == "socket":
        tr = FSIM_SOCKET
    else:
        raise ValueError(f"transport must be 'inproc' or 'socket', not {transport!r}")
    cdef fsim_access acc
    if access == "owner":
        acc = FSIM_ACCESS_OWNER
    elif access == "everyone":
        acc = FSIM_ACCESS_EVERYONE
    else:
        raise ValueError(f"access must be 'owner' or 'everyone', not {access!r}")
    for cb, cbname in ((connect_notify, "connect_notify"), (disconnect_notify, "disconnect_notify"),
                       (message_notify, "message_notify")):
        if cb is not None and not callable(cb):
            raise TypeError(f"{cbname} must be callable or None")

    cdef ServerPort sp = ServerPort.__new__(ServerPort)
    sp.name = name
    sp.transport = transport
    sp.max_connections = maxc
    sp.access = access
    sp._connect_notify = connect_notify
    sp._disconnect_notify = disconnect_notify
    sp._message_notify = message_notify
    sp._key = _next_server_key
    _next_server_key += 1
    _servers[sp._key] = sp

    cdef fsim_callbacks cbs
    cbs.connect_notify = _on_connect
    cbs.disconnect_notify = _on_disconnect
    cbs.message_notify = NULL
    if message_notify is not None:
        cbs.message_notify = _on_message
    cbs.cookie = <void *><uintptr_t>sp._key
    cdef const char *cname = bname
    cdef int32_t st
    with nogil:
        st = fsim_create_port(cname, tr, maxc, acc, &cbs, &sp._s)
    if st < 0:
        _servers.pop(sp._key, None)
        _check_nt(st, _sim_context(f"FltCreateCommunicationPort({name!r})"))
    _sim_log.info("server port %r created (%s transport, max_connections %d, access %s)", name,
              transport, maxc, access)
    return sp


def runtime_dir():
    """Where this process's socket-transport ports go: $FASTPORT_RUNTIME_DIR, else
    $XDG_RUNTIME_DIR/fastport, else /tmp/fastport-<uid> (the README's "Runtime directory")."""
    return fsim_runtime_dir().decode()


def debug_counters():  # here: the emulator is POSIX-only, and so is this
    """Process-wide counts of live C objects, for leak checks: emulated client and server ports,
    pumps, and pump slabs/chunks allocated and freed; and `sim_peer_waits`, the calls waiting
    for a socket-transport kernel side's answer right now (an acknowledgement, a connect's
    handshake, a get's cancel)."""
    cdef fp_pump_debug d
    fp_pump_debug_counters(&d)
    return {
        "sim_clients": fsim_debug_live_clients(),
        "sim_servers": fsim_debug_live_servers(),
        "sim_peer_waits": fsim_debug_peer_waits(),
        "pumps_live": d.pumps_live,
        "slabs_allocated": d.slabs_allocated,
        "slabs_freed": d.slabs_freed,
        "chunks_allocated": d.chunks_allocated,
        "chunks_freed": d.chunks_freed,
    }
