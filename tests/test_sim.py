"""Semantics of the emulated Filter Manager through the Python API, on both transports."""
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading

import pytest

import fastport
from fastport import status
from fastport.sim import FilterManager
from fastport.status import PortError
from waiting import interrupt_main_when, wait_for


def blocked_get(port):
    """A get_message blocking on its own thread; the PortError it ends with lands in `errors`."""
    errors = []

    def get():
        try:
            port.get_message()
        except PortError as e:
            errors.append(e)

    t = threading.Thread(target=get)
    t.start()
    return t, errors


def connected(fm, name, **kw):
    server = fm.create_port(name, **kw)
    port = fastport.connect(name)
    return server, port


# ---- connecting ----

def test_unknown_port_is_file_not_found(fm, port_name):
    with pytest.raises(status.PortNotFound) as e:
        fastport.connect(port_name)
    assert e.value.hresult == status.ERROR_FILE_NOT_FOUND == 0x80070002
    assert e.value.name == "ERROR_FILE_NOT_FOUND"


def test_context_is_copied_and_limited(fm, port_name):
    seen = []
    fm.create_port(port_name, max_connections=4, connect_notify=lambda c, ctx: seen.append(ctx))
    big = bytes(range(256)) * 255 + b"x" * 255  # 65535 bytes
    with fastport.connect(port_name, context=big):
        pass
    with fastport.connect(port_name, context=bytearray(b"abc")):
        pass
    with fastport.connect(port_name):
        pass
    assert seen == [big, b"abc", b""]
    with pytest.raises(ValueError):
        fastport.connect(port_name, context=b"x" * 65536)
    with pytest.raises(TypeError):
        fastport.connect(port_name, context="text")


def test_max_connections(fm, port_name):
    server = fm.create_port(port_name, max_connections=2)
    a = fastport.connect(port_name)
    b = fastport.connect(port_name)
    with pytest.raises(status.ConnectionLimit) as e:
        fastport.connect(port_name)
    assert e.value.hresult == 0x800704D6
    a.close()
    wait_for(lambda: len(server.clients) == 1)
    c = fastport.connect(port_name)
    assert len(server.clients) == 2
    b.close()
    c.close()


def test_a_connection_is_admitted_once_connect_notify_returns(fm, port_name):
    seen = []

    def notify(client, ctx):  # the client port is not connected while its ConnectNotify runs
        seen.append((client.connected, server.send(client, b"early", timeout=0).status))

    server = fm.create_port(port_name, connect_notify=notify)
    with fastport.connect(port_name) as port:
        assert seen == [(False, status.STATUS_PORT_DISCONNECTED)]
        client, = server.clients
        assert client.connected
        with pytest.raises(status.PortTimeout):  # the early send was refused, not queued
            port.get_message(timeout=0)


def test_connect_notify_rejects(fm, port_name):
    def notify(client, ctx):
        if ctx == b"deny":
            return status.STATUS_ACCESS_DENIED
        if ctx == b"raise":
            raise RuntimeError("no")
        return None

    server = fm.create_port(port_name, max_connections=5, connect_notify=notify)
    with pytest.raises(status.AccessDenied):
        fastport.connect(port_name, context=b"deny")
    with pytest.raises(PortError) as e:
        fastport.connect(port_name, context=b"raise")
    assert e.value.hresult == status.E_INVALIDARG
    assert [w for w, _ in server.callback_errors] == ["connect_notify"]
    assert server.clients == []
    with fastport.connect(port_name, context=b"ok"):
        assert len(server.clients) == 1


def test_duplicate_name_collides(fm, port_name):
    fm.create_port(port_name)
    with pytest.raises(PortError) as e:
        fm.create_port(port_name)
    assert e.value.ntstatus == status.STATUS_OBJECT_NAME_COLLISION


def test_server_close_keeps_live_connections(fm, port_name, sender):
    server, port = connected(fm, port_name)
    client = server.clients[0]
    server.close()
    with pytest.raises(status.PortNotFound):
        fastport.connect(port_name)
    s = sender(server, client, b"still", reply_length=4, timeout=5)
    m = port.get_message()
    port.reply_message(m.message_id, b"yes!")
    assert s.finish().reply == b"yes!"
    port.close()


