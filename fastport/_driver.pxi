# The load-generating test driver (src/driver) and the C reference client (src/cref).
# Included into fastport/_ext.pyx, so it reaches ClientPort._c, ServerPort._s and Port._h.
# The driver runs without the GIL; the calling thread wakes every 100 ms for Ctrl-C and the
# progress callback.
import math as _math

from libc.stdlib cimport malloc as _drv_malloc, free as _drv_free
from fastport.includes.bench cimport (
    BENCH_MESSAGE, BENCH_REPLY, SCANNER_NOTIFICATION, SCANNER_REPLY,
    BENCH_HEADER_BYTES, FP_PROTO_BENCH, FP_PROTO_SCANNER, fp_protocol_reply_size,
    bench_checksum, bench_verdict, bench_load_le32, scanner_find_foul,
)
from fastport.includes.driver cimport (
    FP_DRIVER_MAX_SENDERS, FP_DRIVER_MAX_PAYLOAD, FP_DRIVER_MAX_INFLIGHT,
    FP_DRIVER_MAX_INFLIGHT_BYTES, fp_driver, fp_driver_config,
    fp_driver_config_init, fp_driver_result, fp_driver_start, fp_driver_start_server,
    fp_driver_stop, fp_driver_abort, FP_DRIVER_DONE, fp_driver_wait, fp_driver_progress,
    fp_driver_get_result, fp_hist_row, fp_driver_histogram_rows, fp_driver_destroy,
)
from fastport.includes.cref cimport (
    FP_CREF_MAX_THREADS, FP_CREF_MAX_OUTSTANDING, fp_cref, fp_cref_stats, fp_cref_start,
    fp_cref_stop, fp_cref_join, fp_cref_stats_get, fp_cref_destroy,
)

# protocol name -> (id, fixed payload bytes or 0, reply payload bytes)
_DRIVER_PROTOCOLS = {
    "bench": (FP_PROTO_BENCH, 0, sizeof(BENCH_REPLY)),
    "scanner": (FP_PROTO_SCANNER, sizeof(SCANNER_NOTIFICATION), sizeof(SCANNER_REPLY)),
}
cdef int64_t _DRIVER_SLICE_NS = 100000000  # 100 ms between Ctrl-C checks


cdef int _protocol_id(object protocol) except -1:
    if not isinstance(protocol, str):
        raise TypeError(f"protocol must be a str, not {type(protocol).__name__}")
    entry = _DRIVER_PROTOCOLS.get(protocol)
    if entry is None:
        raise ValueError(f"unknown protocol {protocol!r}: expected one of "
                         f"{', '.join(map(repr, _DRIVER_PROTOCOLS))}")
    return entry[0]


cdef double _seconds_arg(object value, str name) except -1.0:
    """A number of seconds >= 0, finite."""
    cdef double v = _real_value(value, name)
    if not (v >= 0.0) or _math.isinf(v):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


cdef dict _latency_us(const fp_driver_result *r):
    return {
        "p50": r.latency.p50 / 1e3,
        "p90": r.latency.p90 / 1e3,
        "p99": r.latency.p99 / 1e3,
        "p999": r.latency.p999 / 1e3,
        "max": r.latency.max / 1e3,
        "min": r.latency.min / 1e3,
        "mean": r.latency.mean / 1e3,
    }


cdef dict _result_dict(const fp_driver_result *r):
    return {
        "messages": r.sent,
        "replies_ok": r.replies_ok,
        "bad_replies": r.bad_replies,
        "wrong_size": r.wrong_size,
        "wrong_size_length": r.wrong_size_length if r.wrong_size else None,
        "reply_size": r.reply_size,
        "timeouts": r.timeouts,
        "disconnects": r.disconnects,
        "overflows": r.overflows,
        "errors": r.errors,
        "first_error": <uint32_t>r.first_error,
        "warmup_messages": r.warmup_messages,
        "seconds": r.seconds,
        "throughput": r.throughput,
        "latency_us": _latency_us(r),
    }


cdef list _histogram_rows(fp_driver *d):
    cdef size_t n = fp_driver_histogram_rows(d, NULL, 0)
    if n == 0:
        return []
    cdef fp_hist_row *rows = <fp_hist_row *>_drv_malloc(n * sizeof(fp_hist_row))
    if rows is NULL:
        raise MemoryError()
    cdef size_t i
    try:
        n = fp_driver_histogram_rows(d, rows, n)
        return [(rows[i].low, rows[i].high, rows[i].count) for i in range(n)]
    finally:
        _drv_free(rows)


