"""The pump as users misuse it (issue 13): several consumers of one pump, lifetimes without
`with`, per-message handlers that raise or return the wrong record, configuration mistakes, and
the `stats` keys; on both transports. Every test waits on observable state, never on time."""
import ast
import asyncio
import gc
import inspect
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

import fastport
from fastport import _ext
from fastport import status
from fastport.pump import Pump
from pumpkit import DEFAULT, MSG, REP, expected, in_thread
from pumpkit import good_handler as verdicts
from waiting import wait_for

LIMIT = 1 << 20  # FSIM_MAX_MESSAGE: payload bytes of one reply on either transport


def verdict_of(rec):
    return expected(int(rec["sender"]), int(rec["seq"]))


def send_each(server, client, senders, per_sender=1, timeout=10):
    """`senders` kernel-side threads, each sending `per_sender` messages (sender k, seq i)."""
    results = {}

    def send(k):
        results[k] = [server.send(client, struct.pack("<II", k, i) + bytes(56), reply_length=8,
                                  timeout=timeout) for i in range(per_sender)]

    threads = [threading.Thread(target=send, args=(k,), daemon=True) for k in range(senders)]
    for t in threads:
        t.start()
    return threads, results


def join_all(threads, timeout=30):
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a thread hung"


# ---- 1. one pump, several consumers ----

def test_a_second_iterating_thread_does_not_release_the_first_ones_batch(served):
    server, client, port = served
    with Pump(port, message=MSG, reply=REP, threads=1, batch=1, default_reply=DEFAULT) as pump:
        first, r1 = send_each(server, client, 1)
        mine = next(iter(pump))  # held by this thread, not answered yet

        def other():
            for b in pump:  # its first __next__ must not touch this thread's batch
                verdicts(b)
                break

        t, box = in_thread(other)
        second, r2 = send_each(server, client, 1)
        join_all(second + [t])
        assert "error" not in box
        verdicts(mine)
        join_all(first)
    s = pump.stats  # stopped: every send has been counted (a reply thread counts after it)
    assert r1[0][0].reply == expected(0, 0)
    assert r2[0][0].reply == expected(0, 0)
    assert s["defaulted"] == 0 and s["late_python"] == 0 and s["replied"] == 2


def test_two_threads_iterating_under_load_lose_no_verdict(served):
    server, client, port = served
    with Pump(port, message=MSG, reply=REP, threads=2, batch=4, default_reply=DEFAULT) as pump:
        def consume():
            for b in pump:
                verdicts(b)

        consumers = [in_thread(consume) for _ in range(2)]
        senders, results = send_each(server, client, 6, 100)
        join_all(senders)
        pump.stop()
        join_all([t for t, _ in consumers])
        assert all("error" not in box for _, box in consumers)
        s = pump.stats
    for k, out in results.items():
        assert [r.reply for r in out] == [expected(k, i) for i in range(100)]
    assert s["defaulted"] == 0 and s["replied"] == 600


def test_two_async_loops_on_one_event_loop_both_receive(served):
    server, client, port = served
    counts = [0, 0]

    async def main(pump):
        got = [asyncio.Event(), asyncio.Event()]

        async def consume(k):
            async for b in pump.batches():
                got[k].set()
                await got[1 - k].wait()  # keep this batch until the other loop has one too
                verdicts(b)
                counts[k] += len(b)

        tasks = [asyncio.create_task(consume(k)) for k in (0, 1)]
        await asyncio.sleep(0)  # (no time: both tasks run up to waiting for their first batch)
        senders, results = send_each(server, client, 2, 10, timeout=5)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.run_in_executor(None, join_all, senders), 30)
        pump.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        return results

    with Pump(port, message=MSG, reply=REP, threads=1, batch=1, default_reply=DEFAULT) as pump:
        results = asyncio.run(main(pump))
    for k, out in results.items():
        assert [r.reply for r in out] == [expected(k, i) for i in range(10)]
    assert counts[0] >= 1 and counts[1] >= 1 and sum(counts) == 20


def test_two_async_loops_both_end_on_stop(served):
    _, _, port = served

    async def main(pump):
        async def consume():
            async for _ in pump.batches():
                pass

        tasks = [asyncio.create_task(consume()) for _ in range(2)]
        await asyncio.sleep(0)  # (no time: both tasks are now waiting on the pump's fd)
        pump.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

    with Pump(port, message=MSG, reply=REP) as pump:
        asyncio.run(main(pump))


# ---- 2. lifetimes ----

def _lifetime(fm, port_name, stop):
    server = fm.create_port(port_name)
    gc.collect()
    before = _ext.debug_counters()
    port = fastport.connect(port_name)
    client = server.clients[0]
    senders, results = send_each(server, client, 1)
    pump = Pump(port, message=MSG, reply=REP, threads=1, batch=1)
    pump.start()
    for b in pump:
        assert b.messages["sender"][0] == 0  # a view, cached by the batch
        verdicts(b)
        break
    join_all(senders)
    if stop:
        pump.stop()
    del pump, b, port
    gc.collect()
    after = _ext.debug_counters()
    assert after["pumps_live"] == before["pumps_live"]
    assert (after["slabs_allocated"] - before["slabs_allocated"]
            == after["slabs_freed"] - before["slabs_freed"] == 1)
    wait_for(lambda: not server.clients, "the port to be closed (it disconnects)")
    assert results[0][0].reply == expected(0, 0)


def test_breaking_out_after_a_view_then_stop_frees_pump_slab_and_port(fm, port_name):
    _lifetime(fm, port_name, stop=True)


def test_a_pump_dropped_without_stop_is_stopped_and_freed(fm, port_name):
    _lifetime(fm, port_name, stop=False)


# ---- 3. per-message mode ----