# ---- messages ----

def test_round_trip_with_reply_status(fm, port_name, sender):
    server, port = connected(fm, port_name)
    s = sender(server, server.clients[0], b"scan me", reply_length=8)
    m = port.get_message(size=64)
    assert bytes(m.data) == b"scan me"
    assert m.reply_length == 16 + 8
    assert m.wants_reply
    port.reply_message(m.message_id, b"clean", status=0xC0000022)
    r = s.finish()
    assert r.status == status.STATUS_SUCCESS
    assert r.reply == b"clean"
    assert r.reply_status == 0xC0000022
    with pytest.raises(status.NoWaiterForReply) as e:  # answered once only
        port.reply_message(m.message_id, b"again")
    assert e.value.hresult == 0x801F0020


def test_message_ids_unique_and_get_waiting_first(fm, port_name, sender):
    server, port = connected(fm, port_name)
    got = []
    t = threading.Thread(target=lambda: got.extend(port.get_message() for _ in range(3)))
    t.start()
    wait_for(lambda: server.clients[0].pending_gets == 1, "the get to wait at the kernel")
    for i in range(3):
        assert server.send(server.clients[0], b"m%d" % i, timeout=5).status == 0
    t.join(5)
    assert [bytes(m.data) for m in got] == [b"m0", b"m1", b"m2"]
    assert len({m.message_id for m in got}) == 3
    assert all(m.reply_length == 0 for m in got)


def test_no_reply_expected(fm, port_name, sender):
    server, port = connected(fm, port_name)
    s = sender(server, server.clients[0], b"fyi")
    m = port.get_message()
    assert m.reply_length == 0 and not m.wants_reply
    assert s.finish().status == status.STATUS_SUCCESS
    with pytest.raises(status.NoWaiterForReply):
        port.reply_message(m.message_id, b"")


def test_withdrawn_on_timeout_never_delivered_later(fm, port_name):
    server, port = connected(fm, port_name)
    client = server.clients[0]
    r = server.send(client, b"lost", reply_length=4, timeout=0.05)
    assert r.status == status.STATUS_TIMEOUT == 0x102
    assert status.nt_success(r.status)
    r = server.send(client, b"lost too", timeout=0.05)
    assert r.status == status.STATUS_TIMEOUT
    with pytest.raises(status.PortTimeout):
        port.get_message(timeout=0.1)
    # the next message is the next one sent, not a withdrawn one
    t = threading.Thread(target=lambda: server.send(client, b"fresh", timeout=5))
    t.start()
    assert bytes(port.get_message(timeout=5).data) == b"fresh"
    t.join()


def test_reply_after_timeout_gets_no_waiter(fm, port_name, sender):
    server, port = connected(fm, port_name)
    s = sender(server, server.clients[0], b"slow", reply_length=4, timeout=0.1)
    m = port.get_message()
    assert s.finish().status == status.STATUS_TIMEOUT
    with pytest.raises(status.NoWaiterForReply) as e:
        port.reply_message(m.message_id, b"late")
    assert e.value.name == "ERROR_FLT_NO_WAITER_FOR_REPLY"


def test_reply_longer_than_kernel_buffer(fm, port_name, sender):
    server, port = connected(fm, port_name)
    s = sender(server, server.clients[0], b"q", reply_length=1)
    m = port.get_message()
    assert m.reply_length == 17  # the padding rule: 16 + payload
    with pytest.raises(status.BufferTooSmall) as e:
        port.reply_message(m.message_id, b"too long")
    assert e.value.hresult == 0x8007007A
    r = s.finish()
    assert r.status == status.STATUS_BUFFER_OVERFLOW == 0x80000005
    assert not status.nt_success(r.status)
    assert r.reply is None


