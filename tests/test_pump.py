"""The pump: correctness, lifetimes and shutdown, on both transports."""
import asyncio
import gc
import struct
import sys
import threading

import numpy as np
import pytest

from fastport import _ext
from fastport import status
from fastport.pump import Pump
from pumpkit import MSG, REP, expected, good_handler, in_thread
from waiting import interrupt_main_when, wait_for


def run_senders(server, client, n_senders, per_sender, timeout=30, reply_length=8):
    results = {}

    def send(k):
        out = []
        for i in range(per_sender):
            payload = struct.pack("<II", k, i) + bytes(56)
            out.append(server.send(client, payload, reply_length=reply_length, timeout=timeout))
        results[k] = out

    threads = [threading.Thread(target=send, args=(k,)) for k in range(n_senders)]
    for t in threads:
        t.start()
    return threads, results


def test_every_message_answered_once_with_its_own_reply(served):
    server, client, port = served
    with Pump(port, message=MSG, reply=REP, threads=2, outstanding=8, batch=64) as pump:
        runner, box = in_thread(pump.run, good_handler)
        senders, results = run_senders(server, client, 16, 500)
        for t in senders:
            t.join()
        pump.stop()
        runner.join(10)
        assert "error" not in box
    for k, out in results.items():
        for i, r in enumerate(out):
            assert r.status == status.STATUS_SUCCESS
            assert r.reply == expected(k, i)
    s = pump.stats
    assert s["received"] == 16 * 500
    assert s["replied"] == 16 * 500
    assert s["defaulted"] == 0 and s["late_replies"] == 0 and s["errors"] == 0
    assert s["batches"] >= 1 and s["mean_batch"] >= 1
    assert s["latency_us"]["count"] == 16 * 500
    assert 0 < s["latency_us"]["p50"] <= s["latency_us"]["p99"] <= s["latency_us"]["max"]


def test_batches_are_zero_copy_views_of_the_slab(served):
    server, client, port = served
    senders, results = run_senders(server, client, 4, 10)
    seen = []
    with Pump(port, message=MSG, reply=REP, threads=1, batch=16) as pump:
        lay = pump.layout
        assert lay["slab"] % 4096 == 0 and lay["replies"] % 4096 == 0
        assert lay["slot_size"] % 64 == 0 and lay["slot_size"] >= 16 + MSG.itemsize
        got = 0
        for batch in pump:
            h, m, r = batch.headers, batch.messages, batch.replies
            base = h.__array_interface__["data"][0]
            assert (base - lay["slab"]) % lay["slot_size"] == 0  # a run of slots of one chunk
            assert (base - lay["slab"]) % lay["chunk_bytes"] + len(batch) * lay["slot_size"] \
                <= lay["chunk_bytes"]
            assert lay["slab"] <= base < lay["slab"] + lay["slab_bytes"]
            assert m.__array_interface__["data"][0] == base + 16
            assert h.strides == m.strides == (lay["slot_size"],)
            rbase = r.__array_interface__["data"][0]
            assert lay["replies"] + 16 <= rbase < lay["replies"] + lay["replies_bytes"]
            assert r.strides == (lay["reply_stride"],)
            assert not m.flags.writeable and r.flags.writeable and not m.flags.owndata
            # the bytes in the slab are the bytes the kernel sent
            for i in range(len(batch)):
                assert bytes(m[i].tobytes()[:8]) == struct.pack("<II", m[i]["sender"], m[i]["seq"])
            assert (batch.lengths == 16 + MSG.itemsize).all()
            seen.append(base)
            good_handler(batch)
            got += len(batch)
            if got == 40:
                break
    for t in senders:
        t.join()
    assert all(r.reply == expected(k, i) for k, out in results.items()
               for i, r in enumerate(out))


