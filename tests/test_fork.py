"""fork(): a child never disturbs the connections and the pump of its parent (socket transport:
the child shares the connection's socket), and what it inherited refuses to be used there."""
import gc
import os
import select
import struct
import subprocess
import sys
import textwrap
import threading

import pytest

import fastport
from fastport.pump import Pump
from fastport.sim import FilterManager
from pumpkit import MSG, REP, expected, good_handler


def _payload(k, i):
    return struct.pack("<II", k, i) + bytes(MSG.itemsize - 8)


def _round_trips(server, client, n, k=0):
    """n sends answered by the pump's good_handler, each with its own reply."""
    for i in range(n):
        r = server.send(client, _payload(k, i), reply_length=REP.itemsize, timeout=10)
        assert r.status == 0 and r.reply == expected(k, i), (i, r)


def _wait_child(pid, bound=30):
    """The child's exit status; fails (instead of hanging) if it has not exited within `bound`
    seconds: a hang in the child is the bug these tests look for."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], bound)
    finally:
        os.close(fd)
    if not ready:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child hung")
    _, st = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(st)


@pytest.fixture
def serving(port_name):
    """A socket-transport port served by a running pump in this process."""
    with FilterManager("socket") as fm:
        server = fm.create_port(port_name)
        port = fastport.connect(port_name)
        client = server.clients[0]
        pump = Pump(port, message=MSG, reply=REP, threads=2, outstanding=4, batch=16)
        pump.start()
        runner = threading.Thread(target=pump.run, args=(good_handler,))
        runner.start()
        try:
            _round_trips(server, client, 20)
            yield fm, server, client, port, pump, runner
        finally:
            pump.stop()
            runner.join()
            port.close()


@pytest.mark.parametrize("how", ["_exit", "collect"])
def test_a_child_that_exits_leaves_the_parent_serving(serving, how):
    fm, server, client, port, pump, runner = serving
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if how == "collect":  # what an exiting interpreter does with what the child holds
                fm.close()
                del fm, server, client, port, pump, runner, serving
                gc.collect()
        except BaseException:
            code = 1
        os._exit(code)
    assert _wait_child(pid) == 0
    assert client.connected and not port.closed
    _round_trips(server, client, 200, k=1)
    s = pump.stats
    assert s["errors"] == 0 and s["defaulted"] == 0


def test_a_child_using_the_pump_gets_a_clear_error_at_once(serving):
    fm, server, client, port, pump, runner = serving
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        failures = []
        for what, call in (("stop", pump.stop), ("next", lambda: next(pump)),
                           ("run", lambda: pump.run(good_handler)), ("stats", lambda: pump.stats),
                           ("get_message", lambda: port.get_message(timeout=0)),
                           ("send_message", lambda: port.send_message(b"x", 4)),
                           ("server.send", lambda: server.send(client, b"x")),
                           ("client.close", client.close)):
            try:
                call()
                failures.append(f"{what}: no error")
            except RuntimeError as e:
                if "forked" not in str(e) or str(os.getppid()) not in str(e):
                    failures.append(f"{what}: {e}")
            except BaseException as e:
                failures.append(f"{what}: {type(e).__name__}: {e}")
        port.close()  # only the child's copy
        os.write(w, "\n".join(failures).encode())
        os._exit(0)
    os.close(w)
    assert _wait_child(pid) == 0  # (before reading: a child that hangs never closes w)
    with os.fdopen(r, "rb") as f:
        failures = f.read().decode()
    assert failures == ""
    assert client.connected
    _round_trips(server, client, 50, k=2)


# A whole program: the child ends as programs do (sys.exit: atexit, then the interpreter frees
# everything), not with os._exit.
NORMAL_EXIT = textwrap.dedent("""
    import os, struct, sys, threading
    sys.path.insert(0, sys.argv[2])
    import fastport
    from fastport.pump import Pump
    from fastport.sim import FilterManager
    from pumpkit import MSG, REP, expected, good_handler

    fm = FilterManager("socket")
    server = fm.create_port(sys.argv[1])
    port = fastport.connect(sys.argv[1])
    client = server.clients[0]
    pump = Pump(port, message=MSG, reply=REP, threads=2, outstanding=4)
    pump.start()
    runner = threading.Thread(target=pump.run, args=(good_handler,))
    runner.start()

    def trips(k, n):
        for i in range(n):
            r = server.send(client, struct.pack("<II", k, i) + bytes(MSG.itemsize - 8),
                            reply_length=REP.itemsize, timeout=10)
            assert r.status == 0 and r.reply == expected(k, i), (k, i, r)

    trips(0, 10)
    pid = os.fork()
    if pid == 0:
        sys.exit(0)
    _, st = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(st) == 0
    assert client.connected and not port.closed
    trips(1, 100)
    pump.stop()
    runner.join()
    fm.close()
    print("ok", flush=True)
""")


def test_a_child_exiting_normally_leaves_the_parent_serving(port_name):
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.run([sys.executable, "-c", NORMAL_EXIT, port_name, here], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "ok\n", p.stderr
