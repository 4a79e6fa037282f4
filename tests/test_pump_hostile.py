"""Hostile pump tests through the emulator (see src/tests/test_pump_hostile.c for the C side)."""
import asyncio
import select
import struct
import threading

from fastport import _ext
from fastport.pump import Pump
from pumpkit import MSG, REP
from waiting import wait_for


class CountingPump(Pump):
    tries = 0

    def _try_next(self):
        self.tries += 1
        return super()._try_next()


def test_event_fd_not_readable_once_deadline_freed_the_ready_chunk(served):
    """The event fd must be readable exactly while try_next would return a batch. A message the
    deadline answered before anyone took it leaves its chunk freed by the reaper, but the fd stays
    readable: `async for batch in pump.batches()` then spins (add_reader fires at once, try_next
    says None, again) until the next message."""
    server, client, port = served
    with CountingPump(port, message=MSG, reply=REP, threads=1, outstanding=2, batch=1,
                      deadline=0.02) as pump:
        fd = _ext._pump_fd(pump)  # the event loop consumer's fd exists before the message comes
        res = {}
        t = threading.Thread(target=lambda: res.setdefault(
            "r", server.send(client, struct.pack("<II", 1, 1) + bytes(56), reply_length=8,
                             timeout=5)))
        t.start()
        assert wait_for(lambda: pump.stats["defaulted_deadline"] == 1
                        and pump.stats["chunks_ready"] == 0)
        t.join()
        assert pump._try_next() is None
        readable = bool(select.select([fd], [], [], 0)[0])

        async def consume():
            async for _ in pump.batches():
                pass

        async def main():
            try:
                await asyncio.wait_for(consume(), 0.3)
            except asyncio.TimeoutError:
                pass

        pump.tries = 0
        asyncio.run(main())
        tries = pump.tries
    # the bug: readable with nothing to hand out, and so the event loop busy-loops; nothing
    # arrives in 0.3 s: one try, then a wait on the fd
    assert (readable, tries < 10) == (False, True), \
        f"fd readable {readable}, {tries} try_next calls while idle"