def test_view_kept_past_its_batch_keeps_its_slots(served):
    server, client, port = served
    senders, _ = run_senders(server, client, 1, 3)
    # replies sent in place (no reply thread holding a batch for a moment): exact hold counts
    with Pump(port, message=MSG, reply=REP, threads=1, batch=1,
              reply_threads=0) as pump:
        it = iter(pump)
        batch = next(it)
        assert batch.exports == 0  # views are made on first use
        views = (batch.headers, batch.messages, batch.replies, batch.status, batch.lengths,
                 batch.receive_ns)
        assert batch.exports == 6 and batch.headers is views[0]  # cached
        del views
        kept = batch.messages
        hold = kept.base
        refs = sys.getrefcount(hold)
        extra = kept["seq"]  # a view of a view keeps its parent, and so the hold, alive
        assert extra.base is kept and sys.getrefcount(hold) == refs
        ref_kept = sys.getrefcount(kept)
        del extra
        assert sys.getrefcount(kept) == ref_kept - 1
        first = bytes(kept.tobytes())
        good_handler(batch)
        del batch
        nxt = next(it)  # releases the first batch: answered, but its slots stay held
        s = pump.stats
        assert s["chunks_held"] == 2
        good_handler(nxt)
        del nxt
        third = next(it)
        good_handler(third)
        assert bytes(kept.tobytes()) == first  # never recycled under the view
        assert pump.stats["chunks_held"] == 2
        del kept, hold
        gc.collect()
        assert pump.stats["chunks_held"] == 1  # only the current batch
        del third
    for t in senders:
        t.join()


def test_deadline_answers_for_a_hung_handler(served):
    server, client, port = served
    default = struct.pack("<II", 0xDEAD, 0xBEEF)
    release = threading.Event()

    def hung(batch):
        release.wait(10)
        batch.replies["a"] = 1
        batch.reply()  # too late: counted, not sent

    with Pump(port, message=MSG, reply=REP, threads=1, batch=4, deadline=0.05,
              default_reply=default) as pump:
        runner, box = in_thread(pump.run, hung)
        r = server.send(client, bytes(64), reply_length=8, timeout=5)
        assert r.status == status.STATUS_SUCCESS and r.reply == default
        release.set()
        wait_for(lambda: pump.stats["late_python"] == 1, "the late reply to be counted")
        pump.stop()
        runner.join(5)
    s = pump.stats
    assert s["defaulted_deadline"] == 1 and s["late_python"] == 1 and s["replied"] == 0


