# The pump's thin wrapper: batches as zero-copy numpy views over the pump's slab, replies sent
# from C. The public class (iteration, run, asyncio) is fastport.pump.Pump, built on _PumpCore.
cimport cython
cimport numpy as cnp
from cpython.ref cimport Py_INCREF, PyObject

cnp.import_array()

import logging as _logging
import threading as _threading
import traceback as _traceback
from types import CoroutineType as _Coroutine

import numpy as _np

from fastport import dtypes as _dtypes

from cpython.object cimport PyTypeObject

cdef extern from "numpy/arrayobject.h":
    PyTypeObject PyArray_Type
    object PyArray_NewFromDescr(PyTypeObject *subtype, cnp.dtype descr, int nd, cnp.npy_intp *dims,
                                cnp.npy_intp *strides, void *data, int flags, object obj)

cdef extern from "Python.h":
    Py_ssize_t Py_REFCNT(object o)

cdef int _NEXT_SLICE_MS = 100
# Pump.stop's default bound, in seconds: past it the pump hangs up on its port (see stop).
STOP_TIMEOUT = 5.0
_log = _logging.getLogger("fastport.pump")


@cython.no_gc_clear  # __dealloc__ needs `core`: a GC clear must never set it to None first
cdef class _BatchHold:
    """Owns one batch handed out by the pump: the base object of every numpy view of it. When the
    last view (and the Batch) is gone, the batch is released (its unanswered messages get
    default_reply) and its slots may be recycled; never before."""
    cdef _PumpCore core
    cdef fp_batch batch

    def __dealloc__(self):
        if self.batch.chunk is not NULL and not _forked(self.core._pid):
            with nogil:
                fp_batch_release(self.core._p, &self.batch)
            self.batch.chunk = NULL


cdef object _view(cnp.dtype dt, uint32_t n, size_t stride, void *data, bint writable,
                  _BatchHold hold):
    cdef cnp.npy_intp dims[1]
    cdef cnp.npy_intp strides[1]
    dims[0] = n
    strides[0] = <cnp.npy_intp>stride
    Py_INCREF(dt)  # PyArray_NewFromDescr steals a reference to the descr
    cdef int flags = cnp.NPY_ARRAY_ALIGNED | (cnp.NPY_ARRAY_WRITEABLE if writable else 0)
    arr = PyArray_NewFromDescr(&PyArray_Type, dt, 1, dims, strides, data, flags, None)
    Py_INCREF(hold)
    cnp.PyArray_SetBaseObject(<cnp.ndarray>arr, hold)  # steals the reference
    return arr


