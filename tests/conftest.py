import itertools
import os
import tempfile
import threading

import pytest

import fastport

try:
    from fastport.sim import FilterManager
except ImportError:  # the Windows build: no emulator (only the suites that need none run there)
    FilterManager = None

TRANSPORTS = ["inproc", "socket"]
_names = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def runtime_dir():
    """Socket-transport ports of this test run live in a private directory."""
    with tempfile.TemporaryDirectory(prefix="fastport-test-") as d:
        os.chmod(d, 0o711)
        old = os.environ.get("FASTPORT_RUNTIME_DIR")
        os.environ["FASTPORT_RUNTIME_DIR"] = d
        yield d
        if old is None:
            os.environ.pop("FASTPORT_RUNTIME_DIR", None)
        else:
            os.environ["FASTPORT_RUNTIME_DIR"] = old


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


@pytest.fixture
def fm(transport):
    with FilterManager(transport) as m:
        yield m


@pytest.fixture
def port_name():
    return f"\\TestPort{os.getpid()}_{next(_names)}"


@pytest.fixture
def served(fm, port_name):
    """A port on the emulator, one client connected: (server port, its client port, the Port)."""
    server = fm.create_port(port_name)
    port = fastport.connect(port_name)
    yield server, server.clients[0], port
    port.close()


class Sender(threading.Thread):
    """A kernel-side FltSendMessage on its own thread; `.result` once joined."""

    def __init__(self, server, client, data, **kw):
        super().__init__(daemon=True)
        self.args_ = (server, client, data, kw)
        self.result = None
        self.error = None

    def run(self):
        server, client, data, kw = self.args_
        try:
            self.result = server.send(client, data, **kw)
        except BaseException as e:  # surfaced by finish()
            self.error = e

    def finish(self, timeout=10):
        self.join(timeout)
        assert not self.is_alive(), "sender hung"
        if self.error:
            raise self.error
        return self.result


@pytest.fixture
def sender():
    started = []

    def start(server, client, data, **kw):
        s = Sender(server, client, data, **kw)
        s.start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.join(10)
