# User side: the FltLib-shaped port (FilterConnectCommunicationPort and friends), one call per
# message, over a table of C functions (src/backends/port.h): the emulator's own calls ("sim") or
# FltLib's ("fltlib": the real FLTLIB.DLL on Windows, the emulator's Win32 face elsewhere).
# Blocking calls release the GIL and wake every 100 ms to let Ctrl-C through.
import logging as _logging

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.mem cimport PyMem_Free
from libc.stddef cimport wchar_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cdef extern from "Python.h":
    wchar_t *PyUnicode_AsWideCharString(object unicode, Py_ssize_t *size) except NULL

_port_log = _logging.getLogger("fastport.port")


cdef class Message:
    """A message from FilterGetMessage: `reply_length` (bytes the kernel accepts in a reply,
    reply header included; 0 = no reply expected), `message_id`, `data` (memoryview of the
    payload bytes received)."""
    cdef readonly uint32_t reply_length
    cdef readonly uint64_t message_id
    cdef readonly object data

    def __init__(self, *args, **kwargs):
        raise TypeError("Message objects come from Port.get_message(); they cannot be created "
                        "directly")

    @property
    def wants_reply(self):
        return self.reply_length != 0

    def __repr__(self):
        return (f"<Message id={self.message_id} reply_length={self.reply_length} "
                f"len={len(self.data) if self.data is not None else 0}>")