@cython.no_gc_clear
cdef class Batch:
    """One batch of messages, as numpy views over the pump's own memory (nothing is copied).

    headers   FILTER_MESSAGE_HEADER per message (read-only)
    messages  the message dtype per message (read-only)
    replies   the reply dtype per message (writable), prefilled with default_reply
    status    int32 per message (writable): FILTER_REPLY_HEADER.Status of its reply, 0 by default
    lengths   bytes received per message, header included (read-only)

    `reply(mask=None)` sends the replies (all, or those selected) from C: exactly one per message
    that expects one; messages with ReplyLength 0 are skipped. When the batch is released (the
    handler returns, the next batch is taken, `release()`, or leaving `with batch:`), every
    message still unanswered gets default_reply. Views stay valid after release: a view kept past
    its batch keeps the batch's slots out of circulation until it is garbage (see Pump.stats'
    chunks_held)."""
    cdef _PumpCore core
    cdef _BatchHold hold
    cdef readonly uint32_t count
    cdef fp_batch_info info
    cdef object _headers, _messages, _replies, _status, _lengths, _receive_ns
    cdef bint _released
    cdef object __weakref__  # Pump keeps its iterating threads' batches weakly (no cycle)

    def __init__(self, *args, **kwargs):
        raise TypeError("Batch objects come from a Pump (iterate it, run(), or batches()); they "
                        "cannot be created directly")

    cdef inline int _ok(self) except -1:
        if self.core is None or self.hold is None:
            raise RuntimeError("this Batch was not handed out by a Pump")
        return 0

    def __len__(self):
        return self.count

    # Views are built on first use (each is one numpy object over the chunk) and cached.
    @property
    def headers(self):
        self._ok()
        if self._headers is None:
            self._headers = _view(self.core._header_dtype, self.count, self.info.slot_size,
                                  self.info.slots, False, self.hold)
        return self._headers

    @property
    def messages(self):
        self._ok()
        if self._messages is None:
            self._messages = _view(self.core.message_dtype, self.count, self.info.slot_size,
                                   self.info.slots + 16, False, self.hold)
        return self._messages

    @property
    def replies(self):
        self._ok()
        if self._replies is None:
            self._replies = _view(self.core.reply_dtype, self.count, self.info.reply_stride,
                                  self.info.reply_payload, True, self.hold)
        return self._replies

    @property
    def status(self):
        self._ok()
        if self._status is None:
            self._status = _view(self.core._status_dtype, self.count, 4, self.info.status, True,
                                 self.hold)
        return self._status

    @property
    def lengths(self):
        self._ok()
        if self._lengths is None:
            self._lengths = _view(self.core._length_dtype, self.count, 4,
                                  <void *>self.info.length, False, self.hold)
        return self._lengths

    @property
    def receive_ns(self):
        self._ok()
        if self._receive_ns is None:
            self._receive_ns = _view(self.core._ns_dtype, self.count, 8,
                                     <void *>self.info.recv_ns, False, self.hold)
        return self._receive_ns

    @property
    def payload(self):
        """The message payloads as a read-only 2-d uint8 view (len(batch), message itemsize):
        raw bytes for byte-level work (checksums, pattern search); zero-copy like the others."""
        self._ok()
        cdef fp_batch_info info = self.info
        cdef cnp.npy_intp dims[2]
        cdef cnp.npy_intp strides[2]
        dims[0] = self.count
        dims[1] = self.core.message_dtype.itemsize
        strides[0] = <cnp.npy_intp>info.slot_size
        strides[1] = 1
        dt = _np.dtype(_np.uint8)
        Py_INCREF(dt)
        arr = PyArray_NewFromDescr(&PyArray_Type, dt, 2, dims, strides, info.slots + 16,
                                   cnp.NPY_ARRAY_ALIGNED, None)
        Py_INCREF(self.hold)
        cnp.PyArray_SetBaseObject(<cnp.ndarray>arr, self.hold)
        return arr

    @property
    def released(self):
        return self._released

    @property
    def exports(self):
        """Live numpy views into this batch's memory (each keeps the slots from recycling)."""
        if self.hold is None:
            return 0
        return Py_REFCNT(self.hold) - 2  # minus this Batch's reference and the argument's

    def reply(self, mask=None):
        """Send the replies of the selected messages (mask: bool array of len(batch); None =
        all) from C. Already answered messages (by an earlier reply, the deadline or release)
        are skipped and counted in stats['late_python']. Returns the number of messages this
        call answered (replies handed to the port, or queued for a reply thread).

        A failed send does not raise, whatever the batch size (replies are sent here or by a
        reply thread, depending on the load): the message is answered all the same, the failure
        is counted in stats['errors'] (stats['late_replies'] when the kernel had stopped
        waiting), and a port that is gone ends the pump: iterating it or run() raises
        PortDisconnected once the batches received before have been handed out."""
        cdef fp_reply_result res
        cdef cnp.ndarray m
        cdef const uint8_t *mp = NULL
        self._ok()
        self.core._ok()
        if mask is not None:
            m = _np.ascontiguousarray(mask, dtype=_np.bool_)
            if m.ndim != 1 or m.shape[0] != self.count:
                raise ValueError(f"mask must be a 1-d array of {self.count} booleans")
            mp = <const uint8_t *>cnp.PyArray_DATA(m)
        with nogil:
            # its result, an inline send's call-level failure, is already counted as errors in
            # the stats; not raised, as a queued send's cannot be (see above)
            fp_batch_reply(self.core._p, &self.hold.batch, mp, &res)
        return res.sent

    def release(self, bint error=False):
        """Done with the batch: unanswered messages get default_reply now (counted as defaulted
        by release, or by error when `error` is true). Idempotent."""
        if self._released:
            return
        self._ok()
        self.core._ok()
        self._released = True
        with nogil:
            fp_batch_finish(self.core._p, &self.hold.batch,
                            FP_FINISH_ERROR if error else FP_FINISH_RELEASE)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.release(exc_type is not None)

    def __repr__(self):
        return f"<Batch of {self.count}{' released' if self._released else ''}>"


