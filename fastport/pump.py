"""The message pump: C worker threads get and reply without the GIL; Python sees batches.

    with fastport.Pump(port, message=SCANNER_NOTIFICATION, reply=SCANNER_REPLY) as pump:
        for batch in pump:                      # or pump.run(handler), or `async for`
            batch.replies["SafeToOpen"] = verdicts(batch.messages)
            batch.reply()

Every received message gets exactly one reply: the handler's, or default_reply from C when the
handler leaves it unanswered (at release), raises (on_error), misses the deadline, or the pump
stops. Views are zero-copy over the pump's slab; a view kept past its batch keeps that batch's
slots out of circulation (never recycled under it) until the view is garbage.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import numbers
import sys
import threading
import weakref
from typing import Any, AsyncIterator, Callable, Iterator, Optional, Union

import numpy as np

from fastport import _ext
from fastport._ext import STOP_TIMEOUT, Batch, _PumpCore, _Source

__all__ = ["Pump", "Batch", "STOP_TIMEOUT"]

_log = logging.getLogger("fastport.pump")

# the C pump's limits (src/pump/pump.h)
_LIMITS = {"threads": 1024, "reply_threads": 1024, "outstanding": 65536, "batch": 65536}

# seconds a waiter thread (see _WaiterThread) blocks in C before it looks whether its `async for`
# loop is still there
_WAITER_SLICE_S = 0.1


def _fd_wakeup() -> bool:
    """Whether the pump's wake-up is an fd an event loop can watch (POSIX). On Windows it is a
    HANDLE, and even the selector loop watches sockets only: `async for` uses a waiter thread."""
    return sys.platform != "win32" and hasattr(_ext, "_pump_fd")


class Pump(_PumpCore):
    """Serve `port` with C threads that keep `threads * outstanding` gets in flight at all times.

    message, reply: numpy dtypes of the payloads (headers excluded; see fastport.dtypes).
    batch: most messages per batch (a batch is a run of consecutive slots of the slab: messages
    that arrived together). deadline: seconds after receipt when C answers an unanswered message
    with default_reply (None = never), so a hung handler cannot stall the kernel; its late answer
    is counted (stats['late_python']), not sent. With a deadline the pump also never stops
    receiving: when every chunk of its slab is busy (batches or views kept alive, a handler far
    behind) new messages are answered with default_reply at once (stats['defaulted_overflow'],
    logged once); without one it applies backpressure (messages wait in the kernel).
    on_full: what a message that finds the slab full meets, apart from the deadline: "default"
    (answered with default_reply at once, as above) or "wait" (backpressure); None: the source's
    choice when it has one (a fanotify port's is "default": a stalled group would stall every
    open on the marked paths), else "default" with a deadline and "wait" without.
    default_reply: bytes, a record, or None: the source's own default when it has one (a
    fanotify port's is ALLOW: fail open), else zeros. on_error: what a handler exception does in
    run(): "default" logs it and goes on, "raise" stops the pump and re-raises; either way its
    unanswered messages get default_reply. reply_threads: C threads that send the replies
    batch.reply() queues (None = `threads`; 0 = batch.reply() sends them itself before
    returning); at low load (at most 8 replies, nothing queued, a port whose replies need no
    round trip: not the emulator's socket transport) batch.reply() sends them itself, as a
    hand-off would add latency. consumer_reap: a consumer waiting for its next batch receives
    itself when no worker is doing so (one thread hand-off less per message at low load);
    False leaves all receiving to the worker threads.

    A context manager: entering starts the workers, leaving stops them (every received message
    is answered, every thread joined; bounded by STOP_TIMEOUT, see stop()). A pump nobody
    refers to any more is stopped and freed when it is collected, as is its port when nothing
    else refers to it.

    Several consumers may share one pump: threads iterating it (each gets its own batches, and
    each `__next__` releases only the previous batch of its own thread), threads in run(), and
    any number of `pump.batches()` loops on one or several event loops.

    fork(): a pump belongs to the process that made it. In a child forked from that process
    every use of it (iterating, run(), stop(), a batch's reply() or release()) raises
    RuntimeError at once, and collecting it there frees nothing (its threads, slab and port
    connection go on in the parent, undisturbed)."""

    on_error = "default"

    def __init__(
        self,
        port: _Source,
        *,
        message: Any,
        reply: Any,
        threads: int = 2,
        outstanding: int = 8,
        batch: int = 256,
        deadline: Optional[float] = None,
        default_reply: Any = None,
        on_error: str = "default",
        reply_threads: Optional[int] = None,
        consumer_reap: bool = True,
        on_full: Optional[str] = None,
    ) -> None:
        if on_error not in ("default", "raise"):
            raise ValueError(f"on_error must be 'default' or 'raise', not {on_error!r}")
        if reply_threads is None:
            reply_threads = threads
        if default_reply is None:
            default_reply = getattr(port, "default_reply", None)
        if on_full is None:
            on_full = getattr(port, "on_full", None) or ("wait" if deadline is None else "default")
        for name, value in (("threads", threads), ("outstanding", outstanding), ("batch", batch),
                            ("reply_threads", reply_threads)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            value = int(value)
            low = 0 if name == "reply_threads" else 1
            high = _LIMITS[name]
            if value < low or value > high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")
        super().__init__(port, message, reply, int(threads), int(outstanding), int(batch),
                         deadline, default_reply, int(reply_threads), bool(consumer_reap),
                         on_full)
        self.on_error = on_error
        # per thread: a weak reference to the batch its `for b in pump` handed out last (weak:
        # a strong one would make a cycle pump -> batch -> cached view -> pump, which the GC
        # cannot see through numpy arrays, and leak the pump, its slab and its port)
        self._current = threading.local()
        # per event loop: the futures of the batches() loops waiting on the pump's fd (one
        # reader per loop and fd: a second add_reader would replace the first)
        self._waiters: dict[asyncio.AbstractEventLoop, set[asyncio.Future[None]]] = {}

    # -- lifetime --
    def __enter__(self) -> "Pump":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release_current()
        self.stop()

    def _release_current(self) -> None:
        ref = getattr(self._current, "batch", None)
        if ref is not None:
            self._current.batch = None
            b = ref()
            if b is not None:
                b.release()

    # -- consuming --
    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        """The next batch; the previous one this thread took by iterating is released first."""
        self._release_current()
        b = self._next()  # no timeout: a Batch, or StopIteration / PortError
        assert b is not None
        self._current.batch = weakref.ref(b)
        return b

    def run(self, handler: Callable[[Any], Any], *, per_message: bool = False) -> None:
        """Call handler(batch) for every batch until the pump stops (stop() from any thread or
        the handler, Ctrl-C, or a port failure, which raises PortError after draining).

        per_message=True: handler(record) per message instead, returning a reply (a record of the
        reply dtype, bytes, or None for default_reply); the replies are sent per batch.
        In batch mode the handler sends with batch.reply(); whatever it leaves unanswered gets
        default_reply when it returns. In per-message mode a message whose handler call raises
        (or returns a record of another structured dtype: TypeError) gets default_reply alone;
        the others keep their replies (with on_error="raise", those judged before it).
        The handler is called synchronously: an `async def` handler is refused (TypeError);
        use `async for batch in pump.batches()` on an event loop instead."""
        if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
                getattr(handler, "__call__", None)):
            raise TypeError(f"run() calls the handler synchronously, so {handler!r} (async) "
                            "would never be awaited: use `async for batch in pump.batches()`")

        def log(e: BaseException) -> None:
            _log.error("pump handler raised; its batch got default replies", exc_info=e)

        self._run(handler, bool(per_message), self.on_error == "raise", log)

    def __aiter__(self) -> AsyncIterator[Batch]:
        """`async for batch in pump:` = `async for batch in pump.batches():`."""
        return self.batches()

    async def batches(self) -> AsyncIterator[Batch]:
        """`async for batch in pump.batches():` on the running event loop. Each batch is released
        when the loop body moves on. Several such loops may share the pump, on one event loop or
        several: each gets its own batches, and all end when the pump stops.

        How the loop is woken: on POSIX through the pump's event fd (add_reader, no polling); on
        loops without add_reader (Windows's default ProactorEventLoop) and on Windows, by a
        thread of this loop's own that waits for the next batch in C, without the GIL, and hands
        it over with call_soon_threadsafe. The thread ends with the loop (the pump stops, or the
        `async for` is left); a batch it took that the loop no longer wants is released (its
        messages get default_reply), so every message is still answered once."""
        loop = asyncio.get_running_loop()
        fd = _ext._pump_fd(self) if _fd_wakeup() else None
        waiter: Optional[_WaiterThread] = None
        try:
            while True:
                if waiter is not None:
                    b = await waiter.next()
                    if b is None:
                        return
                else:
                    try:
                        b = self._try_next()
                    except StopIteration:
                        return
                    if b is None:
                        try:
                            if fd is None:
                                raise NotImplementedError
                            await self._readable(loop, fd)
                        except NotImplementedError:  # no add_reader on this loop
                            waiter = _WaiterThread(self, loop)
                        continue
                try:
                    yield b
                finally:
                    b.release()
        finally:
            if waiter is not None:
                waiter.close()

    async def _readable(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        """Waits until the pump's fd is readable (level-triggered: a batch is ready, or the pump
        ended). One reader per loop wakes every loop waiting there; each then tries to take a
        batch, and those that find none wait again. NotImplementedError: the loop has no
        add_reader."""
        ready: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters.get(loop)
        if waiters is None:
            waiters = set()
            loop.add_reader(fd, _wake_all, waiters)
            self._waiters[loop] = waiters
        waiters.add(ready)
        try:
            await ready
        finally:
            waiters.discard(ready)
            if not waiters and self._waiters.get(loop) is waiters:
                del self._waiters[loop]
                loop.remove_reader(fd)

    def __repr__(self) -> str:
        s = self.stats
        return (f"<Pump {self.port!r} received={s['received']} replied={s['replied']} "
                f"defaulted={s['defaulted']}>")


def _wake_all(waiters: "set[asyncio.Future[None]]") -> None:
    for f in waiters:
        if not f.done():
            f.set_result(None)


class _WaiterThread:
    """Takes batches for one `async for` loop on an event loop it cannot wake through an fd:
    asked for a batch (next()), its thread waits for one in C (fp_pump_next, without the GIL)
    and hands it to the loop with call_soon_threadsafe. A batch the loop no longer wants (its
    wait was cancelled, the loop closed) is released: default replies, answered once all the
    same. The thread ends when the pump stops or fails (next() then returns None or raises the
    PortError), soon after close(), or when its event loop is closed."""

    def __init__(self, pump: Pump, loop: asyncio.AbstractEventLoop) -> None:
        self._pump = pump
        self._loop = loop
        self._asked = threading.Semaphore(0)
        self._future: Optional[asyncio.Future[Optional[Batch]]] = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="fastport-async-waiter",
                                        daemon=True)
        self._thread.start()

    async def next(self) -> Optional[Batch]:
        """The next batch, or None once the pump has stopped."""
        if not self._thread.is_alive():  # it saw the end already
            return None
        fut: asyncio.Future[Optional[Batch]] = self._loop.create_future()
        self._future = fut
        self._asked.release()
        return await fut

    def close(self) -> None:
        """The loop is done: the thread ends at once if idle, else within a slice."""
        self._closed = True
        self._asked.release()

    def _run(self) -> None:
        while True:
            # between batches: also gone when the loop closed without finalizing its `async for`
            while not self._asked.acquire(timeout=_WAITER_SLICE_S):
                if self._loop.is_closed():
                    return
            if self._closed:
                return
            fut = self._future
            assert fut is not None
            result: Union[Batch, BaseException, None]
            try:
                result = None
                while not self._closed and not self._loop.is_closed():
                    result = self._pump._next(_WAITER_SLICE_S)
                    if result is not None:
                        break
            except StopIteration:
                result = None
            except BaseException as e:  # PortError: the pump failed
                result = e
            if result is None and self._closed:
                return
            try:
                self._loop.call_soon_threadsafe(_hand_over, fut, result)
            except RuntimeError:  # the loop is closed: nobody will take it
                if isinstance(result, Batch):
                    result.release()
            if result is None or isinstance(result, BaseException):
                return  # the end: the pump stopped or failed


def _hand_over(fut: "asyncio.Future[Optional[Batch]]",
               result: "Union[Batch, BaseException, None]") -> None:
    if fut.done():  # cancelled, or the loop is gone
        if isinstance(result, Batch):
            result.release()
    elif isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)
