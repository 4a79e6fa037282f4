"""Blocking calls wake for signals (Ctrl-C), and what an interrupted call leaves behind is
defined; pump.stop() is bounded even when the kernel side's process is stopped."""
import os
import signal
import subprocess
import sys
import threading

import pytest

import fastport
from fastport import status
from fastport.pump import Pump
from pumpkit import MSG, REP
from waiting import interrupt_main_when


def test_ctrl_c_interrupts_a_send_waiting_for_its_reply(served):
    server, client, port = served
    got = []

    def get_then_wait():  # the message is delivered: the send waits for its reply
        got.append(port.get_message(timeout=10))

    getter = threading.Thread(target=get_then_wait)
    getter.start()
    t = interrupt_main_when(lambda: bool(got) and client.awaiting_reply == 1,
                             lambda: port.reply_message(got[0].message_id, b"late"))
    try:
        with pytest.raises(KeyboardInterrupt):
            server.send(client, b"ping", reply_length=8, timeout=None)
    finally:
        t.finish()
        getter.join()
    # abandoned as its own timeout would be: nobody waits for that reply any more
    assert client.awaiting_reply == 0
    with pytest.raises(status.NoWaiterForReply):
        port.reply_message(got[0].message_id, b"pong")
    # and the connection goes on
    r = []
    getter = threading.Thread(target=lambda: r.append(port.get_message(timeout=10)))
    getter.start()
    s = threading.Thread(target=lambda: r.append(server.send(client, b"again", timeout=10)))
    s.start()
    getter.join()
    s.join()
    assert client.connected


def test_ctrl_c_withdraws_a_send_not_delivered_yet(served):
    server, client, port = served
    t = interrupt_main_when(lambda: client.queued == 1, client.close)
    try:
        with pytest.raises(KeyboardInterrupt):
            server.send(client, b"queued", reply_length=8, timeout=None)
    finally:
        t.finish()
    assert client.queued == 0  # withdrawn: never delivered later
    with pytest.raises(status.PortTimeout):
        port.get_message(timeout=0)


def test_ctrl_c_interrupts_send_message(fm, port_name):
    inside, release = threading.Event(), threading.Event()

    def notify(client, data, out_size):
        if data == b"slow":
            inside.set()
            release.wait(60)  # longer than the test gives the interrupt
        return data.upper()

    fm.create_port(port_name, message_notify=notify)
    with fastport.connect(port_name) as port:
        t = interrupt_main_when(inside.is_set, release.set)
        try:
            with pytest.raises(KeyboardInterrupt):
                port.send_message(b"slow", 8)
        finally:
            t.finish()
            release.set()
        # abandoned: MessageNotify finished on its own, its output discarded; the port goes on
        assert port.send_message(b"fast", 8) == b"FAST"


KERNEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_child.py")

def _state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_stop_is_bounded_when_the_kernel_process_is_stopped(port_name):
    kernel = subprocess.Popen([sys.executable, KERNEL, port_name, "send-one"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert kernel.stdout.readline() == "ready\n"
        port = fastport.connect(port_name)
        pump = Pump(port, message=MSG, reply=REP, threads=1, outstanding=2, batch=4)
        pump.start()
        batch = pump._next(timeout=10)  # the kernel's message, held unanswered
        assert batch is not None and len(batch) == 1
        kernel.send_signal(signal.SIGSTOP)
        while _state(kernel.pid) != "T":  # stopped for real before we stop the pump
            pass
        report = pump.stop(timeout=0.2)
        # it returned, and says what it gave up on: the held message and the pending gets
        assert report["hung_up"] is True
        assert report["unanswered"] == 1
        assert report["gets_pending"] >= 1
        assert port.closed
        s = pump.stats
        assert s["inflight"] == 0
        assert s["received"] == 1
        assert pump.stop() == {"hung_up": False, "unanswered": 0, "gets_pending": 0}
        del batch
    finally:
        kernel.kill()
        kernel.wait()