@cython.no_gc_clear  # the port and backend must outlive the C pump, whatever order GC frees in
cdef class _PumpCore:
    """C pump plumbing; see fastport.pump.Pump for the public interface."""
    cdef fp_pump *_p
    cdef fp_backend *_backend
    cdef readonly object port
    cdef readonly cnp.dtype message_dtype
    cdef readonly cnp.dtype reply_dtype
    cdef readonly bytes default_reply
    cdef readonly str on_full
    cdef cnp.dtype _header_dtype, _status_dtype, _length_dtype, _ns_dtype
    cdef bint _started
    cdef uint64_t _overflow_logged
    cdef int _pid  # the process that made it: a child forked from it may not use it

    def __cinit__(self):
        self._p = NULL
        self._backend = NULL
        self._pid = getpid()

    def __init__(self, _Source port not None, message, reply, uint32_t threads, uint32_t outstanding,
                 uint32_t batch, deadline, default_reply, uint32_t reply_threads,
                 bint consumer_reap=True, str on_full="wait"):
        if message is None or reply is None:
            raise TypeError("message and reply must be numpy dtypes (or what np.dtype accepts)")
        self.message_dtype = _np.dtype(message)
        self.reply_dtype = _np.dtype(reply)
        if self.message_dtype.hasobject or self.reply_dtype.hasobject:
            raise TypeError("message and reply dtypes must be plain data (no Python objects)")
        if self.reply_dtype.itemsize == 0:
            raise ValueError("the reply dtype must not be empty")
        if self.reply_dtype.itemsize > FP_PORT_MAX_MESSAGE:  # every reply would fail to send
            raise ValueError(f"reply dtype is {self.reply_dtype.itemsize} bytes; the limit is "
                             f"{FP_PORT_MAX_MESSAGE} (the port's largest reply, header excluded)")
        if self.message_dtype.itemsize > FP_PORT_MAX_MESSAGE:
            raise ValueError(f"message dtype is {self.message_dtype.itemsize} bytes; the limit is "
                             f"{FP_PORT_MAX_MESSAGE}")
        self._header_dtype = _dtypes.FILTER_MESSAGE_HEADER
        self._status_dtype = _np.dtype(_np.int32)
        self._length_dtype = _np.dtype(_np.uint32)
        self._ns_dtype = _np.dtype(_np.uint64)
        self.default_reply = _reply_bytes(default_reply, self.reply_dtype)
        cdef fp_pump_config cfg
        fp_pump_config_init(&cfg)
        cfg.threads = threads
        cfg.outstanding = outstanding
        cfg.batch = batch
        cfg.reply_threads = reply_threads
        cfg.consumer_reap = 1 if consumer_reap else 0
        cfg.deadline_ns = _timeout_ns(deadline, "deadline")
        if on_full not in ("default", "wait"):
            raise ValueError(f"on_full must be 'default' or 'wait', not {on_full!r}")
        self.on_full = on_full
        cfg.overflow = 1 if on_full == "default" else 0
        cfg.message_size = <uint32_t>self.message_dtype.itemsize
        cfg.reply_size = <uint32_t>self.reply_dtype.itemsize
        cfg.default_reply = <const char *>self.default_reply
        self._backend = port._backend_new(self)
        self.port = port
        cdef int32_t hr
        hr = fp_pump_create(self._backend, &cfg, &self._p)
        if hr < 0:
            self._free_backend()
            if hr == FP_E_INVALIDARG:
                raise ValueError("invalid pump configuration (threads, outstanding and batch must "
                                 "be >= 1 and within limits)")
            _check_hr(hr, "creating the pump")

    cdef _free_backend(self):
        if self._backend is not NULL:
            self._backend.ops.destroy(self._backend)
            self._backend = NULL
        if self.port is not None:
            (<_Source>self.port)._backend_done(self)

    def __dealloc__(self):
        # Every Batch and view holds a reference to this object, so no batch is held here.
        cdef int32_t hr = 0
        if _forked(self._pid):
            return  # the parent's threads use this memory there; here it goes with the process
        if self._p is not NULL:
            with nogil:
                hr = fp_pump_destroy(self._p)
            if hr == FP_PUMP_E_BUSY:
                return  # cannot happen (holds keep us alive); leak rather than free under them
            self._p = NULL
        self._free_backend()

    cdef inline int _ok(self) except -1:
        if self._p is NULL:
            raise RuntimeError("the pump was not initialised (call Pump(...), not __new__)")
        return _own(self._pid, "this pump")

    def start(self):
        """Start the worker threads (they post the first gets)."""
        self._ok()
        if self._started:
            raise RuntimeError("the pump was already started")
        cdef int32_t hr
        with nogil:
            hr = fp_pump_start(self._p)
        _check_hr(hr, "starting the pump")
        self._started = True

    def stop(self, timeout=STOP_TIMEOUT):
        """Stop: cancel pending gets, answer every received message (default_reply for those
        without an answer), join every thread. Any thread, the handler included; idempotent.

        timeout: seconds (default STOP_TIMEOUT, 5 s; None = no bound) the kernel side gets to
        answer the cancels and accept the replies. A live kernel side does so at once; one that
        does not (its process stopped, a hung emulator) is given up on when the bound passes:
        the pump closes its port (as if port.close() were called; on the socket transport the
        close itself waits at most 2 s more for the kernel side), so every pending get and
        reply completes as failed and the threads end. What was not answered then stays
        unanswered for the kernel: its senders see the connection end (or their own timeout).
        Returns a dict: `hung_up` (the bound passed and the port was closed), and as counted
        when it passed: `unanswered` (messages received and not answered yet, whose replies
        then failed: in stats['errors'] or stats['reply_failed']) and `gets_pending` (gets
        still in flight). All zero/False for a clean stop (and when already stopped).

        The wait wakes for signals: Ctrl-C gives up at once, as the bound passing would (the
        port is closed), the stop then finishes (within the close's 2 s) and KeyboardInterrupt
        is raised.

        In a child forked from the pump's process it raises RuntimeError at once and frees
        nothing (the pump is the parent's)."""
        report = {"hung_up": False, "unanswered": 0, "gets_pending": 0}
        if self._p is NULL:
            return report
        _own(self._pid, "this pump")
        cdef int64_t t = _timeout_ns(timeout)
        guard = _threading.Lock()
        state = {"done": False, "abandoned": False}

        def give_up(why):  # idempotent; a retry after an interruption finishes what it began
            with guard:
                if state["done"] or state["abandoned"]:
                    return
                s = self.stats
                unanswered = (s["received"] - s["replied"] - s["reply_failed"] - s["no_reply"]
                              - s["defaulted"])
                (<_Source>self.port)._abandon()
                state["abandoned"] = True
                report.update(hung_up=True, gets_pending=s["inflight"], unanswered=unanswered)
            _log.warning("pump stop: %s; closed the port (%d message(s) unanswered, %d get(s) "
                         "pending)", why, unanswered, s["inflight"])

        timer = None
        if t >= 0:
            timer = _threading.Timer(t / 1e9, give_up,
                                     (f"the port did not answer within {t / 1e9:g} s",))
            timer.daemon = True
            timer.start()
        interrupted = None
        joined = _threading.Event()

        def join():
            try:
                self._join_all()
            finally:
                joined.set()

        try:
            # the join runs on a thread of its own so that this one wakes for signals (an
            # Event's wait does; an interrupted Thread.join may take a running thread for ended)
            joiner = _threading.Thread(target=join, name="fastport-pump-stop", daemon=True)
            try:
                joiner.start()
            except RuntimeError:  # no new threads (interpreter shutdown): join here, unbounded
                join()
            while not joined.wait(_SIGNAL_SLICE_MS / 1000):
                pass
        except BaseException as e:
            interrupted = e
        # Ctrl-C: give up at once, as the bound passing would; the join then ends within the
        # close's bound (one running on the thread is waited for: it is idempotent). What
        # follows is finished whatever else is raised meanwhile; the first exception is raised
        # once the stop is done.
        while True:
            try:
                if interrupted is not None and not joined.is_set():
                    give_up(f"interrupted ({type(interrupted).__name__})")
                    self._join_all()
                if timer is not None:
                    with guard:
                        state["done"] = True
                    timer.cancel()
                    timer.join()  # its thread holds give_up, so self: gone before we return
                # drained: nothing of ours is pending on the port's completion port anymore
                (<_Source>self.port)._backend_done(self)
                break
            except BaseException as e:
                if interrupted is None:
                    interrupted = e
        if report["hung_up"]:
            _log.info("pump stopped after closing its port")
        if interrupted is not None:
            raise interrupted
        return report

    def _join_all(self):
        """fp_pump_stop + fp_pump_join, without the GIL (stop()'s joining thread)."""
        with nogil:
            fp_pump_stop(self._p)
            fp_pump_join(self._p)

    cdef Batch _wrap(self, const fp_batch *fb):
        cdef _BatchHold hold = _BatchHold.__new__(_BatchHold)
        hold.core = self
        hold.batch = fb[0]
        cdef Batch b = Batch.__new__(Batch)
        b.core = self
        b.hold = hold
        fp_batch_get_info(self._p, fb, &b.info)
        b.count = b.info.count
        return b

    cdef _check_overflow(self):
        """Says once, in the log, that C answered messages for want of a free chunk."""
        cdef uint64_t n = fp_pump_overflowed(self._p)
        if n and not self._overflow_logged:
            self._overflow_logged = n
            _log.warning(
                "every chunk of the pump's slab was busy, so C answered %d message(s) with "
                "default_reply at once; %d chunk(s) are held by batches or views still alive "
                "(keep copies, not views, of data you keep), or the handler is slower than the "
                "deadline", n, self.stats["chunks_held"])

    def _next(self, timeout=None):
        """The next batch; None on timeout; raises StopIteration once stopped, PortError once the
        port failed (after every batch received before has been handed out). Ctrl-C stops the
        pump and raises KeyboardInterrupt."""
        cdef fp_batch fb
        cdef int rc
        cdef int64_t t = _timeout_ns(timeout), slice_ns
        cdef double deadline = _time.monotonic() + t / 1e9 if t >= 0 else 0
        self._ok()
        if not self._started:
            raise RuntimeError("the pump was not started: use `with pump:` or pump.start()")
        while True:
            slice_ns = _NEXT_SLICE_MS * 1000000
            if t >= 0:
                slice_ns = max(0, min(slice_ns, <int64_t>((deadline - _time.monotonic()) * 1e9)))
            with nogil:
                rc = fp_pump_next(self._p, slice_ns, &fb)
            self._check_overflow()
            if rc == FP_PUMP_BATCH:
                return self._wrap(&fb)
            if rc == FP_PUMP_STOPPED:
                raise StopIteration
            if rc == FP_PUMP_FAILED:
                _check_hr(fp_pump_error(self._p), "the pump's port")
                raise StopIteration
            try:
                PyErr_CheckSignals()
            except BaseException:
                self.stop()
                raise
            if t >= 0 and _time.monotonic() >= deadline:
                return None

    def _try_next(self):
        """Non-blocking _next: a Batch, or None when nothing is ready."""
        self._ok()
        cdef fp_batch fb
        cdef int rc = fp_pump_try_next(self._p, &fb)
        self._check_overflow()
        if rc == FP_PUMP_BATCH:
            return self._wrap(&fb)
        if rc == FP_PUMP_STOPPED:
            raise StopIteration
        if rc == FP_PUMP_FAILED:
            _check_hr(fp_pump_error(self._p), "the pump's port")
            raise StopIteration
        return None

    cdef _put_reply(self, replies, uint32_t i, r):
        cdef Py_ssize_t size = self.reply_dtype.itemsize
        if isinstance(r, (bytes, bytearray, memoryview)):
            if len(r) != size:
                raise ValueError(f"reply is {len(r)} bytes; the reply dtype is {size}")
            replies[i] = _np.frombuffer(r, dtype=self.reply_dtype)[0]
            return
        dt = getattr(r, "dtype", None)
        if isinstance(dt, _np.dtype) and dt.names is not None and dt != self.reply_dtype:
            # numpy would assign it field by position, whatever the names say
            raise TypeError(f"the handler returned a record of dtype {dt}; the reply dtype is "
                            f"{self.reply_dtype}")
        replies[i] = r

    cdef int _handle_each(self, Batch b, handler, bint raise_errors) except -1:
        """Per-message mode: handler(record) -> reply record, bytes, or None (default_reply).
        A message whose call raises gets default_reply alone (counted as defaulted_error);
        with raise_errors the first such exception propagates, after the replies of the
        messages judged before it were sent."""
        cdef uint32_t i = 0, failed = 0
        cdef object ok = None, first = None
        messages = b.messages
        replies = b.replies
        try:
            while i < b.count:
                try:
                    r = handler(messages[i])
                    if r is not None:
                        self._put_reply(replies, i, r)
                except Exception as e:
                    if raise_errors:
                        raise
                    if ok is None:
                        ok = _np.ones(b.count, dtype=_np.bool_)
                    ok[i] = False
                    failed += 1
                    if first is None:
                        first = e
                    else:
                        _traceback.clear_frames(e.__traceback__)
                i += 1
        except BaseException:
            if ok is None:
                ok = _np.ones(b.count, dtype=_np.bool_)
            ok[i:] = False
            b.reply(ok)
            raise
        b.reply(ok)
        if failed:
            b.release(True)  # the failed ones, now: defaulted_error
            _log.error("pump handler raised for %d of %d message(s) of a batch; those got "
                       "default_reply", failed, b.count, exc_info=first)
            _traceback.clear_frames(first.__traceback__)  # (see _run)
        return 0

    def _run(self, handler, bint per_message, bint raise_errors, log):
        """The loop behind Pump.run (see there), in C: per batch, one wait, one handler call,
        one release."""
        cdef Batch b
        while True:
            try:
                b = self._next()
            except StopIteration:
                return
            try:
                if per_message:
                    self._handle_each(b, handler, raise_errors)
                elif isinstance(handler(b), _Coroutine):
                    raise TypeError("the handler returned a coroutine, which run() would never "
                                    "await: use `async for batch in pump.batches()`")
            except Exception as e:
                b.release(True)
                if raise_errors:
                    self.stop()
                    raise
                log(e)
                # a log handler may keep the record: the traceback's frames would keep the
                # handler's locals (views of this batch) and its slots out of circulation
                _traceback.clear_frames(e.__traceback__)
            except BaseException:  # Ctrl-C in the handler, SystemExit: stop cleanly, re-raise
                b.release(True)
                self.stop()
                raise
            finally:
                b.release(False)
                b = None

    @property
    def stats(self):
        """A snapshot of the pump's counters (ints unless said) and its receive-to-reply
        latency, as a dict (typed as PumpStats in fastport/_ext.pyi). Every message received is
        answered once: received = replied + reply_failed + no_reply + defaulted + (messages not
        answered yet).

        received            messages received into slots (overflow slots included)
        replied             consumer replies the port accepted (batch.reply(), per-message)
        reply_failed        replies whose send failed, the consumer's or default ones (the
                            kernel gave up, a reply longer than it accepts, the port gone):
                            also in late_replies/errors
        no_reply            messages that expect no reply (ReplyLength 0): never answered
        defaulted           default replies the port accepted: the sum of the five
                            defaulted_* below
        defaulted_deadline  ... by C, `deadline` seconds after receipt
        defaulted_error     ... because the handler raised (its batch, or in per-message mode
                            its message)
        defaulted_release   ... to messages left unanswered when their batch was released
        defaulted_stop      ... at stop() to messages nobody had answered
        defaulted_overflow  ... at once, to messages that found no free chunk (on_full
                            "default"; logged once)
        late_replies        sends the port refused because the kernel no longer waited
                            (ERROR_FLT_NO_WAITER_FOR_REPLY)
        late_python         consumer replies not sent: the message was already answered
        errors              other failed sends, and gets that failed
        truncated           messages longer than the message dtype (delivered truncated)
        batches             batches handed out
        mean_batch          received / batches (a float; 0.0 before the first batch)
        posts               gets posted to the port
        reaps               reaps of the port's completions that returned any
        reply_calls         calls to the port's reply function (each sends one or more)
        inflight            gets posted and not completed now
        chunks_total        chunks of the slab (each `batch` slots)
        chunks_free         chunks on the free list
        chunks_filling      chunks in use, neither ready nor held: gets are posted in them
        chunks_ready        chunks with received messages not taken by a consumer yet
        chunks_held         chunks with a batch not released yet, or a view of one still alive
                            (a chunk may be both ready and held)
        latency_us          receive-to-reply latency of every sent reply, a dict:
            count               replies measured
            p50 p90 p99 p999    percentiles, microseconds (floats)
            max mean            microseconds (floats)
        """
        self._ok()
        cdef fp_pump_stats s
        with nogil:
            fp_pump_stats_get(self._p, &s)
        return {
            "received": s.received,
            "replied": s.replied,
            "reply_failed": s.reply_failed,
            "no_reply": s.no_reply,
            "defaulted": s.defaulted_deadline + s.defaulted_error + s.defaulted_release
                         + s.defaulted_stop + s.defaulted_overflow,
            "defaulted_deadline": s.defaulted_deadline,
            "defaulted_error": s.defaulted_error,
            "defaulted_release": s.defaulted_release,
            "defaulted_stop": s.defaulted_stop,
            "defaulted_overflow": s.defaulted_overflow,
            "late_replies": s.late_replies,
            "late_python": s.late_python,
            "errors": s.errors,
            "truncated": s.truncated,
            "batches": s.batches,
            "mean_batch": s.received / s.batches if s.batches else 0.0,
            "posts": s.posts,
            "reaps": s.reaps,
            "reply_calls": s.reply_calls,
            "inflight": s.inflight,
            "chunks_total": s.chunks_total,
            "chunks_free": s.chunks_free,
            "chunks_filling": s.chunks_filling,
            "chunks_ready": s.chunks_ready,
            "chunks_held": s.chunks_held,
            "latency_us": {
                "count": s.latency_count,
                "p50": s.latency_p50_ns / 1e3,
                "p90": s.latency_p90_ns / 1e3,
                "p99": s.latency_p99_ns / 1e3,
                "p999": s.latency_p999_ns / 1e3,
                "max": s.latency_max_ns / 1e3,
                "mean": s.latency_mean_ns / 1e3,
            },
        }

    @property
    def layout(self):
        """Geometry of the slab (addresses as ints), for zero-copy checks and tuning."""
        self._ok()
        cdef fp_pump_layout L
        fp_pump_get_layout(self._p, &L)
        return {
            "slab": <uintptr_t>L.slab, "slab_bytes": L.slab_bytes,
            "replies": <uintptr_t>L.replies, "replies_bytes": L.replies_bytes,
            "slot_size": L.slot_size, "reply_stride": L.reply_stride,
            "chunk_bytes": L.chunk_bytes, "chunk_reply_bytes": L.chunk_reply_bytes,
            "nchunks": L.nchunks, "batch": L.batch, "threads": L.threads,
            "outstanding": L.outstanding, "overflow_slots": L.overflow_slots,
        }


cdef bytes _reply_bytes(object value, cnp.dtype dt):
    """default_reply as exactly dt.itemsize bytes: None = zeros; bytes of that size; or anything
    numpy can turn into one element of dt (a record, a tuple, a scalar)."""
    if value is None:
        return bytes(dt.itemsize)
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) != dt.itemsize:
            raise ValueError(f"default_reply is {len(value)} bytes; the reply dtype is "
                             f"{dt.itemsize}")
        return bytes(value)
    arr = _np.zeros(1, dtype=dt)
    arr[0] = value
    return arr.tobytes()