def _run_driver(target, *, senders, payload_min=1024, payload_max=None, protocol="bench",
                seconds=None, messages=None, rate=0.0, timeout=None, seed=1, warmup=0.0,
                progress=None, inflight=0):
    """Run the load-generating test driver against `target` and return its result.

    target: a ClientPort (every sender sends on that connection) or a ServerPort (each sender
    picks one of its connected clients, round-robin, and moves on when that one disconnects).
    senders: K sender threads (1..4096). payload_min/payload_max: bench payload bytes, uniform in
    [min, max] (max None = min), 16..1 MiB; protocol "scanner" always sends 1032-byte
    SCANNER_NOTIFICATIONs. seconds and/or messages: length of the measured window (at least one;
    messages = measured sends in total). rate: open loop, messages/s over all senders (Poisson;
    latency from the intended send time); 0 = closed loop. timeout: seconds per send (None =
    none). seed: int >= 0. warmup: seconds before the window (not measured).
    inflight: 0 = thread per message (each sender blocks in FltSendMessage); N >= senders = N
    messages kept in flight by the `senders` threads through the emulator's asynchronous sends
    (the client sees the same messages; the driver costs far less CPU per message).
    N <= 65536 and N * payload_max <= 1 GiB.
    progress: callable(dict) called about once a second from this thread with messages,
    messages_per_s (last interval), throughput (window so far), p99_us, timeouts, bad_replies,
    seconds, warmup (bool).

    Returns a dict: messages (measured sends), throughput (answered messages/s), seconds,
    latency_us {p50, p90, p99, p999, max, min, mean}, replies_ok, bad_replies (wrong content or
    size), wrong_size (those of bad_replies whose length was not reply_size: shorter),
    wrong_size_length (the first such length, None if none), reply_size (reply payload bytes
    the protocol expects), timeouts, disconnects, overflows (replies longer than reply_size: the
    kernel refused them), errors, first_error, warmup_messages, histogram [(low_ns, high_ns,
    count) of non-empty buckets], interrupted, and the settings (protocol, senders, payload_min,
    payload_max, rate, inflight). Ctrl-C stops the driver and returns the partial result with
    interrupted=True; a second Ctrl-C disconnects the target to free senders blocked in a send
    without a timeout."""
    cdef fp_driver_config cfg
    fp_driver_config_init(&cfg)
    cdef fsim_client *client = NULL
    cdef fsim_server *server = NULL
    if isinstance(target, ClientPort):
        client = (<ClientPort>target)._client()
    elif isinstance(target, ServerPort):
        server = (<ServerPort>target)._s
        if server is NULL:
            raise ValueError("the server port is closed (or was not made by "
                             "FilterManager.create_port)")
    else:
        raise TypeError(f"target must be a ClientPort or a ServerPort, not {type(target).__name__}")

    cfg.senders = _u32_arg(senders, "senders", 1, FP_DRIVER_MAX_SENDERS)
    cfg.protocol = _protocol_id(protocol)
    fixed = _DRIVER_PROTOCOLS[protocol][1]
    if fixed:
        cfg.payload_min = cfg.payload_max = fixed
    else:
        cfg.payload_min = _u32_arg(payload_min, "payload_min", BENCH_HEADER_BYTES,
                                   FP_DRIVER_MAX_PAYLOAD)
        cfg.payload_max = cfg.payload_min if payload_max is None else _u32_arg(
            payload_max, "payload_max", BENCH_HEADER_BYTES, FP_DRIVER_MAX_PAYLOAD)
        if cfg.payload_max < cfg.payload_min:
            raise ValueError(f"payload_max ({cfg.payload_max}) must be >= payload_min "
                             f"({cfg.payload_min})")
    cfg.seconds = 0.0 if seconds is None else _seconds_arg(seconds, "seconds")
    if cfg.seconds > 1e9:
        raise ValueError(f"seconds is too large: {seconds!r}")
    if messages is None:
        cfg.messages = 0
    else:
        messages = _int_value(messages, "messages")
        if messages < 1 or messages > 0xFFFFFFFFFFFFFFFF:
            raise ValueError(f"messages must be >= 1 (or None), got {messages}")
        cfg.messages = messages
    if cfg.seconds == 0 and cfg.messages == 0:
        raise ValueError("give seconds (> 0) and/or messages: the measured window needs an end")
    cfg.rate = _seconds_arg(rate, "rate")
    cfg.warmup = _seconds_arg(warmup, "warmup")
    if cfg.warmup > 1e9:
        raise ValueError(f"warmup is too large: {warmup!r}")
    cfg.timeout_ns = _timeout_ns(timeout)
    cfg.inflight = _u32_arg(inflight, "inflight", 0, FP_DRIVER_MAX_INFLIGHT)
    if cfg.inflight and cfg.inflight < cfg.senders:
        raise ValueError(f"inflight ({cfg.inflight}) must be >= senders ({cfg.senders}): each "
                         f"sender thread keeps at least one message in flight")
    if <uint64_t>cfg.inflight * cfg.payload_max > FP_DRIVER_MAX_INFLIGHT_BYTES:
        raise ValueError(f"inflight x payload_max = {cfg.inflight * cfg.payload_max} bytes of "
                         f"message buffers: more than 1 GiB")
    seed = _int_value(seed, "seed")
    if seed < 0 or seed > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    cfg.seed = seed
    if progress is not None and not callable(progress):
        raise TypeError("progress must be callable or None")

    cdef fp_driver *d = NULL
    cdef int32_t hr
    with nogil:
        if client is not NULL:
            hr = fp_driver_start(&cfg, client, &d)
        else:
            hr = fp_driver_start_server(&cfg, server, &d)
    if hr == FP_E_INVALIDARG:
        raise ValueError("the driver refused its configuration")
    if hr == FP_E_OUTOFMEMORY:
        raise MemoryError("fp_driver_start: out of memory (or threads)")
    _check_hr(hr, "fp_driver_start")

    cdef int st
    cdef fp_driver_result r
    cdef bint interrupted = False
    cdef object error = None
    cdef double now, last = _time.monotonic()
    cdef uint64_t last_answered = 0
    try:
        while True:
            with nogil:
                st = fp_driver_wait(d, _DRIVER_SLICE_NS)
            if st == FP_DRIVER_DONE:
                break
            try:
                PyErr_CheckSignals()
                if progress is not None and error is None and not interrupted:
                    now = _time.monotonic()
                    if now - last >= 1.0:
                        with nogil:
                            fp_driver_progress(d, &r)
                        answered = r.replies_ok + r.bad_replies
                        progress({
                            "messages": r.sent,
                            "messages_per_s": (answered - last_answered) / (now - last),
                            "throughput": r.throughput,
                            "p99_us": r.latency.p99 / 1e3,
                            "timeouts": r.timeouts,
                            "bad_replies": r.bad_replies,
                            "seconds": r.seconds,
                            "warmup": bool(r.in_warmup),
                        })
                        last, last_answered = now, answered
            except KeyboardInterrupt:
                if not interrupted:
                    interrupted = True
                    fp_driver_stop(d)
                else:
                    with nogil:
                        fp_driver_abort(d)
            except BaseException as e:  # the progress callback failed: stop, then re-raise
                error = e
                fp_driver_stop(d)
        fp_driver_get_result(d, &r)
        out = _result_dict(&r)
        out["histogram"] = _histogram_rows(d)
    finally:
        with nogil:
            fp_driver_destroy(d)
    if error is not None:
        raise error
    out["interrupted"] = bool(interrupted)
    out["protocol"] = protocol
    out["senders"] = cfg.senders
    out["payload_min"] = cfg.payload_min
    out["payload_max"] = cfg.payload_max
    out["rate"] = cfg.rate
    out["inflight"] = cfg.inflight
    return out


