"""What a new user expects of the API: the error classes at the top, connect(wait=...), errors
that name the argument, numpy scalars accepted like Python numbers, lifecycle logging."""
import logging
import threading

import numpy as np
import pytest

import fastport
from fastport import _ext, status

ERRORS = ["PortError", "PortDisconnected", "NoWaiterForReply", "PortNotFound", "PortTimeout",
          "OperationAborted", "AccessDenied", "ConnectionLimit", "BufferTooSmall"]


def test_error_classes_importable_from_fastport():
    for name in ERRORS:
        assert name in fastport.__all__
        assert getattr(fastport, name) is getattr(status, name)
    ns = {}
    exec("from fastport import *", ns)
    assert all(name in ns for name in ERRORS)


# ---- connect(wait=...) ----

def test_connect_wait_retries_until_the_port_exists(fm, port_name, monkeypatch):
    missed = threading.Event()
    real = fastport._connect_sim

    def counting(*args):
        try:
            return real(*args)
        except fastport.PortNotFound:
            missed.set()
            raise

    monkeypatch.setattr(fastport, "_connect_sim", counting)
    got = {}

    def client():
        try:
            got["port"] = fastport.connect(port_name, wait=60)
        except BaseException as e:
            got["error"] = e

    t = threading.Thread(target=client, daemon=True)
    t.start()
    assert missed.wait(30)  # the first attempt found nothing: the port does not exist yet
    server = fm.create_port(port_name)
    t.join(30)
    assert not t.is_alive()
    assert "error" not in got, got.get("error")
    with got["port"] as port:
        assert not port.closed
        assert len(server.clients) == 1


def test_connect_wait_gives_up_with_port_not_found(port_name):
    with pytest.raises(fastport.PortNotFound):
        fastport.connect(port_name, wait=0.05)
    with pytest.raises(fastport.PortNotFound):
        fastport.connect(port_name, wait=np.float32(0))
    with pytest.raises(fastport.PortNotFound):
        fastport.connect(port_name)


@pytest.mark.parametrize("wait, error", [(-1, ValueError), (float("nan"), ValueError),
                                         (True, TypeError), ("1", TypeError)])
def test_connect_wait_checks_its_argument(port_name, wait, error):
    with pytest.raises(error, match="wait"):
        fastport.connect(port_name, wait=wait)


def test_connect_wait_is_interruptible(port_name, monkeypatch):
    calls = []

    def interrupted_sleep(seconds):
        calls.append(seconds)
        raise KeyboardInterrupt  # what Ctrl-C does to a sleeping main thread

    monkeypatch.setattr(fastport._time, "sleep", interrupted_sleep)
    with pytest.raises(KeyboardInterrupt):
        fastport.connect(port_name, wait=3600)
    assert len(calls) == 1 and 0 < calls[0] <= 3600


# ---- argument errors name the argument; numpy scalars are numbers ----

def test_errors_name_the_argument(fm, port_name):
    server = fm.create_port(port_name)
    with fastport.connect(port_name) as port:
        client = server.clients[0]
        with pytest.raises(ValueError, match="timeout"):
            port.get_message(64, timeout=-1)
        with pytest.raises(ValueError, match="reply_length"):
            server.send(client, b"x", reply_length=-1)
        with pytest.raises(TypeError, match="out_size"):
            port.send_message(b"x", 1.5)
        with pytest.raises(TypeError, match="message_id"):
            port.reply_message("1", b"")
        with pytest.raises(ValueError, match="warmup"):
            _ext._run_driver(client, senders=1, messages=1, warmup=-1)
        with pytest.raises(TypeError, match="seed"):
            _ext._run_driver(client, senders=1, messages=1, seed=1.0)


def test_numpy_scalars_are_accepted_like_python_numbers(fm, port_name):
    replied = []

    def message_notify(client, data, out_size):
        return b"ok"[:out_size]

    server = fm.create_port(port_name, max_connections=np.int64(2), message_notify=message_notify)
    assert server.max_connections == 2
    with fastport.connect(port_name) as port:
        client = server.clients[0]
        assert port.send_message(b"x", np.uint16(2)) == b"ok"
        with pytest.raises(fastport.PortTimeout):
            port.get_message(np.int32(64), timeout=np.float32(0.01))
        with pytest.raises(fastport.PortTimeout):
            port.get_message(64, timeout=np.float64(0.01))
        # a send nobody receives times out after np.float32 seconds
        r = server.send(client, b"ping", reply_length=np.int64(1), timeout=np.float32(0.01))
        assert r.status == status.STATUS_TIMEOUT
        with pytest.raises(fastport.NoWaiterForReply):
            port.reply_message(np.uint64(12345), b"x", status=np.int32(0))
        r = _ext._run_driver(client, senders=np.int8(1), messages=np.int64(1),
                             timeout=np.float32(0.01), seed=np.uint32(3), rate=np.float16(0),
                             warmup=np.int64(0))
        assert r["messages"] == 1 and r["timeouts"] == 1
        replied.append(r)
    # bools (Python or numpy) are never numbers here
    for bad in (True, np.bool_(True)):
        with pytest.raises(TypeError, match="max_connections"):
            fm.create_port(port_name + "b", max_connections=bad)
        with pytest.raises(TypeError, match="timeout"):
            server.send(client, b"x", timeout=bad)


# ---- lifecycle logging ----

def test_lifecycle_is_logged(fm, port_name, caplog):
    caplog.set_level(logging.DEBUG, logger="fastport")
    server = fm.create_port(port_name)
    port = fastport.connect(port_name)
    port.close()
    server.close()

    def records(logger):
        return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == logger]

    sim = records("fastport.sim")
    assert (logging.INFO, f"server port {port_name!r} created ({fm.transport} transport, "
            "max_connections 1, access owner)") in sim
    assert any(lvl == logging.INFO and m.startswith(f"server port {port_name!r} closed")
               for lvl, m in sim)
    user = records("fastport.port")
    assert any(lvl == logging.INFO and m.startswith(f"connected to port {port_name!r}")
               for lvl, m in user)
    assert (logging.INFO, f"port {port_name!r} closed") in user


def test_cli_checks_take_numpy_numbers_and_refuse_bools():
    from fastport import cli

    assert cli._positive_int("--senders", np.int64(3)) == 3
    assert cli._nonneg("--timeout", np.float32(0.5)) == 0.5
    for bad in (True, np.bool_(False), 1.5):
        with pytest.raises(cli.UsageError, match="--senders"):
            cli._positive_int("--senders", bad)
    with pytest.raises(cli.UsageError, match="--timeout"):
        cli._nonneg("--timeout", np.True_)
