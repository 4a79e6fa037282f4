"""`fastport bench --source fanotify`: K opener processes open files in a marked directory while
one client answers the open permission events; the same table and JSON keys as the emulated
bench (`source` = "fanotify"). Clients: pump, c-reference (src/cref/fan_loop.c), python-loop
(os.read / os.write per event). Latency is what the opening process sees around open();
cpu_us_per_msg is this process's CPU (the client's threads; the openers are other processes)
per event.

`--scan RULES`: files/s and MB/s of each scan engine on a corpus of real files (the Python
standard library), through the Scanner a `fastport scan` runs, served by the pump."""
from __future__ import annotations

import os
import resource
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from typing import Any, Callable

import numpy as np

import fastport
import fastport.fanotify as fan
from fastport import _ext

CLIENTS = ("pump", "c-reference", "python-loop")
NFILES = 16

# Each opener: open/close files round-robin for `seconds`, then write its latencies (ns, int64)
OPENER = """
import os, sys, time
import numpy as np
seconds, out, files = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
lat = []
end = time.monotonic() + seconds
t = time.perf_counter_ns
i = 0
while time.monotonic() < end:
    for p in files:
        a = t(); fd = os.open(p, os.O_RDONLY); b = t(); os.close(fd)
        lat.append(b - a)
    i += 1
np.asarray(lat, dtype=np.int64).tofile(out)
"""

_META = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata
_RESP = struct.Struct("=iI")       # struct fanotify_response


def _python_loop(port: Any, stop_fd: int) -> None:
    import select
    fd = port.fileno()
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    poll.register(stop_fd, select.POLLIN)
    while True:
        try:
            buf = os.read(fd, 256 * _META.size)
        except BlockingIOError:
            if any(f == stop_fd for f, _ in poll.poll()):
                return
            continue
        off = 0
        while off + _META.size <= len(buf):
            ev_len, _v, _r, _m, _mask, efd, _pid = _META.unpack_from(buf, off)
            if efd >= 0:
                os.write(fd, _RESP.pack(efd, fan.ALLOW))
                os.close(efd)
            off += ev_len


def _serve(client: str, port: Any) -> Callable[[], None]:
    """Starts `client` on `port`; returns its stop function."""
    if client == "pump":
        pump = fastport.Pump(port, message=port.message, reply=port.reply,
                             default_reply=port.default_reply, deadline=5.0)

        def handler(batch: Any) -> None:
            batch.replies["verdict"] = fan.ALLOW
            batch.reply()

        pump.start()
        t = threading.Thread(target=pump.run, args=(handler,))
        t.start()

        def stop_pump() -> None:
            pump.stop()
            t.join()
        return stop_pump
    stop_fd = os.eventfd(0, os.EFD_CLOEXEC)
    target = (lambda: _ext._fan_cref_run(port, stop_fd)) if client == "c-reference" else (
        lambda: _python_loop(port, stop_fd))
    t = threading.Thread(target=target)
    t.start()

    def stop_loop() -> None:
        os.eventfd_write(stop_fd, 1)
        t.join()
        os.close(stop_fd)
    return stop_loop


def run_case(client: str, *, senders: int, seconds: float, workdir: str) -> dict:
    files = []
    for i in range(NFILES):
        p = os.path.join(workdir, f"f{i}")
        with open(p, "wb") as f:
            f.write(b"x")
        files.append(p)
    outs = [os.path.join(workdir, f"lat{k}.bin") for k in range(senders)]
    with fan.open(workdir) as port:
        stop = _serve(client, port)
        try:
            t0 = time.monotonic()
            # the openers are other processes: this process's CPU is the client's (its main
            # thread only waits for them)
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            kids = [subprocess.Popen([sys.executable, "-c", OPENER, str(seconds), o, *files])
                    for o in outs]
            codes = [k.wait() for k in kids]
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            wall = time.monotonic() - t0
        finally:
            stop()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    lat = np.concatenate([np.fromfile(o, dtype=np.int64) for o in outs if os.path.exists(o)])
    q = np.percentile(lat, [50, 90, 99, 99.9]) / 1e3 if len(lat) else [0.0] * 4
    return {
        "client": client, "source": "fanotify", "transport": "kernel", "protocol": "open_perm",
        "senders": senders, "payload": 0, "mode": "closed", "rate": 0.0, "seconds": seconds,
        "messages": int(len(lat)), "throughput": len(lat) / seconds,
        "latency_us": {"p50": q[0], "p90": q[1], "p99": q[2], "p999": q[3],
                       "max": float(lat.max()) / 1e3 if len(lat) else 0.0},
        "timeouts": 0, "bad_replies": 0, "disconnects": 0,
        "errors": sum(1 for c in codes if c != 0), "threads": 2, "outstanding": 8,
        "histogram": None, "interrupted": False, "python_us_per_msg": None,
        "cpu_us_per_msg": cpu * 1e6 / len(lat) if len(lat) else None,
        "wall_seconds": wall,
    }


