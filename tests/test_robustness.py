"""What a user meets when things go wrong: objects made the wrong way, failing callbacks."""
import json
import os
import subprocess
import sys
import textwrap

# Runs in a child process, so that a segfault fails the test instead of killing pytest. Every
# exported class is constructed directly (refused with a TypeError naming the right way) and
# through __new__ (an object nobody initialised), and every public method and property of the
# latter is touched; each outcome is recorded as "ok" or "<ExceptionType>: <message>".
_PROBE = textwrap.dedent(r"""
    import json, sys
    import fastport, fastport.sim
    from fastport import _ext

    out = {}

    def probe(label, fn):
        try:
            fn()
            out[label] = "ok"
        except Exception as e:
            out[label] = f"{type(e).__name__}: {e}"

    for label, cls in [("Port", fastport.Port), ("Message", fastport.Message),
                       ("ClientPort", fastport.sim.ClientPort),
                       ("ServerPort", fastport.sim.ServerPort),
                       ("SendResult", fastport.sim.SendResult)]:
        probe(f"{label}()", cls)
        probe(f"{label}(1, 2)", lambda: cls(1, 2))

    p = fastport.Port.__new__(fastport.Port)
    for attr in ("name", "sync", "handle", "closed"):
        probe(f"Port.{attr}", lambda: getattr(p, attr))
    probe("Port.get_message", lambda: p.get_message(64, timeout=0))
    probe("Port.reply_message", lambda: p.reply_message(1, b"x"))
    probe("Port.send_message", lambda: p.send_message(b"x", 4))
    probe("Port.cancel", p.cancel)
    probe("Port.__enter__", lambda: p.__enter__())
    probe("Port.__exit__", lambda: p.__exit__(None, None, None))
    probe("Port.close", p.close)
    probe("Port.repr", lambda: repr(p))

    m = fastport.Message.__new__(fastport.Message)
    for attr in ("reply_length", "message_id", "data", "wants_reply"):
        probe(f"Message.{attr}", lambda: getattr(m, attr))
    probe("Message.repr", lambda: repr(m))

    c = fastport.sim.ClientPort.__new__(fastport.sim.ClientPort)
    for attr in ("server", "id", "connected", "pid", "uid"):
        probe(f"ClientPort.{attr}", lambda: getattr(c, attr))
    probe("ClientPort.close", c.close)
    probe("ClientPort.repr", lambda: repr(c))

    s = fastport.sim.ServerPort.__new__(fastport.sim.ServerPort)
    for attr in ("name", "transport", "max_connections", "access", "callback_errors",
                 "callback_errors_dropped", "closed", "clients"):
        probe(f"ServerPort.{attr}", lambda: getattr(s, attr))
    probe("ServerPort.send", lambda: s.send(c, b"x", reply_length=1, timeout=0))
    probe("ServerPort.close", s.close)
    probe("ServerPort._unload", s._unload)
    probe("ServerPort.repr", lambda: repr(s))

    r = fastport.sim.SendResult.__new__(fastport.sim.SendResult)
    for attr in ("status", "reply", "reply_status", "name"):
        probe(f"SendResult.{attr}", lambda: getattr(r, attr))
    probe("SendResult.repr", lambda: repr(r))

    cr = _ext.CReference.__new__(_ext.CReference)
    for attr in ("port", "threads", "outstanding", "max_payload", "protocol", "running", "stats"):
        probe(f"CReference.{attr}", lambda: getattr(cr, attr))
    probe("CReference.start", cr.start)
    probe("CReference.__enter__", lambda: cr.__enter__())
    probe("CReference.__exit__", lambda: cr.__exit__(None, None, None))
    probe("CReference.stop", cr.stop)
    probe("CReference.repr", lambda: repr(cr))
    probe("CReference(Port.__new__)", lambda: _ext.CReference(p).start())

    probe("Batch()", fastport.Batch)
    b = fastport.Batch.__new__(fastport.Batch)
    for attr in ("headers", "messages", "replies", "status", "lengths", "receive_ns", "payload",
                 "released", "exports"):
        probe(f"Batch.{attr}", lambda: getattr(b, attr))
    probe("Batch.len", lambda: len(b))
    probe("Batch.reply", b.reply)
    probe("Batch.release", b.release)
    probe("Batch.__exit__", lambda: b.__exit__(None, None, None))
    probe("Batch.repr", lambda: repr(b))
    pu = fastport.Pump.__new__(fastport.Pump)
    for attr in ("stats", "layout", "port", "message_dtype", "default_reply"):
        probe(f"Pump.{attr}", lambda: getattr(pu, attr))
    probe("Pump.start", pu.start)
    probe("Pump.stop", pu.stop)
    probe("Pump._next", lambda: pu._next(0))
    probe("Pump._try_next", pu._try_next)
    probe("Pump.run", lambda: pu.run(print))
    probe("Pump.next", lambda: next(pu))

    probe("_run_driver(ClientPort.__new__)",
          lambda: _ext._run_driver(c, senders=1, messages=1, timeout=0.1))
    probe("_run_driver(ServerPort.__new__)",
          lambda: _ext._run_driver(s, senders=1, messages=1, timeout=0.1))

    # a real server port sending to a ClientPort nobody initialised
    with fastport.sim.FilterManager() as fm:
        real = fm.create_port("\\ProbeNew")
        probe("ServerPort.send(real, ClientPort.__new__)",
              lambda: real.send(c, b"x", reply_length=1, timeout=0))

    json.dump(out, sys.stdout)
""")


