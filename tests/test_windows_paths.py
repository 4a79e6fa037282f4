"""The Python paths a Windows install takes, exercised on Linux where they can be (issue 11):
connect() through the FltLib calls (src/backends/port_fltlib.c over the emulator's Win32 face),
the backend choice and its errors with the platform checks patched, `import fastport.sim` on
Windows, and `async for` on an event loop without add_reader (Windows's ProactorEventLoop has
none): a waiter thread takes the batches. Every test waits on observable state, never on time."""
import asyncio
import importlib
import struct
import sys
import threading

import pytest

import fastport
import fastport.pump as fpump
from fastport import status
from fastport.pump import Pump
from pumpkit import DEFAULT, MSG, REP, expected, good_handler
from test_pump_consumers import join_all, send_each, wait_for


@pytest.fixture
def fltlib_served(fm, port_name):
    """A port on the emulator and a Port connected to it through the FltLib calls."""
    server = fm.create_port(port_name)
    port = fastport.connect(port_name, backend="fltlib")
    yield server, server.clients[0], port
    port.close()


# ---- connect() and the backends ----

def test_fltlib_port_gets_replies_sends_cancels_and_times_out(fm, port_name):
    server = fm.create_port(port_name, message_notify=lambda c, data, n: data[::-1][:n])
    with fastport.connect(port_name, backend="fltlib", context=b"ctx") as port:
        assert port.backend == "fltlib" and port.handle != 0
        client = server.clients[0]
        with pytest.raises(status.PortTimeout):
            port.get_message(timeout=0)
        assert port.send_message(b"abc", 8) == b"cba"
        t = threading.Thread(target=lambda: box.append(
            server.send(client, b"hello", reply_length=4, timeout=30)))
        box = []
        t.start()
        m = port.get_message()
        assert bytes(m.data) == b"hello" and m.wants_reply
        port.reply_message(m.message_id, b"ok!!", status=7)
        t.join(30)
        assert box[0].reply == b"ok!!" and box[0].reply_status == 7
        with pytest.raises(status.NoWaiterForReply):  # answered already: nobody waits
            port.reply_message(m.message_id, b"late")
        # a get pending in another thread ends with OperationAborted on cancel()
        got = {}

        def get():
            try:
                port.get_message()
            except BaseException as e:
                got["error"] = e

        port.cancel()  # nothing pending: not an error
        g = threading.Thread(target=get)
        g.start()
        for _ in range(30000):  # until the get has seen one (it may not have started yet)
            port.cancel()
            g.join(0.001)
            if not g.is_alive():
                break
        assert isinstance(got["error"], status.OperationAborted)
    assert port.closed
    wait_for(lambda: not server.clients, "the disconnect")


def test_fltlib_port_delivers_a_message_too_long_for_the_buffer(fltlib_served):
    server, client, port = fltlib_served
    t = threading.Thread(target=lambda: server.send(client, bytes(range(64)), reply_length=4,
                                                    timeout=30))
    t.start()
    with pytest.raises(status.BufferTooSmall) as e:
        port.get_message(size=16 + 10)
    assert bytes(e.value.message.data) == bytes(range(10))
    port.reply_message(e.value.message.message_id, b"1234")
    t.join(30)


def test_fltlib_connect_errors_carry_the_hresult(port_name):
    with pytest.raises(status.PortNotFound) as e:
        fastport.connect(port_name, backend="fltlib")
    assert e.value.hresult == 0x80070002
    with pytest.raises(ValueError, match="limit"):
        fastport.connect(port_name, backend="fltlib", context=bytes(65536))


def test_a_pump_over_a_fltlib_port_answers_every_message_once(fltlib_served):
    server, client, port = fltlib_served
    with Pump(port, message=MSG, reply=REP, default_reply=DEFAULT) as pump:
        senders, results = send_each(server, client, 4, 25)
        t = threading.Thread(target=pump.run, args=(good_handler,))
        t.start()
        join_all(senders)
        pump.stop()
        t.join(30)
    for k, out in results.items():
        assert [r.reply for r in out] == [expected(k, i) for i in range(25)]
    s = pump.stats
    assert s["replied"] == 100 and s["defaulted"] == 0


def test_windows_defaults_to_fltlib_and_refuses_sim(fm, port_name, monkeypatch):
    """What connect() does in the Windows build: no _connect_sim, the default is FltLib."""
    monkeypatch.setattr(fastport, "DEFAULT_BACKEND", "fltlib")
    monkeypatch.setattr(fastport, "_connect_sim", None)
    fm.create_port(port_name)
    with fastport.connect(port_name) as port:
        assert port.backend == "fltlib"
    with pytest.raises(ValueError, match="'sim'.* not available .*this build has 'fltlib'"):
        fastport.connect(port_name, backend="sim")
    with pytest.raises(ValueError, match="unknown backend 'nonsense'"):
        fastport.connect(port_name, backend="nonsense")


def test_the_default_backend_here_is_the_emulator(fm, port_name):
    fm.create_port(port_name)
    with fastport.connect(port_name) as port:
        assert port.backend == fastport.DEFAULT_BACKEND == "sim"
    assert set(fastport.BACKENDS) == {"sim", "fltlib"}