def test_undersized_get_buffer(fm, port_name, sender):
    server, port = connected(fm, port_name)
    s = sender(server, server.clients[0], b"0123456789", reply_length=2)
    with pytest.raises(status.BufferTooSmall) as e:
        port.get_message(size=16 + 4)
    m = e.value.message
    assert bytes(m.data) == b"0123"
    port.reply_message(m.message_id, b"ok")  # delivered: the sender still waits for it
    assert s.finish().reply == b"ok"


def test_cancel_blocked_get(fm, port_name):
    server, port = connected(fm, port_name)
    t, errors = blocked_get(port)
    wait_for(lambda: server.clients[0].pending_gets == 1, "the get to wait at the kernel")
    port.cancel()
    t.join(5)
    assert not t.is_alive()
    assert isinstance(errors[0], status.OperationAborted)
    assert errors[0].hresult == 0x800703E3


def test_ctrl_c_interrupts_a_blocking_get(fm, port_name):
    server, port = connected(fm, port_name)
    client = server.clients[0]
    t = interrupt_main_when(lambda: client.pending_gets == 1, port.cancel)
    try:
        with pytest.raises(KeyboardInterrupt):
            port.get_message()
    finally:
        t.finish()
    # the port still works: the interrupted get was withdrawn, not left holding a message
    t = threading.Thread(target=lambda: server.send(server.clients[0], b"after", timeout=5))
    t.start()
    assert bytes(port.get_message(timeout=5).data) == b"after"
    t.join()


def test_send_message_served_by_message_notify(fm, port_name):
    calls = []

    def notify(client, data, out_size):
        calls.append((client, data, out_size))
        return data.upper()

    server = fm.create_port(port_name, message_notify=notify)
    with fastport.connect(port_name) as port:
        assert port.send_message(b"hello", 16) == b"HELLO"
        assert calls[0][0] is server.clients[0]
        assert calls[0][1:] == (b"hello", 16)
        with pytest.raises(status.BufferTooSmall):
            port.send_message(b"hello", 2)


def test_message_notify_returning_garbage(fm, port_name):
    server = fm.create_port(port_name, message_notify=lambda c, d, n: 3)
    with fastport.connect(port_name) as port:
        with pytest.raises(PortError) as e:
            port.send_message(b"x", 8)
        assert e.value.hresult == status.E_INVALIDARG
    assert isinstance(server.callback_errors[0][1], TypeError)


def test_send_message_without_message_notify(fm, port_name):
    fm.create_port(port_name)
    with fastport.connect(port_name) as port:
        with pytest.raises(PortError) as e:
            port.send_message(b"x", 4)
        assert e.value.hresult == status.E_INVALIDARG


# ---- disconnects ----

def test_user_close_while_senders_wait(fm, port_name, sender):
    gone = []
    server = fm.create_port(port_name, disconnect_notify=gone.append)
    port = fastport.connect(port_name)
    client = server.clients[0]
    delivered = sender(server, client, b"one", reply_length=4)
    port.get_message()
    queued = sender(server, client, b"two", reply_length=4)
    wait_for(lambda: client.queued == 1, "the second send to queue")
    port.close()
    assert delivered.finish().status == status.STATUS_PORT_DISCONNECTED == 0xC0000037
    assert queued.finish().status == status.STATUS_PORT_DISCONNECTED
    wait_for(lambda: gone == [client])
    assert not client.connected
    assert server.send(client, b"x").status == status.STATUS_PORT_DISCONNECTED
    with pytest.raises(status.PortDisconnected):
        port.get_message(timeout=0)


def test_kernel_closes_client_while_get_waits(fm, port_name):
    server, port = connected(fm, port_name)
    t, errors = blocked_get(port)
    wait_for(lambda: server.clients[0].pending_gets == 1, "the get to wait at the kernel")
    server.clients[0].close()
    t.join(5)
    assert not t.is_alive()
    assert errors[0].hresult == status.ERROR_INVALID_HANDLE == 0x80070006
    assert isinstance(errors[0], status.PortDisconnected)


def test_unload_disconnects_everyone(transport, port_name):
    fm = FilterManager(transport)
    fm.create_port(port_name)
    port = fastport.connect(port_name)
    fm.close()
    with pytest.raises(status.PortDisconnected):
        port.get_message(timeout=1)


