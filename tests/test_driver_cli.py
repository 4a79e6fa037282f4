"""`fastport driver` as a user meets it: the README's two-terminal example, what a reply of the
wrong size looks like, --wait, --version."""
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

import fastport
from fastport import protocols
from fastport.dtypes import SCANNER_NOTIFICATION, struct
from fastport.pump import Pump

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scanner_service.py"


def _driver(port_name, *args):
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastport.cli", "driver", "--port", port_name, "--seconds", "1",
         "--senders", "4", "--wait", "60", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        env=os.environ.copy())
    assert "waiting" in proc.stdout.readline()
    return proc


def test_scanner_example_service_against_the_driver(port_name):
    driver = _driver(port_name, "--protocol", "scanner")
    service = None
    try:
        service = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", port_name],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   cwd="/", env=os.environ.copy())
        out, err = driver.communicate(timeout=60)
        assert driver.returncode == 0, out + err
        assert "bad replies 0  too long 0" in out
        sout, serr = service.communicate(timeout=60)
        assert service.returncode == 0, sout + serr
        assert f"connected to {port_name!r}" in sout
        answered = int(sout.split("answered ")[1].split()[0].replace(",", ""))
        assert answered > 0
    finally:
        for p in (driver, service):
            if p is not None:
                p.kill()
                p.wait()


def _serve_wrongly(port_name, driver, message, reply, fill):
    """A pump that answers with `reply` records filled by fill(batch), until the driver ends."""
    port = fastport.connect(port_name)

    def handler(batch):
        fill(batch)
        batch.reply()

    def serve(pump):
        try:
            pump.run(handler)
        except fastport.PortDisconnected:  # the driver exits at the end
            pass

    with port, Pump(port, message=message, reply=reply) as pump:
        t = threading.Thread(target=serve, args=(pump,))
        t.start()
        out, err = driver.communicate(timeout=60)
        pump.stop()
        t.join()
    return out, err


def test_driver_says_when_replies_are_too_short(port_name):
    # a bench service that forgot the verdict: 4-byte replies where the protocol wants 8
    driver = _driver(port_name, "--protocol", "bench")
    try:
        short = struct([("checksum", "uint32_t")], name="SHORT_REPLY")
        out, err = _serve_wrongly(port_name, driver, protocols.bench(1024).message, short,
                                  lambda b: b.replies.__setitem__("checksum", 1))
        assert driver.returncode == 1, out + err
        lines = [line.strip() for line in out.splitlines()]
        n = next(line for line in lines if "replies had 4 bytes" in line)
        assert n.endswith("the bench protocol expects 8 (a reply is the 16-byte "
                          "FILTER_REPLY_HEADER followed by exactly 8 byte(s) of BENCH_REPLY "
                          "{u32 checksum, u32 verdict})"), n
        count = int(n.split()[0].replace(",", ""))
        assert count > 0 and f"bad replies {count}" in out  # every bad reply was a short one
        assert "wrong content" not in out
    finally:
        driver.kill()
        driver.wait()


def test_driver_says_when_replies_are_too_long(port_name):
    # the classic scanner mistake: the reply struct counted with its header, 17 bytes for 1
    driver = _driver(port_name, "--protocol", "scanner")
    try:
        padded = struct([("Header", "uint8_t", 16), ("SafeToOpen", "uint8_t")], pack=1,
                        name="SCANNER_REPLY_MESSAGE")
        out, err = _serve_wrongly(port_name, driver, SCANNER_NOTIFICATION, padded,
                                  lambda b: b.replies.__setitem__("SafeToOpen", np.uint8(1)))
        assert driver.returncode == 1, out + err
        assert "bad replies 0" in out
        line = next(line.strip() for line in out.splitlines() if "longer than" in line)
        count = int(line.split()[0].replace(",", ""))
        assert count > 0 and f"too long {count}" in out
        assert "longer than the 1 byte(s) the scanner protocol expects" in line
        assert "STATUS_BUFFER_OVERFLOW" in line
    finally:
        driver.kill()
        driver.wait()


def test_driver_wait_bounds_the_wait_for_a_service(port_name):
    p = subprocess.run([sys.executable, "-m", "fastport.cli", "driver", "--port", port_name,
                        "--wait", "0.1"], capture_output=True, text=True, timeout=60, cwd="/")
    assert p.returncode == 1
    assert p.stderr.strip() == (f"fastport driver: no service connected to {port_name!r} "
                                "within 0.1 s")
    p = subprocess.run([sys.executable, "-m", "fastport.cli", "driver", "--port", port_name,
                        "--wait", "-1"], capture_output=True, text=True, timeout=60, cwd="/")
    assert p.returncode == 2 and "--wait" in p.stderr


def test_version():
    p = subprocess.run([sys.executable, "-m", "fastport.cli", "--version"], capture_output=True,
                       text=True, timeout=60, cwd="/")
    assert p.returncode == 0
    assert p.stdout.strip() == f"fastport {fastport.__version__}"