def run_bench(*, senders: list[int], clients: list[str], seconds: float,
              repeat: int = 1) -> list[dict]:
    """Every client per K, taking turns; the median run by throughput is kept."""
    from fastport import benchmark
    rows = []
    for k in senders:
        runs: dict[str, list[dict]] = {c: [] for c in clients}
        for _ in range(repeat):
            for c in clients:
                with tempfile.TemporaryDirectory(prefix="fastport-fanbench-") as d:
                    runs[c].append(run_case(c, senders=k, seconds=seconds, workdir=d))
        for c in clients:
            rs = sorted(runs[c], key=lambda r: r["throughput"])
            rows.append(rs[len(rs) // 2])
    benchmark.add_ratios(rows)
    return rows


def scan_bench(rules: str, *, engines: tuple[str, ...] = ("yara-x", "yara"),
               corpus: str | None = None) -> list[dict]:
    """Each engine through Scanner + pump on a copy of a corpus of real files (default: the
    standard library's .py files): one process opens every file once; files/s and MB/s."""
    from fastport import scan
    src = corpus or sysconfig.get_paths()["stdlib"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastport-scanbench-") as d:
        tree = os.path.join(d, "corpus")
        shutil.copytree(src, tree, ignore=shutil.ignore_patterns("__pycache__", "site-packages",
                                                                 "*.so", "test", "tests"))
        files = [os.path.join(r, f) for r, _, fs in os.walk(tree) for f in fs]
        dirs = [r for r, _, _ in os.walk(tree)]
        listing = os.path.join(d, "files.txt")
        with open(listing, "w") as f:
            f.write("\n".join(files))
        reader = ("import sys\nfor p in open(sys.argv[1]).read().split('\\n'):\n"
                  "    open(p, 'rb').close()\n")
        for name in engines:
            sc = scan.Scanner(scan.engine(name, rules), out=open(os.devnull, "w"))
            with fan.open(dirs, resolve_paths=True) as port:
                pump = fastport.Pump(port, message=port.message, reply=port.reply,
                                     default_reply=port.default_reply, deadline=30.0)
                pump.start()
                t = threading.Thread(target=pump.run, args=(sc.handle,))
                t.start()
                t0 = time.monotonic()
                subprocess.run([sys.executable, "-c", reader, listing], check=True)
                dt = time.monotonic() - t0
                pump.stop()
                t.join()
            sc.close()
            rows.append({"engine": name, "files": sc.counts["scanned"], "seconds": dt,
                         "files_per_s": sc.counts["scanned"] / dt,
                         "mb_per_s": sc.counts["bytes"] / dt / 1e6,
                         "bytes": sc.counts["bytes"], "denied": sc.counts["denied"]})
    return rows


def format_scan(rows: list[dict]) -> str:
    head = f"{'engine':<10}{'files':>8}{'MB':>9}{'seconds':>9}{'files/s':>10}{'MB/s':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['engine']:<10}{r['files']:>8}{r['bytes'] / 1e6:>9.1f}"
                     f"{r['seconds']:>9.2f}{r['files_per_s']:>10,.0f}{r['mb_per_s']:>9.1f}")
    return "\n".join(lines)