cdef class CReference:
    """The C reference client: `threads` C threads share one I/O completion port bound to
    `port` and keep `threads * outstanding` overlapped FilterGetMessage calls pending, compute each
    reply in C (bench: checksum + verdict; scanner: the "foul" search) and answer each batch of
    completions with one FltSimReplyMessages: what a hand-written C service does with FltLib,
    written against the emulator's Win32 face (src/cref).

    `CReference(port, threads=2, outstanding=16, protocol="bench", max_payload=None)`;
    max_payload = bytes after the message header (None: 1032 for scanner, 65536 for bench).
    `.start()`, `.stop()` (stop and join), `.stats` (dict), context manager (starts on enter
    if not started, stops on exit). The threads also end by themselves when the port fails
    (disconnect, closed handle). A port serves one client in its life: its handle joins the
    client's completion port for good, as on Windows (a second start raises E_INVALIDARG)."""
    cdef fp_cref *_c
    cdef readonly Port port
    cdef readonly uint32_t threads
    cdef readonly uint32_t outstanding
    cdef readonly uint32_t max_payload
    cdef readonly str protocol
    cdef int _proto

    def __cinit__(self):
        self._c = NULL

    def __init__(self, Port port not None, threads=2, outstanding=16, protocol="bench",
                 max_payload=None):
        self._proto = _protocol_id(protocol)
        self.protocol = protocol
        self.threads = _u32_arg(threads, "threads", 1, FP_CREF_MAX_THREADS)
        self.outstanding = _u32_arg(outstanding, "outstanding", 1, FP_CREF_MAX_OUTSTANDING)
        if max_payload is None:
            max_payload = sizeof(SCANNER_NOTIFICATION) if self._proto == FP_PROTO_SCANNER else 65536
        self.max_payload = _u32_arg(max_payload, "max_payload", 1, FSIM_MAX_MESSAGE)
        self.port = port

    def __dealloc__(self):
        cdef fp_cref *c = self._c
        self._c = NULL
        if c is not NULL:
            with nogil:
                fp_cref_destroy(c)

    @property
    def running(self):
        """True while at least one thread serves."""
        cdef fp_cref_stats s
        if self._c is NULL:
            return False
        fp_cref_stats_get(self._c, &s)
        return s.threads_running > 0

    def start(self):
        """Start serving."""
        if self.running:
            raise RuntimeError("the C reference client is already running")
        if self.port is None:  # made with CReference.__new__
            raise RuntimeError("this CReference was not initialised: make one with "
                               "CReference(port, ...)")
        cdef void *h = self.port._handle()
        cdef fp_cref *old = self._c
        self._c = NULL
        cdef fp_cref *c = NULL
        cdef int32_t hr
        with nogil:
            if old is not NULL:
                fp_cref_destroy(old)
            hr = fp_cref_start(h, self.threads, self.outstanding, self._proto,
                               self.max_payload, &c)
        if hr == FP_E_OUTOFMEMORY:
            raise MemoryError("fp_cref_start: out of memory (or threads)")
        _check_hr(hr, "fp_cref_start")
        self._c = c
        return self

    def stop(self):
        """Stop serving and wait for the threads (the counters stay readable)."""
        cdef fp_cref *c = self._c
        if c is NULL:
            return
        with nogil:
            fp_cref_stop(c)
            fp_cref_join(c)

    @property
    def stats(self):
        """received, replied, no_reply, late (ERROR_FLT_NO_WAITER_FOR_REPLY), truncated, errors,
        batches, last_error, threads_running."""
        cdef fp_cref_stats s
        if self._c is NULL:
            return {"received": 0, "replied": 0, "no_reply": 0, "late": 0, "truncated": 0,
                    "errors": 0, "batches": 0, "last_error": 0, "threads_running": 0}
        fp_cref_stats_get(self._c, &s)
        return {"received": s.received, "replied": s.replied, "no_reply": s.no_reply,
                "late": s.late, "truncated": s.truncated, "errors": s.errors,
                "batches": s.batches, "last_error": <uint32_t>s.last_error,
                "threads_running": s.threads_running}

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return (f"<CReference {self.protocol} threads={self.threads} "
                f"outstanding={self.outstanding} running={self.running}>")