def test_fastport_sim_is_an_import_error_on_windows(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.delitem(sys.modules, "fastport.sim")  # restored afterwards
    with pytest.raises(ImportError, match="POSIX-only.*fastport.connect"):
        importlib.import_module("fastport.sim")


# ---- `async for` without add_reader ----

class NoReaderLoop(asyncio.SelectorEventLoop):
    """An event loop as Windows's ProactorEventLoop is to the pump: no add_reader."""

    def add_reader(self, *args, **kwargs):
        raise NotImplementedError


def run_no_reader(coro):
    loop = NoReaderLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())  # as asyncio.run does
        loop.close()


def waiter_threads():
    return [t for t in threading.enumerate() if t.name == "fastport-async-waiter"]


def wait_no_waiter_threads():
    for t in waiter_threads():
        t.join(30)
        assert not t.is_alive(), "a waiter thread outlived its loop"


@pytest.fixture(params=["no add_reader", "windows"])
def no_fd_loop(request, monkeypatch):
    """Runs a coroutine as Windows would: on a loop without add_reader, or (the Windows build,
    whose pump has no fd) with the fd wake-up turned off."""
    if request.param == "windows":
        monkeypatch.setattr(fpump, "_fd_wakeup", lambda: False)
        return asyncio.run
    return run_no_reader


def test_async_for_without_add_reader_answers_each_message_once(served, no_fd_loop):
    server, client, port = served
    counts = []
    waited = []

    async def main(pump):
        async for b in pump:
            waited.append(bool(waiter_threads()))
            good_handler(b)
            counts.append(len(b))
            if sum(counts) == 100:
                break

    with Pump(port, message=MSG, reply=REP, default_reply=DEFAULT) as pump:
        senders, results = send_each(server, client, 4, 25)
        no_fd_loop(main(pump))
        join_all(senders)
    wait_no_waiter_threads()
    assert any(waited), "the consumer waited in a waiter thread"  # 4 senders, 100 messages
    for k, out in results.items():
        assert [r.reply for r in out] == [expected(k, i) for i in range(25)]
    s = pump.stats
    assert s["replied"] == 100 and s["defaulted"] == 0 and s["late_python"] == 0


def test_async_for_without_add_reader_ends_on_stop(served, no_fd_loop):
    _, _, port = served

    async def count(pump):
        return len([b async for b in pump.batches()])

    async def main(pump):
        loops = [asyncio.create_task(count(pump)), asyncio.create_task(count(pump))]
        while len(waiter_threads()) < 2:  # both loops wait in their thread now
            await asyncio.sleep(0.001)
        pump.stop()
        assert await asyncio.wait_for(asyncio.gather(*loops), 30) == [0, 0]

    with Pump(port, message=MSG, reply=REP) as pump:
        no_fd_loop(main(pump))
    wait_no_waiter_threads()


def test_async_for_without_add_reader_raises_the_ports_failure(served, no_fd_loop):
    server, client, port = served

    async def main(pump):
        async for _ in pump:
            pass

    with Pump(port, message=MSG, reply=REP) as pump:
        server_side = threading.Thread(target=lambda: (wait_for(waiter_threads, "the waiter"),
                                                       client.close()))
        server_side.start()
        with pytest.raises(status.PortError):
            no_fd_loop(main(pump))
        server_side.join(30)
    wait_no_waiter_threads()


def test_a_cancelled_wait_ends_its_thread_and_loses_no_message(served, no_fd_loop):
    """The consumer gives up while its thread waits in C. A message that comes next is taken by
    that thread before it sees the end (then released: default_reply) or left to the pump (then
    answered at stop: default_reply): answered once either way, and the thread ends."""
    server, client, port = served

    async def main(pump):
        async def consume():
            async for b in pump:
                good_handler(b)

        task = asyncio.create_task(consume())
        while not waiter_threads():
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with Pump(port, message=MSG, reply=REP, default_reply=DEFAULT) as pump:
        no_fd_loop(main(pump))
        senders, results = send_each(server, client, 1, 1)
        wait_no_waiter_threads()
    join_all(senders)
    assert results[0][0].reply == DEFAULT
    s = pump.stats
    assert s["replied"] == 0 and s["defaulted"] == 1


def test_a_loop_closed_before_finalizing_its_async_for_leaves_no_thread(served):
    server, client, port = served
    loop = NoReaderLoop()

    async def main(pump):
        async def consume():
            async for b in pump:
                good_handler(b)
                return  # the generator is left for the loop to finalize: it never does

        task = asyncio.create_task(consume())
        while not waiter_threads():
            await asyncio.sleep(0.001)
        senders, results = send_each(server, client, 1, 1)
        await task
        return senders, results

    with Pump(port, message=MSG, reply=REP, default_reply=DEFAULT) as pump:
        senders, results = loop.run_until_complete(main(pump))
        loop.close()
        join_all(senders)
        wait_no_waiter_threads()
    assert results[0][0].reply == expected(0, 0)


def test_a_sync_fltlib_port_waits_without_an_overlapped(fm, port_name):
    """FLT_PORT_FLAG_SYNC_HANDLE: FilterGetMessage without an OVERLAPPED (the emulator refuses
    one on a sync handle, as it should); the data is the whole buffer."""
    server = fm.create_port(port_name)
    with fastport.connect(port_name, backend="fltlib", sync=True) as port:
        t = threading.Thread(target=lambda: box.append(
            server.send(server.clients[0], b"sync!", reply_length=1, timeout=30)))
        box = []
        t.start()
        m = port.get_message(size=16 + 8)
        assert bytes(m.data) == b"sync!\0\0\0"
        port.reply_message(m.message_id, b"y")
        t.join(30)
        assert box[0].reply == b"y"
