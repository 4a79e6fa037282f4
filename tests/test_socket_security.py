"""The socket transport against hostile local peers: raw AF_UNIX sockets that send half frames or
flood requests get bounded time and memory, and what was refused is counted in
ServerPort.stats."""
import os
import socket
import struct
import threading

import pytest

from fastport.sim import FilterManager

# The wire format (src/fltsim/sock_proto.h): a 24-byte header, then a body.
_HDR = struct.Struct("<IHHIiQ")  # len, type, flags, count, hr, req
SK_MAGIC, SK_VERSION = 0x31505346, 2
SK_HELLO, SK_HELLO_ACK, SK_SEND, SK_SEND_ACK = 1, 2, 8, 9
E_OUTOFMEMORY = 0x8007000E
MAX_WORKERS, MAX_QUEUED_JOBS = 16, 64  # per connection (sock_proto.h)


def _sock_path(runtime_dir, name):
    """The port's socket file: the name with bytes outside [A-Za-z0-9._-] (and a leading '.')
    percent-escaped."""
    out = []
    for i, b in enumerate(name.encode()):
        c = chr(b)
        plain = c.isascii() and (c.isalnum() or c in "_-" or (c == "." and i > 0))
        out.append(c if plain else f"%{b:02X}")
    return os.path.join(runtime_dir, "".join(out))