# ---- the protocols' expected answers, for handlers and tests written in Python ----

def _bench_checksum(data, length=None):
    """bench checksum: sum of (i+1) * w[i] mod 2**32 over the little-endian 32-bit words of the
    first `length` bytes of `data` (default: all), zero-padded to whole words."""
    cdef Py_buffer buf
    PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
    cdef uint32_t n
    try:
        if length is None:
            if <size_t>buf.len > 0xFFFFFFFFu:
                raise ValueError("data is too long")
            n = <uint32_t>buf.len
        else:
            n = _u32_arg(length, "length", 0, <uint32_t>min(buf.len, 0xFFFFFFFF))
        return bench_checksum(buf.buf, n)
    finally:
        PyBuffer_Release(&buf)


def _bench_expected_reply(data):
    """(checksum, verdict) a correct service answers to the bench payload `data` (the bytes
    after the message header; its `length` field bounds the checksum, clamped to len(data))."""
    cdef Py_buffer buf
    PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
    cdef const uint8_t *p
    cdef uint32_t n
    try:
        if buf.len < BENCH_HEADER_BYTES:
            raise ValueError(f"a bench payload has at least {BENCH_HEADER_BYTES} bytes, got {buf.len}")
        if <size_t>buf.len > 0xFFFFFFFFu:
            raise ValueError("data is too long")
        p = <const uint8_t *>buf.buf
        n = bench_load_le32(p + 8)  # length
        if n > <uint32_t>buf.len:
            n = <uint32_t>buf.len
        return bench_checksum(p, n), bench_verdict(bench_load_le32(p + 12))
    finally:
        PyBuffer_Release(&buf)


def _scanner_expected_reply(data):
    """SafeToOpen (0 or 1) a correct service answers to the SCANNER_NOTIFICATION `data`."""
    cdef Py_buffer buf
    PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
    cdef uint32_t n
    cdef const uint8_t *p
    try:
        if buf.len < 8:
            raise ValueError(f"a SCANNER_NOTIFICATION has at least 8 bytes, got {buf.len}")
        p = <const uint8_t *>buf.buf
        n = bench_load_le32(p)  # BytesToScan
        if n > 1024:
            n = 1024
        if n > buf.len - 8:
            n = <uint32_t>(buf.len - 8)
        return 1 if scanner_find_foul(p + 8, n) < 0 else 0
    finally:
        PyBuffer_Release(&buf)