def _probe():
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          timeout=60, cwd="/", env=os.environ.copy())
    assert proc.returncode == 0, (f"the probe died with {proc.returncode}\n"
                                  f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


def test_exported_classes_made_directly_never_crash():
    out = _probe()
    # direct construction is refused with a TypeError that names the right way to get one
    right_way = {"Port": "fastport.connect", "Message": "get_message",
                 "ClientPort": "ServerPort.clients", "ServerPort": "FilterManager",
                 "SendResult": "ServerPort.send"}
    for cls, hint in right_way.items():
        for call in (f"{cls}()", f"{cls}(1, 2)"):
            assert out[call].startswith("TypeError: "), (call, out[call])
            assert hint in out[call], (call, out[call])
    # objects made through __new__: every call either works harmlessly or raises an error that
    # says what is wrong; none of them touches a NULL pointer
    for call in ("Port.get_message", "Port.reply_message", "Port.send_message", "Port.cancel"):
        assert out[call].startswith("RuntimeError: ") and "fastport.connect" in out[call], out[call]
    for call in ("ClientPort.connected", "ClientPort.pid", "ClientPort.uid", "ClientPort.close",
                 "_run_driver(ClientPort.__new__)",
                 "ServerPort.send(real, ClientPort.__new__)"):
        assert out[call].startswith("RuntimeError: ") and "ServerPort.clients" in out[call], \
            (call, out[call])
    for call in ("CReference.start", "CReference.__enter__"):
        assert out[call].startswith("RuntimeError: ") and "CReference(port" in out[call], \
            (call, out[call])
    assert "fastport.connect" in out["CReference(Port.__new__)"]
    assert out["Batch()"].startswith("TypeError: ") and "Pump" in out["Batch()"]
    for call in ("Batch.headers", "Batch.messages", "Batch.replies", "Batch.status",
                 "Batch.lengths", "Batch.receive_ns", "Batch.payload", "Batch.reply",
                 "Batch.release", "Batch.__exit__"):
        assert out[call].startswith("RuntimeError: ") and "Pump" in out[call], (call, out[call])
    for call in ("Pump.stats", "Pump.layout", "Pump.start", "Pump._next", "Pump._try_next",
                 "Pump.run"):
        assert out[call].startswith("RuntimeError: ") and "Pump(" in out[call], (call, out[call])
    for harmless in ("Batch.len", "Batch.released", "Batch.exports", "Batch.repr", "Pump.stop"):
        assert out[harmless] == "ok", (harmless, out[harmless])
    assert "FilterManager" in out["_run_driver(ServerPort.__new__)"]
    for harmless in ("Port.handle", "Port.closed", "Port.close", "Port.repr", "Message.repr",
                     "Message.wants_reply", "ClientPort.repr", "ServerPort.closed",
                     "ServerPort.clients", "ServerPort.close", "ServerPort._unload",
                     "ServerPort.repr", "SendResult.repr", "SendResult.name", "CReference.running",
                     "CReference.stats", "CReference.stop", "CReference.repr"):
        assert out[harmless] == "ok", (harmless, out[harmless])


class _Big:
    """Stands for a large local (a 1 MiB message) that a failing callback's frame holds."""


def test_callback_errors_are_bounded_and_release_their_frames(fm, port_name, caplog):
    import logging
    import weakref

    import fastport
    from fastport.status import PortError

    refs = []

    def message_notify(client, data, out_size):
        big = _Big()
        refs.append(weakref.ref(big))
        raise ValueError(int(data))

    server = fm.create_port(port_name, message_notify=message_notify)
    n = 100
    caplog.set_level(logging.ERROR, logger="fastport.sim")
    with fastport.connect(port_name) as port:
        for i in range(n):
            try:
                port.send_message(b"%d" % i, 4)
            except PortError:
                pass
    errors = server.callback_errors
    assert len(errors) == 32
    assert server.callback_errors_dropped == n - 32
    # the newest are kept, in order
    assert [(which, e.args[0]) for which, e in errors] == \
        [("message_notify", i) for i in range(n - 32, n)]
    # every failed callback's frame was cleared: nothing it held is still alive
    assert len(refs) == n
    assert [r for r in refs if r() is not None] == []
    # the kept exceptions still say where they came from
    assert errors[-1][1].__traceback__ is not None
    # every failure, kept or not, was logged on fastport.sim
    logged = [r for r in caplog.records if r.name == "fastport.sim" and r.levelno == logging.ERROR]
    assert len(logged) == n
    assert all(r.getMessage() == f"message_notify of port {port_name!r} raised" for r in logged)