def _raw(runtime_dir, name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(_sock_path(runtime_dir, name))
    return s


def _hello(s, name):
    body = struct.pack("<II", len(name.encode()), 0) + name.encode()
    s.send(_HDR.pack(_HDR.size + len(body), SK_HELLO, 0, SK_MAGIC, SK_VERSION, 0) + body)
    ack = s.recv(64)
    length, typ, _, _, hr, _ = _HDR.unpack(ack[:_HDR.size])
    assert (length, typ, hr) == (_HDR.size, SK_HELLO_ACK, 0)


def _threads():
    return len(os.listdir("/proc/self/task"))


def _wait(cond, seconds=10.0):
    """Waits on observable state (not on time): True once cond() holds."""
    ev = threading.Event()
    for _ in range(int(seconds * 1000)):
        if cond():
            return True
        ev.wait(0.001)
    return cond()


def _hung_up(s, seconds=5.0):
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.fixture
def sfm():
    with FilterManager("socket") as m:
        yield m


def test_half_hellos_pin_no_thread_once_the_port_closes(sfm, port_name, runtime_dir):
    base = _threads()
    server = sfm.create_port(port_name, max_connections=4)
    peers = [_raw(runtime_dir, port_name) for _ in range(50)]
    for p in peers:  # 24 bytes of a 1000-byte HELLO
        p.send(_HDR.pack(1000, SK_HELLO, 0, SK_MAGIC, SK_VERSION, 0))
    # the accept thread and one thread per peer, each inside its handshake
    assert _wait(lambda: _threads() >= base + 51)
    server.close()  # returns at once, and every one of those threads goes
    assert _wait(lambda: _threads() <= base)
    assert all(_hung_up(p) for p in peers)
    for p in peers:
        p.close()
    assert server.clients == []


def test_a_half_frame_is_hung_up_on_after_the_frame_deadline(sfm, port_name, runtime_dir,
                                                             monkeypatch):
    gone = threading.Event()
    monkeypatch.setenv("FASTPORT_SOCK_FRAME_TIMEOUT_MS", "200")  # read when the port is created
    server = sfm.create_port(port_name, disconnect_notify=lambda c: gone.set())
    monkeypatch.delenv("FASTPORT_SOCK_FRAME_TIMEOUT_MS")
    assert server.stats == {"peers_timed_out": 0, "connections_refused": 0, "sends_dropped": 0,
                            "slow_peers_dropped": 0}
    with _raw(runtime_dir, port_name) as s:
        _hello(s, port_name)
        s.send(_HDR.pack(5000, SK_SEND, 0, 0, 0, 1))  # 24 bytes of 5000
        assert gone.wait(10)
        assert _hung_up(s)
    assert server.stats["peers_timed_out"] == 1
    with _raw(runtime_dir, port_name) as s:  # one that never says hello
        assert _hung_up(s)
    assert server.stats["peers_timed_out"] == 2
    server.close()
    assert server.stats["peers_timed_out"] == 2  # kept after close


def test_a_send_flood_is_bounded_and_counted(sfm, port_name, runtime_dir):
    gate = threading.Event()
    calls = []

    def message_notify(client, data, out_size):
        calls.append(len(data))
        gate.wait(30)
        return b"ok"

    server = sfm.create_port(port_name, message_notify=message_notify)
    n, size = 400, 16 * 1024
    frame = _HDR.pack(_HDR.size + size, SK_SEND, 0, 8, 0, 0)[:-8]
    with _raw(runtime_dir, port_name) as s:
        _hello(s, port_name)
        for i in range(n):
            s.send(frame + struct.pack("<Q", i + 1) + bytes(size))
        # at most MAX_WORKERS run MessageNotify and MAX_QUEUED_JOBS wait; the rest are refused
        assert _wait(lambda: server.stats["sends_dropped"] >= n - MAX_WORKERS - MAX_QUEUED_JOBS)
        dropped = server.stats["sends_dropped"]
        assert dropped <= n - MAX_QUEUED_JOBS
        gate.set()
        # every request is answered exactly once: the dropped ones with E_OUTOFMEMORY at once
        s.settimeout(10)
        answers = []
        while len(answers) < n:
            a = s.recv(64)
            _, typ, _, _, hr, req = _HDR.unpack(a[:_HDR.size])
            assert typ == SK_SEND_ACK
            answers.append((req, hr & 0xFFFFFFFF))
    assert sorted(req for req, _ in answers) == list(range(1, n + 1))
    assert sum(hr == E_OUTOFMEMORY for _, hr in answers) == dropped
    assert _wait(lambda: len(calls) == n - dropped)
    assert server.stats["sends_dropped"] == dropped


# ---- the runtime directory: the caller's own is checked as strictly as other users' ----

@pytest.fixture
def xdg(tmp_path, monkeypatch):
    """No $FASTPORT_RUNTIME_DIR; $XDG_RUNTIME_DIR a fresh 0700 directory: returns the directory
    fastport uses in it."""
    d = tmp_path / "xdg"
    d.mkdir(mode=0o700)
    monkeypatch.delenv("FASTPORT_RUNTIME_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
    return d / "fastport"


def test_xdg_runtime_dir_is_preferred(xdg, port_name):
    import fastport
    from fastport import _ext

    assert _ext.runtime_dir() == str(xdg)
    with FilterManager("socket") as m:
        m.create_port(port_name)
        assert os.stat(xdg).st_mode & 0o777 == 0o711
        assert os.path.exists(_sock_path(str(xdg), port_name))
        with fastport.connect(port_name) as p:
            assert not p.closed


def _refused(port_name, directory, reason):
    import fastport
    from fastport import AccessDenied

    with FilterManager("socket") as m:
        with pytest.raises(AccessDenied) as e:
            m.create_port(port_name)
    assert e.value.ntstatus == 0xC0000022
    assert f"refusing the runtime directory {directory}: " in str(e.value)
    assert reason in str(e.value)
    with pytest.raises(AccessDenied) as e:
        fastport.connect(port_name)
    assert e.value.hresult == 0x80070005
    assert f"refusing the runtime directory {directory}: " in str(e.value)
    assert reason in str(e.value)


def test_a_runtime_dir_others_may_write_to_is_refused(xdg, port_name):
    xdg.mkdir(mode=0o700)
    os.chmod(xdg, 0o777)
    _refused(port_name, xdg, "mode 0777 lets others write to it")
    os.chmod(xdg, 0o720)
    _refused(port_name, xdg, "mode 0720 lets others write to it")


def test_a_symlinked_runtime_dir_is_refused(xdg, port_name, tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o711)
    xdg.symlink_to(tmp_path / "elsewhere")
    _refused(port_name, xdg, "not a directory")


@pytest.mark.skipif(os.geteuid() != 0, reason="simulating another user needs root (chown)")
def test_a_runtime_dir_planted_by_another_user_is_refused(xdg, port_name):
    xdg.mkdir(mode=0o711)
    os.chown(xdg, 65534, 65534)  # what an attacker who came first leaves
    _refused(port_name, xdg, f"owned by uid 65534, not by uid {os.geteuid()}")


@pytest.mark.skipif(os.geteuid() != 0, reason="simulating another user needs root (chown)")
def test_a_fake_port_in_the_tmp_runtime_dir_is_never_used(monkeypatch, port_name):
    """The attack of issue 13: another user creates /tmp/fastport-<uid> first, with a listening
    socket of its own named like our port. Our connect refuses the directory."""
    monkeypatch.delenv("FASTPORT_RUNTIME_DIR")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    d = f"/tmp/fastport-{os.geteuid()}"
    if os.path.lexists(d):
        pytest.skip(f"{d} exists already")
    os.mkdir(d, 0o755)
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        fake.bind(_sock_path(d, port_name))
        fake.listen(1)
        os.chown(_sock_path(d, port_name), 65534, 65534)
        os.chown(d, 65534, 65534)
        _refused(port_name, d, "owned by uid 65534")
        fake.setblocking(False)
        with pytest.raises(BlockingIOError):
            fake.accept()  # nobody connected to it
    finally:
        fake.close()
        os.unlink(_sock_path(d, port_name))
        os.rmdir(d)


def test_a_peer_that_asks_and_never_reads_is_hung_up_on(sfm, port_name, runtime_dir,
                                                         monkeypatch):
    monkeypatch.setenv("FASTPORT_SOCK_MAX_UNREAD_ANSWERS", str(1 << 20))  # read at creation
    gone = threading.Event()
    server = sfm.create_port(port_name, disconnect_notify=lambda c: gone.set())
    monkeypatch.delenv("FASTPORT_SOCK_MAX_UNREAD_ANSWERS")
    SK_REVOKE, tags = 4, 4096
    # tags nobody has: each answered with a 24-byte REVOKE_ACK the peer never reads
    frame = _HDR.pack(_HDR.size + 8 * tags, SK_REVOKE, 0, tags, 0, 0) + \
        struct.pack(f"<{tags}Q", *range(10**6, 10**6 + tags))
    sent = 0
    with _raw(runtime_dir, port_name) as s:
        _hello(s, port_name)
        try:
            while sent < 400:  # 1 MiB of answers is 11 frames; 400 would be 38 MiB
                s.send(frame)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < 400
    assert gone.wait(10)
    assert server.stats["slow_peers_dropped"] == 1