@pytest.mark.parametrize("on_error", ["default", "raise"])
def test_handler_exception_gets_default_reply(served, on_error):
    server, client, port = served
    default = struct.pack("<II", 7, 7)
    calls = []

    def bad(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("scanner crashed")
        good_handler(batch)

    with Pump(port, message=MSG, reply=REP, threads=1, batch=1,
              default_reply=default, on_error=on_error) as pump:
        runner, box = in_thread(pump.run, bad)
        first = server.send(client, struct.pack("<II", 1, 1) + bytes(56), reply_length=8,
                            timeout=5)
        assert first.reply == default
        if on_error == "default":
            second = server.send(client, struct.pack("<II", 2, 2) + bytes(56), reply_length=8,
                                 timeout=5)
            assert second.reply == expected(2, 2)
            pump.stop()
        runner.join(5)
        assert not runner.is_alive()
        if on_error == "raise":
            assert isinstance(box.get("error"), RuntimeError)
            # stopped: a new message is not served
            assert server.send(client, bytes(64), reply_length=8, timeout=0.2).status == \
                status.STATUS_TIMEOUT
        else:
            assert "error" not in box
    assert pump.stats["defaulted_error"] == 1


def test_stop_answers_messages_in_flight(served):
    server, client, port = served
    default = struct.pack("<II", 9, 9)
    started = threading.Event()

    def slow(batch):
        started.set()
        pump.stop()  # from the handler itself; the batch is answered with the default

    pump = Pump(port, message=MSG, reply=REP, threads=2, batch=8, default_reply=default)
    with pump:
        senders, results = run_senders(server, client, 4, 1, timeout=5)
        pump.run(slow)
        for t in senders:
            t.join()
    replies = [r for out in results.values() for r in out]
    assert started.is_set()
    # received messages got the default; any never received timed out in the kernel
    for r in replies:
        assert (r.status == status.STATUS_SUCCESS and r.reply == default) or \
            r.status == status.STATUS_TIMEOUT
    s = pump.stats
    assert s["received"] == s["defaulted"] + s["replied"]
    assert s["chunks_free"] == s["chunks_total"]


def test_disconnect_while_busy_ends_with_port_error(served):
    server, client, port = served
    busy, closed = threading.Event(), threading.Event()

    def handler(batch):  # the first batch is judged while the connection goes away
        busy.set()
        closed.wait(10)
        good_handler(batch)

    with Pump(port, message=MSG, reply=REP, threads=2) as pump:
        runner, box = in_thread(pump.run, handler)
        senders, results = run_senders(server, client, 4, 200, timeout=5)
        assert busy.wait(10)
        client.close()
        closed.set()
        for t in senders:
            t.join()
        runner.join(10)
        assert not runner.is_alive()
        assert isinstance(box.get("error"), status.PortDisconnected)
    for out in results.values():
        for r in out:
            assert r.status in (status.STATUS_SUCCESS, status.STATUS_PORT_DISCONNECTED)


def test_ctrl_c_stops_cleanly(served):
    server, client, port = served
    senders, results = run_senders(server, client, 2, 50, timeout=5)
    with Pump(port, message=MSG, reply=REP) as pump:
        t = interrupt_main_when(lambda: pump.stats["batches"] >= 1, pump.stop)  # while it runs
        try:
            with pytest.raises(KeyboardInterrupt):
                pump.run(good_handler)
        finally:
            t.finish()
        assert pump.stats["inflight"] == 0  # run() stopped the pump on its way out
    s = pump.stats
    assert s["received"] == s["replied"] + s["defaulted"]  # what it took, it answered
    port.close()  # the sends it never took end now
    for t in senders:
        t.join()
    answered = 0
    for out in results.values():
        for r in out:
            assert r.status in (status.STATUS_SUCCESS, status.STATUS_PORT_DISCONNECTED)
            answered += r.status == status.STATUS_SUCCESS
    assert answered == s["received"]


def test_ctrl_c_inside_the_handler_stops_the_pump(served):
    server, client, port = served
    default = struct.pack("<II", 5, 5)

    def interrupted(batch):
        raise KeyboardInterrupt

    with Pump(port, message=MSG, reply=REP, default_reply=default) as pump:
        sender = threading.Thread(target=lambda: results.append(
            server.send(client, bytes(64), reply_length=8, timeout=5)))
        results = []
        sender.start()
        with pytest.raises(KeyboardInterrupt):
            pump.run(interrupted)
        sender.join()
        assert results[0].reply == default  # answered, not left waiting
        with pytest.raises(StopIteration):  # and the pump is stopped
            pump._next(timeout=0.1)


def test_abandoned_pump_is_collected(served):
    server, client, port = served
    senders, _ = run_senders(server, client, 1, 2, timeout=5)
    gc.collect()
    before = _ext.debug_counters()["pumps_live"]
    pump = Pump(port, message=MSG, reply=REP, threads=1, batch=1)
    pump.start()
    next(pump)  # the pump now refers to its batch, which refers to the pump: a cycle
    del pump
    gc.collect()
    assert _ext.debug_counters()["pumps_live"] == before
    for t in senders:
        t.join()


def test_per_message_mode(served):
    server, client, port = served

    def each(rec):
        if rec["seq"] % 3 == 0:
            return None  # default
        if rec["seq"] % 3 == 1:
            return struct.pack("<II", rec["sender"] * 7 + 1, rec["seq"] ^ 0x5A5A5A5A)
        out = np.zeros((), dtype=REP)
        out["a"], out["b"] = rec["sender"] * 7 + 1, rec["seq"] ^ 0x5A5A5A5A
        return out

    default = struct.pack("<II", 1, 2)
    with Pump(port, message=MSG, reply=REP, default_reply=default) as pump:
        runner, box = in_thread(pump.run, each, per_message=True)
        senders, results = run_senders(server, client, 3, 30)
        for t in senders:
            t.join()
        pump.stop()
        runner.join(5)
    for k, out in results.items():
        for i, r in enumerate(out):
            assert r.reply == (default if i % 3 == 0 else expected(k, i))


def test_mask_and_no_reply_messages(served):
    server, client, port = served
    default = struct.pack("<II", 3, 3)
    with Pump(port, message=MSG, reply=REP, default_reply=default, batch=4, threads=1) as pump:
        notes = [threading.Thread(target=server.send, args=(client, bytes(64)),
                                  kwargs={"timeout": 5}) for _ in range(2)]
        senders, results = run_senders(server, client, 2, 1)
        for t in notes:
            t.start()
        got = 0
        left_one = False
        for batch in pump:
            wants = batch.headers["ReplyLength"] != 0
            batch.replies["a"] = batch.messages["sender"] * 7 + 1
            batch.replies["b"] = batch.messages["seq"] ^ 0x5A5A5A5A
            sel = wants.copy()
            if sel.any() and not left_one:
                sel[np.argmax(sel)] = False  # leave one (in all) for the default
                left_one = True
            batch.reply(mask=sel)
            assert batch.reply(mask=sel) == 0  # never twice
            got += len(batch)
            if got == 4:
                break
        batch.release()  # an unselected message gets its default at the latest now
        for t in notes + senders:
            t.join()
    replies = sorted(r.reply for out in results.values() for r in out)
    assert default in replies and len(replies) == 2
    s = pump.stats
    assert s["no_reply"] == 2 and s["replied"] == 1 and s["defaulted_release"] == 1


def test_asyncio_consumption(served):
    server, client, port = served
    senders, results = run_senders(server, client, 4, 25)

    async def main(pump):
        n = 0
        async for batch in pump.batches():
            good_handler(batch)
            n += len(batch)
            if n == 100:
                break
        return n

    with Pump(port, message=MSG, reply=REP) as pump:
        assert asyncio.run(main(pump)) == 100
    for t in senders:
        t.join()
    for k, out in results.items():
        assert [r.reply for r in out] == [expected(k, i) for i in range(25)]


def test_no_leak_over_a_long_loop(served):
    server, client, port = served

    def rss_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    with Pump(port, message=MSG, reply=REP, threads=2, batch=64) as pump:
        runner, box = in_thread(pump.run, good_handler)
        rounds = []
        for _ in range(4):
            senders, _ = run_senders(server, client, 8, 1000)
            for t in senders:
                t.join()
            gc.collect()
            rounds.append(rss_kib())
        pump.stop()
        runner.join(5)
        s = pump.stats
        assert s["chunks_free"] == s["chunks_total"] and s["chunks_held"] == 0
        assert s["received"] == s["replied"] == 32000
    # after warm-up, resident memory does not grow with the number of messages
    assert rounds[-1] - rounds[1] < 4096, rounds
    del pump, runner
    gc.collect()
    d = _ext.debug_counters()
    assert d["pumps_live"] == 0
    assert d["slabs_allocated"] == d["slabs_freed"]
    assert d["chunks_allocated"] == d["chunks_freed"]


def test_bad_configuration(served):
    _, _, port = served
    with pytest.raises(ValueError):
        Pump(port, message=MSG, reply=REP, threads=0)
    with pytest.raises(ValueError):
        Pump(port, message=MSG, reply=REP, batch=0)
    with pytest.raises(TypeError):
        Pump(port, message=MSG, reply=REP, outstanding="8")
    with pytest.raises(ValueError):
        Pump(port, message=MSG, reply=REP, on_error="ignore")
    with pytest.raises(ValueError):
        Pump(port, message=MSG, reply=REP, default_reply=b"x")
    with pytest.raises(ValueError):
        Pump(port, message=MSG, reply=REP, deadline=-1)
    with pytest.raises(TypeError):
        Pump(None, message=MSG, reply=REP)
    with pytest.raises(TypeError):
        Pump(port, message=np.dtype("O"), reply=REP)
    with pytest.raises(TypeError):
        Pump(port, message=None, reply=REP)
    with pytest.raises(ValueError):
        Pump(port, message=MSG, reply=REP, reply_threads=5000)
    with pytest.raises(TypeError):
        Pump(port, message=MSG, reply=REP, linger_us=50)  # gone: gets stay in flight
    with pytest.raises(ValueError, match="on_full"):
        Pump(port, message=MSG, reply=REP, on_full="drop")
    with pytest.raises(RuntimeError):
        Pump.__new__(Pump).stats


def test_on_full_follows_the_deadline_unless_chosen(served):
    """Backpressure without a deadline, answers at once with one; either can be chosen."""
    _, _, port = served
    for kw, want, slots in (({}, "wait", 0), ({"deadline": 1.0}, "default", 16),
                            ({"on_full": "default"}, "default", 16),
                            ({"deadline": 1.0, "on_full": "wait"}, "wait", 0)):
        pump = Pump(port, message=MSG, reply=REP, threads=2, outstanding=8, **kw)
        assert (pump.on_full, pump.layout["overflow_slots"]) == (want, slots), kw
        del pump


def test_a_pump_never_started_says_so(served):
    _, _, port = served
    pump = Pump(port, message=MSG, reply=REP)
    with pytest.raises(RuntimeError, match="not started"):
        next(iter(pump))
    with pytest.raises(RuntimeError, match="not started"):
        pump.run(good_handler)
    pump.stop()


def test_async_for_over_the_pump_itself(served):
    server, client, port = served
    senders, results = run_senders(server, client, 2, 10)

    async def main(pump):
        n = 0
        async for batch in pump:
            good_handler(batch)
            n += len(batch)
            if n == 20:
                break
        return n

    with Pump(port, message=MSG, reply=REP) as pump:
        assert asyncio.run(main(pump)) == 20
    for t in senders:
        t.join()
    for k, out in results.items():
        assert [r.reply for r in out] == [expected(k, i) for i in range(10)]
