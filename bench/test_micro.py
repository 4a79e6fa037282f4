"""Micro-benchmarks (pytest-benchmark): `pytest bench/ --benchmark-only`.

CI runs them once with --benchmark-disable so they cannot rot; numbers come from a real run.
The kernel side is the C load-generating driver on a background thread, so there is always a
message to get.
"""
import itertools
import os
import threading

import pytest

import fastport
from fastport import _ext, protocols
from fastport.pump import Pump
from fastport.sim import FilterManager

_ids = itertools.count()


@pytest.fixture
def loaded_port():
    """An inproc port with the C driver keeping 64 messages in flight on it."""
    name = f"\\micro-{os.getpid()}-{next(_ids)}"
    with FilterManager("inproc") as fm:
        server = fm.create_port(name)
        port = fastport.connect(name)
        client = server.clients[0]
        driver = threading.Thread(
            target=_ext._run_driver, args=(client,),
            # 64 in flight from one thread (asynchronous sends): the driver's cost stays small
            kwargs=dict(senders=1, inflight=64, payload_min=1024, seconds=600, timeout=30.0),
            daemon=True)
        driver.start()
        yield port
        client.close()  # ends the driver: its senders see the disconnect
        driver.join(30)
        port.close()


@pytest.fixture
def proto():
    return protocols.bench(1024)


def test_get_reply_round_trip(benchmark, loaded_port, proto):
    port = loaded_port
    size = 16 + proto.message.itemsize
    reply_for = proto.reply_for

    def round_trip():
        m = port.get_message(size=size, timeout=5)
        port.reply_message(m.message_id, reply_for(bytes(m.data)))

    benchmark(round_trip)


def test_batch_creation_and_views(benchmark, loaded_port, proto):
    with Pump(loaded_port, message=proto.message, reply=proto.reply, batch=64) as pump:
        def next_batch():
            b = pump._next(timeout=5)
            views = (b.headers, b.messages, b.replies, b.payload)
            b.release()  # default replies from C
            return len(views)

        benchmark(next_batch)


def test_default_fill(benchmark, loaded_port, proto):
    """A batch no handler answered: release() fills every reply with default_reply in C."""
    with Pump(loaded_port, message=proto.message, reply=proto.reply, batch=64,
              default_reply=b"\x01" * proto.reply.itemsize) as pump:
        def default_batch():
            b = pump._next(timeout=5)
            b.release()
            return len(b)

        assert benchmark(default_batch) >= 1


def test_reply_copy(benchmark, loaded_port, proto):
    """The handler's replies written into the batch's reply array, then sent: the copy a batch
    handler pays beside its own computation."""
    with Pump(loaded_port, message=proto.message, reply=proto.reply, batch=64) as pump:
        def copy_and_reply():
            b = pump._next(timeout=5)
            r = b.replies
            r["checksum"] = b.messages["seq"]  # one vectorised copy per field
            r["verdict"] = 0
            b.reply()
            b.release()
            return len(b)

        assert benchmark(copy_and_reply) >= 1


def test_slot_hold_acquire_release(benchmark, loaded_port, proto):
    with Pump(loaded_port, message=proto.message, reply=proto.reply, batch=64) as pump:
        b = pump._next(timeout=5)

        def hold_and_drop():
            v = b.payload  # takes a hold on the chunk (the view's base)
            del v          # drops it

        benchmark(hold_and_drop)
        b.release()


def test_reply_batch_send(benchmark, loaded_port, proto):
    handler = proto.batch_handler()
    with Pump(loaded_port, message=proto.message, reply=proto.reply, batch=64) as pump:
        def handle_batch():
            b = pump._next(timeout=5)
            handler(b)  # numpy verdicts + batch.reply(): one backend call
            b.release()
            return len(b)

        n = benchmark(handle_batch)
        assert n >= 1
    s = pump.stats  # after stop: the reply threads have sent everything
    assert s["errors"] == 0 and s["replied"] >= 1