cdef class Port(_Source):
    """A connection to a communication port (user side). Use `fastport.connect` to make one.
    Context manager: leaving the block closes it."""
    cdef void *_h
    cdef const fp_port_ops *_ops
    cdef readonly str name
    cdef readonly bint sync
    cdef uint64_t _cancels # cancel() calls so far: a get between two of its waits sees them
    cdef void *_iocp       # the completion port the handle joined (for pumps), or NULL
    cdef object _iocp_user # id() of the pump using it now, or None (an id: no reference cycle)
    cdef int _pid          # the process that connected: a child forked from it may not use it

    def __cinit__(self):
        self._h = NULL
        self._ops = NULL
        self._iocp = NULL
        self._pid = getpid()

    def __init__(self, *args, **kwargs):
        raise TypeError("Port objects come from fastport.connect(name); they cannot be created "
                        "directly")

    def __dealloc__(self):
        cdef void *h = self._h
        cdef const fp_port_ops *ops = self._ops
        if _forked(self._pid):
            self._forsake()
            return
        self._close_completion_port()
        if h is not NULL:
            self._h = NULL
            with nogil:
                ops.close(h)

    cdef _forsake(self):
        """Close in a child forked from the connecting process: the connection is the parent's
        and goes on there (on the emulator's socket transport the child's descriptor is closed,
        never shut down; inproc state and the completion port are left to die with the child:
        their locks may be held by threads that do not exist here)."""
        cdef void *h = self._h
        self._h = NULL
        self._iocp = NULL
        if h is not NULL and self._ops.forsake is not NULL:
            with nogil:
                self._ops.forsake(h)

    cdef void *_completion_port(self, object user) except NULL:
        """The completion port of this handle, for one pump at a time (a handle joins one
        completion port for life, and two pumps on one port would reap each other's gets)."""
        cdef void *h = self._handle()
        cdef int32_t hr
        if self._iocp_user is not None:
            raise RuntimeError(f"{self!r} is already served by a pump: one pump per port at a "
                               "time (stop it and let it go first)")
        if self._iocp is NULL:
            hr = fp_fltlib_completion_port(h, &self._iocp)
            if hr < 0:
                self._iocp = NULL
                _check_hr(hr, "CreateIoCompletionPort (the port's handle already joined another "
                              "completion port, say that of a C reference client)")
        self._iocp_user = id(user)
        return self._iocp

    cdef _release_completion_port(self, object user):
        if self._iocp_user == id(user):
            self._iocp_user = None
            if self._h is NULL:  # closed while the pump ran: its gets had to complete somewhere
                self._close_completion_port()

    cdef _close_completion_port(self):
        cdef void *c = self._iocp
        self._iocp = NULL
        if c is not NULL:
            fp_fltlib_close(c)

    cdef fp_backend *_backend_new(self, object pump) except NULL:
        """The FltLib backend over this handle and its completion port."""
        cdef void *iocp = self._completion_port(pump)
        cdef uint32_t flags = FP_BACKEND_LOCAL_REPLY if self._local_replies() else 0
        cdef int32_t hr = 0
        cdef fp_backend *b = fp_fltlib_backend_new(self._handle(), iocp, flags, &hr)
        if b is NULL:
            self._release_completion_port(pump)
            _check_hr(hr, "creating the pump's backend")
            raise MemoryError()
        return b

    cdef _backend_done(self, object pump):
        self._release_completion_port(pump)

    cdef _abandon(self):
        self.close()  # every pending get and reply completes with FP_E_INVALID_HANDLE

    cdef bint _local_replies(self) except -1:
        """Whether a reply costs no round trip (not the emulator's socket transport)."""
        return self._ops.local_replies(self._handle()) != 0

    cdef void *_handle(self) except NULL:
        if self.name is None:  # made with Port.__new__: never connected
            raise RuntimeError("this Port was never connected: make one with fastport.connect(name)")
        if self._h is NULL:
            raise _status.error_from_hresult(<uint32_t>FP_E_INVALID_HANDLE, "the port is closed")
        _own(self._pid, f"port {self.name!r}")
        return self._h

    @property
    def handle(self):
        """The HANDLE (an int; 0 once closed)."""
        return <uintptr_t>self._h

    @property
    def backend(self):
        """Which calls serve this port: "sim" (the emulator's own) or "fltlib" (FltLib's)."""
        return None if self._ops is NULL else self._ops.name.decode("ascii")

    @property
    def closed(self):
        return self._h is NULL

    def get_message(self, size=65536, timeout=None):
        """FilterGetMessage: wait for the next message and return a Message.

        size: buffer bytes including the 16-byte FILTER_MESSAGE_HEADER. timeout: seconds, None =
        forever (then PortTimeout). A message longer than the buffer raises BufferTooSmall whose
        `.message` holds the header and the bytes that fit: it counts as delivered, and the sender
        still waits for a reply to its message_id. On a sync FltLib handle (backend "fltlib",
        sync=True) the get waits until a message comes, whatever the timeout (Ctrl-C too), and
        `data` is the whole buffer: FltLib's synchronous FilterGetMessage does not say how many
        bytes came."""
        cdef uint32_t n = _u32_arg(size, "size", 16, 16 + FP_PORT_MAX_MESSAGE)
        cdef int64_t t = _timeout_ns(timeout)
        cdef void *h = self._handle()
        cdef const fp_port_ops *ops = self._ops
        buf = bytearray(n)
        cdef FP_MESSAGE_HEADER *hdr = <FP_MESSAGE_HEADER *>PyByteArray_AS_STRING(buf)
        cdef uint32_t got = 0, slice_ms
        cdef int32_t hr
        cdef double deadline = 0
        cdef uint64_t cancels = self._cancels
        if t >= 0:
            deadline = _time.monotonic() + t / 1e9
        while True:
            if self._cancels != cancels:  # cancelled between two waits: as if while pending
                hr = FP_E_OPERATION_ABORTED
                break
            slice_ms = _SIGNAL_SLICE_MS
            if t >= 0:
                left = deadline - _time.monotonic()
                slice_ms = <uint32_t>max(0.0, min(left * 1000.0, <double>_SIGNAL_SLICE_MS))
            _hook_on(ops)  # a slice's cancel waits for the kernel side's answer
            with nogil:
                hr = ops.get(h, hdr, n, slice_ms, &got)
            _hook_off(ops)
            _raise_interrupt()
            if hr != FP_E_TIMEOUT or (t >= 0 and _time.monotonic() >= deadline):
                break
            PyErr_CheckSignals()
        cdef Message m
        if hr == FP_S_OK or hr == FP_E_INSUFFICIENT_BUFFER:
            m = Message.__new__(Message)
            m.reply_length = hdr.ReplyLength
            m.message_id = hdr.MessageId
            m.data = memoryview(buf)[16:got]
            if hr == FP_E_INSUFFICIENT_BUFFER:
                err = _status.error_from_hresult(<uint32_t>hr, "FilterGetMessage")
                err.message = m
                raise err
            return m
        _check_hr(hr, "FilterGetMessage")

    def reply_message(self, message_id, data=b"", status=0):
        """FilterReplyMessage: answer message `message_id` with `data` (bytes-like payload; sent
        as FILTER_REPLY_HEADER + data, the padding rule) and FILTER_REPLY_HEADER.Status `status`.
        Raises NoWaiterForReply (0x801F0020) when the kernel no longer waits for it.

        On the emulator's socket transport the call waits for the kernel side to take the reply
        (at once when it runs; a stopped one is hung up on after 30 s). That wait wakes for
        signals: Ctrl-C raises KeyboardInterrupt out of it, and the reply was then sent but its
        outcome is unknown (the kernel side takes it when it resumes, or never)."""
        message_id = _int_value(message_id, "message_id")
        if message_id < 0 or message_id > 0xFFFFFFFFFFFFFFFF:
            raise ValueError(f"message_id out of range: {message_id}")
        cdef int32_t st = _status_arg(status, "status")
        cdef void *h = self._handle()
        cdef const fp_port_ops *ops = self._ops
        cdef Py_buffer buf
        PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
        cdef char *rb = NULL
        cdef int32_t hr
        cdef uint32_t total
        try:
            if <size_t>buf.len > FP_PORT_MAX_MESSAGE:
                raise ValueError(f"reply is {buf.len} bytes; the limit is {FP_PORT_MAX_MESSAGE}")
            total = <uint32_t>(16 + buf.len)
            rb = <char *>malloc(total)
            if rb is NULL:
                raise MemoryError()
            (<FP_REPLY_HEADER *>rb).Status = st
            (<uint32_t *>(rb + 4))[0] = 0
            (<FP_REPLY_HEADER *>rb).MessageId = <uint64_t>message_id
            if buf.len:
                memcpy(rb + 16, buf.buf, buf.len)
            _hook_on(ops)  # the waits for the kernel side (room to write, its ack)
            with nogil:
                hr = ops.reply(h, rb, total)
            _hook_off(ops)
            _raise_interrupt()
            _check_hr(hr, "FilterReplyMessage")
        finally:
            free(rb)
            PyBuffer_Release(&buf)

    def send_message(self, data, out_size):
        """FilterSendMessage: run the server's MessageNotify with `data`; returns its output
        (at most `out_size` bytes).

        The wait wakes for signals where the port allows it (the emulator): Ctrl-C raises
        KeyboardInterrupt out of it. The send is then abandoned, not withdrawn (FilterSendMessage
        cannot be): MessageNotify still runs (or finishes) in the kernel side, and its output is
        discarded."""
        cdef uint32_t cap = _u32_arg(out_size, "out_size", 0, FP_PORT_MAX_MESSAGE)
        cdef void *h = self._handle()
        cdef const fp_port_ops *ops = self._ops
        cdef Py_buffer buf
        PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
        out = bytearray(cap)
        cdef char *ob = PyByteArray_AS_STRING(out)
        cdef uint32_t ret = 0
        cdef int32_t hr = 0
        cdef int done = 0
        cdef void *op = NULL
        try:
            if <size_t>buf.len > FP_PORT_MAX_MESSAGE:
                raise ValueError(f"message is {buf.len} bytes; the limit is {FP_PORT_MAX_MESSAGE}")
            if ops.send_start is NULL:  # one uninterruptible call
                with nogil:
                    hr = ops.send(h, buf.buf, <uint32_t>buf.len, ob if cap else NULL, cap, &ret)
                _check_hr(hr, "FilterSendMessage")
                return bytes(out[:ret])
            with nogil:  # copies the input: it may outlive this call
                hr = ops.send_start(h, buf.buf, <uint32_t>buf.len, cap, &op)
        finally:
            PyBuffer_Release(&buf)
        _check_hr(hr, "FilterSendMessage")
        try:
            while True:
                with nogil:
                    done = ops.send_wait(op, _SIGNAL_SLICE_MS, ob, cap, &ret, &hr)
                if done:
                    break
                PyErr_CheckSignals()
        finally:
            ops.send_end(op)  # not done: abandoned
        _check_hr(hr, "FilterSendMessage")
        return bytes(out[:ret])

    def cancel(self):
        """CancelIoEx(port, NULL): every get pending on this port raises OperationAborted
        (0x800703E3). Nothing pending is not an error."""
        cdef void *h = self._handle()
        cdef const fp_port_ops *ops = self._ops
        self._cancels += 1
        cdef int32_t hr
        with nogil:
            hr = ops.cancel(h)
        if hr != FP_E_NOT_FOUND:
            _check_hr(hr, "CancelIoEx")

    def close(self):
        """Close the handle (disconnects). Safe to call twice. In a child forked from the
        connecting process it only drops the child's copy: the parent stays connected."""
        cdef void *h = self._h
        cdef const fp_port_ops *ops = self._ops
        if _forked(self._pid):
            self._forsake()
            return
        self._h = NULL
        if self._iocp_user is None:  # else the pump closes it once it is done with it
            self._close_completion_port()
        if h is not NULL:
            with nogil:
                ops.close(h)
            _port_log.info("port %r closed", self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<Port {self.name!r}{' closed' if self._h is NULL else ''}>"


cdef Port _connected(str name, void *h, const fp_port_ops *ops, bint sync):
    cdef Port p = Port.__new__(Port)
    p._h = h
    p._ops = ops
    p.name = name
    p.sync = sync
    _port_log.info("connected to port %r (%s, handle 0x%x%s)", name, ops.name.decode("ascii"),
                   <uintptr_t>h, ", sync" if sync else "")
    return p


def _connect_fltlib(str name not None, context, bint sync):
    """Backs fastport.connect(backend="fltlib"): FilterConnectCommunicationPort."""
    _name_arg(name)  # the same rules as the emulator's names
    cdef Py_buffer ctx
    cdef wchar_t *wname = PyUnicode_AsWideCharString(name, NULL)
    cdef void *h = NULL
    cdef int32_t hr
    cdef uint32_t opts = FP_PORT_SYNC_HANDLE if sync else 0
    try:
        PyObject_GetBuffer(context, &ctx, PyBUF_SIMPLE)
        try:
            if <size_t>ctx.len > FP_PORT_MAX_CONTEXT:
                raise ValueError(f"context is {ctx.len} bytes; the limit is {FP_PORT_MAX_CONTEXT}")
            with nogil:
                hr = fp_port_fltlib_connect(wname, opts, ctx.buf if ctx.len else NULL,
                                            <uint32_t>ctx.len, &h)
        finally:
            PyBuffer_Release(&ctx)
    finally:
        PyMem_Free(wname)
    _check_hr(hr, f"FilterConnectCommunicationPort({name!r})")
    return _connected(name, h, &fp_port_fltlib_sync if sync else &fp_port_fltlib, sync)
