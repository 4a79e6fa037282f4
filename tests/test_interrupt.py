"""Blocking calls wake for signals (Ctrl-C), and what an interrupted call leaves behind is
defined; pump.stop() is bounded even when the kernel side's process is stopped."""
import logging
import os
import signal
import subprocess
import sys
import threading

import pytest

import fastport
from fastport import _ext, status
from fastport.pump import Pump
from pumpkit import MSG, REP
from waiting import interrupt_main_when, wait_for


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


def _peer_waits():
    return _ext.debug_counters()["sim_peer_waits"]


def _stopped(kernel):
    kernel.send_signal(signal.SIGSTOP)
    while _state(kernel.pid) != "T":  # stopped for real before the call that waits on it
        pass


def test_ctrl_c_interrupts_a_reply_waiting_for_a_stopped_kernel(port_name):
    kernel = subprocess.Popen([sys.executable, KERNEL, port_name, "send-loop"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert kernel.stdout.readline() == "ready\n"
        with fastport.connect(port_name) as port:
            assert kernel.stdout.readline() == "connected\n"
            m = port.get_message(timeout=10)
            _stopped(kernel)  # the reply goes out; its acknowledgement cannot come
            t = interrupt_main_when(lambda: _peer_waits() == 1,
                                    lambda: kernel.send_signal(signal.SIGCONT))
            try:
                with pytest.raises(KeyboardInterrupt):
                    port.reply_message(m.message_id, b"first")
            finally:
                t.finish()
            assert _peer_waits() == 0
            kernel.send_signal(signal.SIGCONT)
            # the kernel side took the reply when it resumed; its late acknowledgement is no
            # protocol error: the connection goes on with the next message
            assert kernel.stdout.readline() == "reply b'first'\n"
            m2 = port.get_message(timeout=10)
            assert m2.message_id != m.message_id
            port.reply_message(m2.message_id, b"second")
            assert kernel.stdout.readline() == "reply b'second'\n"
    finally:
        kernel.kill()
        kernel.wait()


def test_ctrl_c_interrupts_a_connect_to_a_stopped_kernel(port_name):
    kernel = subprocess.Popen([sys.executable, KERNEL, port_name],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert kernel.stdout.readline() == "ready\n"
        _stopped(kernel)  # the handshake goes out; its answer cannot come
        t = interrupt_main_when(lambda: _peer_waits() == 1,
                                lambda: kernel.send_signal(signal.SIGCONT))
        try:
            with pytest.raises(KeyboardInterrupt):
                fastport.connect(port_name)
        finally:
            t.finish()
        assert _peer_waits() == 0
        kernel.send_signal(signal.SIGCONT)
        # the kernel side reads the handshake when it resumes and admits the connection, which
        # ends at once: the caller has gone
        assert {kernel.stdout.readline(), kernel.stdout.readline()} == {
            "connected\n", "disconnected\n"}
        with fastport.connect(port_name):  # and the port goes on
            pass
        assert kernel.stdout.readline() == "disconnected\n"
    finally:
        kernel.kill()
        kernel.wait()


@pytest.fixture
def held_then_stopped(port_name):
    """A pump holding, unanswered, the one message of a kernel side in a process of its own,
    which is then stopped (SIGSTOP): nothing the pump's stop asks of it can be answered."""
    kernel = subprocess.Popen([sys.executable, KERNEL, port_name, "send-one"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert kernel.stdout.readline() == "ready\n"
        port = fastport.connect(port_name)
        pump = Pump(port, message=MSG, reply=REP, threads=1, outstanding=2, batch=4)
        pump.start()
        batch = pump._next(timeout=10)
        assert batch is not None and len(batch) == 1
        _stopped(kernel)
        yield kernel, port, pump
        del batch
    finally:
        kernel.kill()
        kernel.wait()


def test_stop_is_bounded_when_the_kernel_process_is_stopped(held_then_stopped):
    kernel, port, pump = held_then_stopped
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


def _stopping():
    return any(th.name == "fastport-pump-stop" for th in threading.enumerate())


def test_ctrl_c_interrupts_an_unbounded_stop(held_then_stopped):
    kernel, port, pump = held_then_stopped
    t = interrupt_main_when(_stopping, lambda: kernel.send_signal(signal.SIGCONT))
    try:
        with pytest.raises(KeyboardInterrupt):
            pump.stop(timeout=None)  # no bound of its own: only Ctrl-C ends it
    finally:
        t.finish()
    # given up on as the bound would have: the port closed, every thread joined
    assert port.closed
    assert pump.stats["inflight"] == 0
    wait_for(lambda: not _stopping(), "the stop's joining thread to end")
    assert pump.stop() == {"hung_up": False, "unanswered": 0, "gets_pending": 0}


def test_a_second_ctrl_c_does_not_leave_the_stop_half_done(held_then_stopped):
    kernel, port, pump = held_then_stopped
    main = threading.main_thread().ident

    class CtrlCAgain(logging.Handler):  # a second Ctrl-C while the stop gives up
        def emit(self, record):
            if "interrupted" in record.getMessage():
                signal.pthread_kill(main, signal.SIGINT)
                sum(range(1000))  # Python work: the signal's handler runs here

    again = CtrlCAgain()
    log = logging.getLogger("fastport")
    log.addHandler(again)
    t = interrupt_main_when(_stopping, lambda: kernel.send_signal(signal.SIGCONT))
    try:
        with pytest.raises(KeyboardInterrupt):
            pump.stop(timeout=None)
    finally:
        t.finish()
        log.removeHandler(again)
    assert port.closed
    assert pump.stats["inflight"] == 0
    wait_for(lambda: not _stopping(), "the stop's joining thread to end")
    assert pump.stop() == {"hung_up": False, "unanswered": 0, "gets_pending": 0}
