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
import threading
import weakref
from typing import Any, AsyncIterator, Callable, Iterator, Optional

import numpy as np

from fastport._ext import STOP_TIMEOUT, Batch, _PumpCore, _Source

__all__ = ["Pump", "Batch", "STOP_TIMEOUT"]

_log = logging.getLogger("fastport.pump")

# the C pump's limits (src/pump/pump.h)
_LIMITS = {"threads": 1024, "reply_threads": 1024, "outstanding": 65536, "batch": 65536}


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
    ) -> None:
        if on_error not in ("default", "raise"):
            raise ValueError(f"on_error must be 'default' or 'raise', not {on_error!r}")
        if reply_threads is None:
            reply_threads = threads
        if default_reply is None:
            default_reply = getattr(port, "default_reply", None)
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
                         deadline, default_reply, int(reply_threads), bool(consumer_reap))
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
        """`async for batch in pump.batches():` on the running event loop, woken through the
        pump's event fd (no polling). Each batch is released when the loop body moves on.
        Several such loops may share the pump, on one event loop or several: each gets its own
        batches, and all end when the pump stops."""
        loop = asyncio.get_running_loop()
        fd = self._fd()
        while True:
            try:
                b = self._try_next()
            except StopIteration:
                return
            if b is None:
                await self._readable(loop, fd)
                continue
            try:
                yield b
            finally:
                b.release()

    async def _readable(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        """Waits until the pump's fd is readable (level-triggered: a batch is ready, or the pump
        ended). One reader per loop wakes every loop waiting there; each then tries to take a
        batch, and those that find none wait again."""
        ready: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters.get(loop)
        if waiters is None:
            waiters = self._waiters[loop] = set()
            loop.add_reader(fd, _wake_all, waiters)
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
