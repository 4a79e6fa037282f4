"""A pump never stops receiving, whatever Python does: a handler that hangs, one that raises while
a log handler keeps its records, one that keeps views forever. With a deadline every message is
answered (each sender below would see STATUS_TIMEOUT after 10 s otherwise), on both transports."""
import logging
import logging.handlers
import struct
import threading


from fastport import status
from fastport.pump import Pump
from pumpkit import DEFAULT, MSG, REP



def send_all(server, client, senders, per_sender):
    """Kernel-side senders with a 10 s timeout; returns every SendResult."""
    results = []
    lock = threading.Lock()

    def send(k):
        for i in range(per_sender):
            r = server.send(client, struct.pack("<II", k, i) + bytes(56), reply_length=8,
                            timeout=10)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a sender hung"
    return results


def serve(pump, handler):
    t = threading.Thread(target=pump.run, args=(handler,), daemon=True)
    t.start()
    return t


def test_hung_handler(served):
    """The handler never returns: the deadline answers what it was given, and the messages that
    come after are still received and answered (not one per chunk)."""
    server, client, port = served
    release = threading.Event()
    pump = Pump(port, message=MSG, reply=REP, deadline=0.05, default_reply=DEFAULT)
    with pump:
        runner = serve(pump, lambda batch: release.wait(30))
        results = send_all(server, client, 8, 5)
        release.set()
    runner.join(10)
    assert len(results) == 40
    assert all(r.status == status.STATUS_SUCCESS and r.reply == DEFAULT for r in results)
    s = pump.stats
    assert s["received"] == 40
    assert s["defaulted_deadline"] + s["defaulted_overflow"] + s["defaulted_stop"] == 40


def test_raising_handler_whose_records_are_kept(served):
    """The handler raises after touching views; a MemoryHandler keeps every log record (and so
    every traceback). The frames the pump logs are cleared, so no view outlives its batch and
    the slab never runs dry: even without a deadline, every message is answered."""
    server, client, port = served
    kept = logging.handlers.MemoryHandler(capacity=10**6, flushLevel=logging.CRITICAL + 1)
    log = logging.getLogger("fastport.pump")
    log.addHandler(kept)

    def bad(batch):
        views = batch.messages, batch.replies  # noqa: F841 - locals of the frame the log keeps
        raise RuntimeError("scanner crashed")

    try:
        pump = Pump(port, message=MSG, reply=REP, batch=4, default_reply=DEFAULT)
        with pump:
            runner = serve(pump, bad)
            results = send_all(server, client, 8, 25)
        runner.join(10)
        s = pump.stats
    finally:
        log.removeHandler(kept)
    assert len(kept.buffer) >= 1  # the records (with their tracebacks) are still there
    assert s["received"] == 200 > s["chunks_total"] * 4  # more than the slab holds
    assert all(r.status == status.STATUS_SUCCESS and r.reply == DEFAULT for r in results)
    assert s["defaulted_error"] == 200 and s["chunks_held"] == 0


def test_handler_that_keeps_every_view(served, caplog):
    """The handler stores every batch's messages view: every chunk stays held. With a deadline the
    pump keeps answering (from C, at once) and says so once in the log."""
    server, client, port = served
    hoard = []

    def keep(batch):
        hoard.append(batch.messages)

    pump = Pump(port, message=MSG, reply=REP, batch=4, deadline=0.05, default_reply=DEFAULT)
    with caplog.at_level(logging.WARNING, logger="fastport.pump"):
        with pump:
            runner = serve(pump, keep)
            results = send_all(server, client, 8, 25)
            s = pump.stats
        runner.join(10)
    assert all(r.status == status.STATUS_SUCCESS and r.reply == DEFAULT for r in results)
    assert s["received"] == 200 and s["defaulted_overflow"] > 0
    assert s["chunks_held"] == s["chunks_total"]
    warnings = [r for r in caplog.records if "default_reply" in r.getMessage()]
    assert len(warnings) == 1 and "held" in warnings[0].getMessage()
    del hoard[:]