# ---- many senders, many getters ----

def test_many_senders_many_getters_none_lost(fm, port_name):
    n_senders, n_getters, per_sender = 32, 8, 100_000 // 32
    server = fm.create_port(port_name)
    port = fastport.connect(port_name)
    client = server.clients[0]
    bad = []
    stop = threading.Event()

    def send(k):
        for i in range(per_sender):
            r = server.send(client, struct.pack("<II", k, i), reply_length=8, timeout=60)
            if r.status != 0 or r.reply != struct.pack("<II", k ^ 0xFFFFFFFF, i * 3):
                bad.append((k, i, r))

    def get():
        while not stop.is_set():
            try:
                m = port.get_message(size=64, timeout=0.05)
            except status.PortTimeout:
                continue
            k, i = struct.unpack("<II", m.data)
            port.reply_message(m.message_id, struct.pack("<II", k ^ 0xFFFFFFFF, i * 3))

    getters = [threading.Thread(target=get) for _ in range(n_getters)]
    senders = [threading.Thread(target=send, args=(k,)) for k in range(n_senders)]
    for t in getters + senders:
        t.start()
    for t in senders:
        t.join()
    stop.set()
    for t in getters:
        t.join()
    assert bad == []
    port.close()


# ---- bad input ----

def test_bad_input(fm, port_name):
    server, port = connected(fm, port_name)
    client = server.clients[0]
    with pytest.raises(TypeError):
        fastport.connect(None)
    with pytest.raises(ValueError):
        fastport.connect("x" * 201)
    with pytest.raises(ValueError):
        fastport.connect("")
    with pytest.raises(ValueError):
        fastport.connect(port_name, backend="nonsense")
    with pytest.raises(ValueError):
        fm.create_port("\\Other", max_connections=0)
    with pytest.raises(TypeError):
        fm.create_port("\\Other", max_connections=None)
    with pytest.raises(ValueError):
        fm.create_port("\\Other", access="nobody")
    with pytest.raises(ValueError):
        port.get_message(size=8)
    with pytest.raises(ValueError):
        port.get_message(size=-1)
    with pytest.raises(ValueError):
        port.get_message(size=5 * 2**30)
    with pytest.raises(ValueError):
        port.get_message(size=2**32 - 1)  # more than any message can be
    with pytest.raises(TypeError):
        port.get_message(size=None)
    with pytest.raises(ValueError):
        port.get_message(timeout=-1)
    with pytest.raises(TypeError):
        port.reply_message(None)
    with pytest.raises(ValueError):
        port.reply_message(-1)
    with pytest.raises(TypeError):
        port.reply_message(1, data=None)
    with pytest.raises(ValueError):
        port.send_message(b"x", -1)
    with pytest.raises(TypeError):
        server.send(None, b"x")
    with pytest.raises(TypeError):
        server.send(client, None)
    with pytest.raises(ValueError):
        server.send(client, b"x", reply_length=-1)
    with pytest.raises(ValueError):
        server.send(client, b"x", timeout=-0.5)
    with pytest.raises(ValueError):
        server.send(client, b"x" * (2**20 + 1))
    port.close()
    port.close()  # twice is fine
    with pytest.raises(status.PortDisconnected):
        port.get_message()
    with pytest.raises(status.PortDisconnected):
        port.reply_message(1, b"")


def test_reply_for_message_of_another_connection(fm, port_name, sender):
    server = fm.create_port(port_name, max_connections=2)
    a = fastport.connect(port_name)
    b = fastport.connect(port_name)
    ca = server.clients[0] if server.clients[0].pid else server.clients[0]
    s = sender(server, ca, b"for a", reply_length=4, timeout=5)
    # whichever port the message went to, the other one cannot answer it
    holder, other = (a, b)
    try:
        m = a.get_message(timeout=0.5)
    except status.PortTimeout:
        holder, other = b, a
        m = b.get_message(timeout=5)
    with pytest.raises(status.NoWaiterForReply):
        other.reply_message(m.message_id, b"evil")
    holder.reply_message(m.message_id, b"good")
    assert s.finish().reply == b"good"
    a.close()
    b.close()