def _batched(server, client, pump, n):
    """n messages received before the handler runs, so they make one batch."""
    senders, results = send_each(server, client, n)
    wait_for(lambda: pump.stats["received"] == n, "the messages to arrive")
    return senders, results


def test_per_message_a_raising_message_alone_gets_default_reply(served, caplog):
    server, client, port = served

    def each(rec):
        if rec["sender"] == 2:
            raise ValueError("cannot judge this one")
        return verdict_of(rec)

    with Pump(port, message=MSG, reply=REP, threads=1, batch=8, default_reply=DEFAULT) as pump:
        senders, results = _batched(server, client, pump, 5)
        runner, box = in_thread(pump.run, each, per_message=True)
        join_all(senders)
        pump.stop()
        join_all([runner])
        s = pump.stats
    assert "error" not in box
    assert s["batches"] == 1  # (the point: one batch holds the raising message and the others)
    for k, out in results.items():
        assert out[0].reply == (DEFAULT if k == 2 else expected(k, 0))
    assert s["defaulted_error"] == 1 and s["replied"] == 4
    assert "cannot judge this one" in caplog.text


def test_per_message_raise_mode_keeps_the_verdicts_given_before(served):
    server, client, port = served
    seen = []

    def each(rec):
        seen.append(int(rec["sender"]))
        if len(seen) == 3:
            raise ValueError("third")
        return verdict_of(rec)

    with Pump(port, message=MSG, reply=REP, threads=1, batch=8, default_reply=DEFAULT,
              on_error="raise") as pump:
        senders, results = _batched(server, client, pump, 5)
        with pytest.raises(ValueError, match="third"):
            pump.run(each, per_message=True)
        join_all(senders)
    for k, out in results.items():
        judged = k in seen[:2]
        assert out[0].reply == (expected(k, 0) if judged else DEFAULT)


def test_per_message_record_of_another_dtype_is_refused(served):
    server, client, port = served
    swapped = np.dtype([("b", "<u4"), ("a", "<u4")])  # same size, fields in another order

    def each(rec):
        out = np.zeros(1, dtype=swapped)[0]
        out["a"], out["b"] = 1, 2
        return out

    with Pump(port, message=MSG, reply=REP, default_reply=DEFAULT, on_error="raise") as pump:
        runner, box = in_thread(pump.run, each, per_message=True)
        senders, results = send_each(server, client, 1)
        join_all(senders)
        pump.stop()
        join_all([runner])
    assert isinstance(box.get("error"), TypeError)
    assert "dtype" in str(box["error"])
    assert results[0][0].reply == DEFAULT


# ---- 6. configuration mistakes ----

def test_reply_dtype_over_the_transport_limit_is_refused(served):
    _, _, port = served
    with pytest.raises(ValueError, match="reply dtype is .* bytes; the limit is"):
        Pump(port, message=MSG, reply=np.dtype((np.uint8, LIMIT + 1)))
    Pump(port, message=MSG, reply=np.dtype((np.uint8, LIMIT)), threads=1, outstanding=1,
         batch=1).stop()


@pytest.mark.parametrize("per_message", [False, True])
def test_async_handler_is_refused(served, per_message):
    server, client, port = served

    async def handler(batch):
        verdicts(batch)

    class Callable:
        async def __call__(self, batch):
            verdicts(batch)

    with Pump(port, message=MSG, reply=REP, default_reply=DEFAULT) as pump:
        senders, results = send_each(server, client, 1)
        for h in (handler, Callable()):
            runner, box = in_thread(pump.run, h, per_message=per_message)
            runner.join(10)
            if runner.is_alive():
                pump.stop()
            join_all([runner])
            assert isinstance(box.get("error"), TypeError)
            assert "async" in str(box["error"])
        assert pump.stats["batches"] == 0  # refused before it took a batch
        for b in pump:
            verdicts(b)
            break
        join_all(senders)
    assert results[0][0].reply == expected(0, 0)


@pytest.mark.parametrize("n", [1, 20])  # replies sent inline (<= 8), and queued
def test_reply_on_a_disconnected_port_is_the_same_whatever_the_size(served, n):
    server, client, port = served
    with Pump(port, message=MSG, reply=REP, threads=1, batch=32) as pump:
        senders, results = _batched(server, client, pump, n)
        batch = next(pump)
        assert len(batch) == n
        client.close()
        join_all(senders)
        wait_for(lambda: pump.stats["inflight"] == 0, "the pump to see the disconnect")
        batch.replies["a"] = 1
        assert batch.reply() == n  # no exception: the outcome goes to the stats
        wait_for(lambda: pump.stats["errors"] + pump.stats["late_replies"] >= n,
                 "the failed sends to be counted")
        batch.release()
        with pytest.raises(status.PortDisconnected):
            next(pump)
    for out in results.values():
        assert out[0].status == status.STATUS_PORT_DISCONNECTED


# ---- 13. stats, documented ----

def _stub_typed_dict(name):
    tree = ast.parse((Path(_ext.__file__).parent / "_ext.pyi").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return [n.target.id for n in node.body if isinstance(n, ast.AnnAssign)]
    raise AssertionError(f"{name} not in _ext.pyi")


def test_stats_keys_are_documented_and_typed(served):
    _, _, port = served
    with Pump(port, message=MSG, reply=REP) as pump:
        s = pump.stats
    keys = list(s)
    assert _stub_typed_dict("PumpStats") == keys
    assert _stub_typed_dict("PumpLatency") == list(s["latency_us"])
    doc = inspect.getdoc(type(pump).stats)
    for k in keys + list(s["latency_us"]):
        assert f"{k} " in doc or f"{k}:" in doc, k
    for k in ("chunks_ready", "chunks_filling", "inflight", "posts", "reaps",
              "defaulted_overflow"):
        assert k in keys