# ---- the socket transport across processes ----

CHILD_CLIENT = textwrap.dedent("""
    import sys, fastport
    port = fastport.connect(sys.argv[1])
    m = port.get_message()
    print("got", m.message_id, flush=True)
    import signal; signal.pause()  # until killed
""")

CHILD_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_child.py")

def _child(code, *args):
    """A Python child running `code` (a string, or the path of a script) with args."""
    cmd = [sys.executable, code] if code.endswith(".py") else [sys.executable, "-c", code]
    return subprocess.Popen(cmd + list(args), stdout=subprocess.PIPE, text=True,
                            env=os.environ.copy())


def test_kill_9_of_client_process_disconnects_senders(port_name, sender):
    gone = []
    with FilterManager("socket") as fm:
        server = fm.create_port(port_name, disconnect_notify=gone.append)
        child = _child(CHILD_CLIENT, port_name)
        try:
            wait_for(lambda: server.clients)
            client = server.clients[0]
            assert client.pid == child.pid
            delivered = sender(server, client, b"one", reply_length=4)
            assert child.stdout.readline().startswith("got")
            queued = sender(server, client, b"two", reply_length=4)
            wait_for(lambda: client.queued == 1, "the second send to queue")
            child.send_signal(signal.SIGKILL)
            assert delivered.finish().status == status.STATUS_PORT_DISCONNECTED
            assert queued.finish().status == status.STATUS_PORT_DISCONNECTED
            wait_for(lambda: gone == [client])
        finally:
            child.kill()
            child.wait()


def test_kernel_process_dies_while_get_waits(port_name):
    child = _child(CHILD_SERVER, port_name, "tell-pending")
    try:
        assert child.stdout.readline().strip() == "ready"
        port = fastport.connect(port_name)
        assert child.stdout.readline().strip() == "connected"
        t, errors = blocked_get(port)
        assert child.stdout.readline().strip() == "pending"
        child.send_signal(signal.SIGKILL)
        t.join(10)
        assert not t.is_alive()
        assert isinstance(errors[0], status.PortDisconnected)
    finally:
        child.kill()
        child.wait()


def test_stopped_kernel_process_does_not_hang_the_user(port_name, monkeypatch):
    monkeypatch.setenv("FASTPORT_SOCK_PEER_TIMEOUT_MS", "300")
    child = _child(CHILD_SERVER, port_name)
    try:
        assert child.stdout.readline().strip() == "ready"
        port = fastport.connect(port_name)
        assert child.stdout.readline().strip() == "connected"
        child.send_signal(signal.SIGSTOP)
        wait_for(lambda: _proc_state(child.pid) == "T")  # stopped for real before we ask it
        with pytest.raises(status.PortDisconnected):  # returns at all: given up on, not hung
            port.reply_message(1, b"x")  # needs the kernel's answer (peer timeout 300 ms)
        with pytest.raises(status.PortDisconnected):
            port.get_message(timeout=1)
    finally:
        child.kill()
        child.wait()


def _proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _connect_as_other_uid(name):
    """Fork, drop to uid/gid 65534, try to connect; returns the HRESULT (0 = connected)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0xFFFFFFFF
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                fastport.connect(name).close()
                code = 0
            except PortError as e:
                code = e.hresult
        finally:
            os.write(w, struct.pack("<I", code))
            os._exit(0)
    os.close(w)
    data = os.read(r, 4)
    os.close(r)
    os.waitpid(pid, 0)
    return struct.unpack("<I", data)[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
def test_other_uid_is_refused_unless_port_allows_everyone(port_name):
    with FilterManager("socket") as fm:
        fm.create_port(port_name)
        assert _connect_as_other_uid(port_name) == status.E_ACCESSDENIED
        fm.create_port(port_name + "Open", access="everyone")
        assert _connect_as_other_uid(port_name + "Open") == 0
