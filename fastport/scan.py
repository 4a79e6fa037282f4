"""`fastport scan`: an on-access scanner on fanotify and the Pump (Linux, CAP_SYS_ADMIN).

Every open of a file under the marked paths waits while the file's content (up to max_bytes,
mapped, not copied, where the engine allows) is scanned with YARA rules; a match is denied (or,
with audit, allowed and reported). One line per denial: path, pid, process name, rule. A result
cache keyed by (device, inode, mtime, size) spares unchanged files a second scan.

Two engines behind one interface (`Engine.scan(fd, size) -> rule names`):
  yara-x       (PyPI yara-x) faster per scan, holds the GIL, needs bytes (the content is read).
  yara         (PyPI yara-python) releases the GIL and scans a mapping without copying, so a
               thread pool scans a batch in parallel.
Both are optional: `pip install 'fastport[scan]'`.

Fail open: what the scanner cannot answer in time (the deadline) is allowed, like clamonacc.
"""
from __future__ import annotations

import fnmatch
import mmap
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence, TextIO

import numpy as np

import fastport
import fastport.fanotify as fan

__all__ = ["Engine", "engine", "Scanner", "ENGINES"]

ENGINES = ("yara-x", "yara")
DEFAULT_ENGINE = "yara-x"  # faster here per file (README: fastport bench --source fanotify --scan)


class RulesError(ValueError):
    """The rules file does not compile (the engine's message says where)."""


class Engine:
    """Scans a file's content given its open fd; `parallel`: scans may run in threads at once
    (the engine releases the GIL)."""
    name = ""
    parallel = False

    def scan(self, fd: int, size: int) -> list[str]:
        raise NotImplementedError


class _YaraX(Engine):
    name = "yara-x"

    def __init__(self, source: str) -> None:
        import yara_x
        try:
            self._rules = yara_x.compile(source)
        except yara_x.CompileError as e:
            raise RulesError(str(e)) from None

    def scan(self, fd: int, size: int) -> list[str]:
        data = os.pread(fd, size, 0) if size else b""  # yara-x takes bytes only
        return [r.identifier for r in self._rules.scan(data).matching_rules]


class _Yara(Engine):
    name = "yara"
    parallel = True

    def __init__(self, source: str) -> None:
        import yara
        try:
            self._rules = yara.compile(source=source)
        except yara.SyntaxError as e:
            raise RulesError(str(e)) from None

    def scan(self, fd: int, size: int) -> list[str]:
        if size == 0:
            return [m.rule for m in self._rules.match(data=b"")]
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as m:  # scanned in place, no copy
            return [r.rule for r in self._rules.match(data=m)]


def engine(name: str, rules_path: str) -> Engine:
    """The engine `name` ("yara-x" or "yara") with the rules of `rules_path` compiled; raises
    RulesError when they do not compile, ImportError naming the package when it is missing."""
    with open(rules_path, encoding="utf-8") as f:
        source = f.read()
    try:
        if name == "yara-x":
            return _YaraX(source)
        if name == "yara":
            return _Yara(source)
    except ImportError as e:
        pkg = "yara-x" if name == "yara-x" else "yara-python"
        raise ImportError(f"engine {name!r} needs the {pkg} package: pip install "
                          f"'fastport[scan]' ({e})") from None
    raise ValueError(f"unknown engine {name!r}: expected one of {ENGINES}")


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


class Scanner:
    """The verdict logic of `fastport scan`, as a Pump handler (`scanner.handle`)."""

    def __init__(self, eng: Engine, *, deny: bool = True, max_bytes: int = 32 << 20,
                 exclude: Sequence[str] = (), out: TextIO = sys.stdout, threads: int = 4) -> None:
        self.engine = eng
        self.deny = deny
        self.max_bytes = max_bytes
        self.exclude = tuple(exclude)
        self.out = out
        self.cache: dict[tuple[int, int, int, int], tuple[str, ...]] = {}
        self.counts = {"events": 0, "scanned": 0, "cached": 0, "excluded": 0, "matches": 0,
                       "denied": 0, "errors": 0, "bytes": 0}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads) if eng.parallel and threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _verdict(self, fd: int, path: str) -> tuple[str, ...]:
        """The matching rules of the file open as `fd` (cached by identity and version)."""
        if self.exclude and any(fnmatch.fnmatch(path, g) for g in self.exclude):
            self._count("excluded")
            return ()
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self.cache.get(key)
        if hit is not None:
            self._count("cached")
            return hit
        size = min(st.st_size, self.max_bytes)
        rules = tuple(self.engine.scan(fd, size))
        self.cache[key] = rules
        with self._lock:
            self.counts["scanned"] += 1
            self.counts["bytes"] += size
        return rules

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _safe_verdict(self, fd: int, path: str) -> tuple[str, ...]:
        try:
            return self._verdict(fd, path)
        except (OSError, ValueError):  # unreadable (a FIFO, a device): allowed, counted
            self._count("errors")
            return ()

    def handle(self, batch: Any) -> None:
        msgs = batch.messages
        fds = [int(x) for x in msgs["fd"]]
        paths = [bytes(p).rstrip(b"\0").decode("utf-8", "surrogateescape") for p in msgs["path"]]
        if self._pool is not None and len(fds) > 1:
            results = list(self._pool.map(self._safe_verdict, fds, paths))
        else:
            results = [self._safe_verdict(fd, p) for fd, p in zip(fds, paths)]
        verdicts = np.full(len(fds), fan.ALLOW, dtype=np.uint32)
        for i, rules in enumerate(results):
            if not rules:
                continue
            self.counts["matches"] += 1
            pid = int(msgs["pid"][i])
            if self.deny:
                verdicts[i] = fan.DENY
                self.counts["denied"] += 1
            word = "denied" if self.deny else "audit"
            self.out.write(f"{word} {paths[i]} pid={pid} ({_comm(pid)}) rule={','.join(rules)}\n")
        self.counts["events"] += len(fds)
        batch.replies["verdict"] = verdicts
        batch.reply()
        self.out.flush()


def run(paths: Sequence[str], rules: str, *, engine_name: str = DEFAULT_ENGINE, deny: bool = True,
        max_bytes: int = 32 << 20, exclude: Sequence[str] = (), mark: str = "inode",
        out: TextIO = sys.stdout, status: TextIO = sys.stderr,
        deadline: Optional[float] = 5.0) -> dict[str, Any]:
    """Serve `paths` until SIGINT or SIGTERM; returns the summary (also printed to `status`).
    Rules and paths are checked before any mark is placed."""
    eng = engine(engine_name, rules)
    scanner = Scanner(eng, deny=deny, max_bytes=max_bytes, exclude=exclude, out=out)
    port = fan.open(paths, mark=mark, resolve_paths=True)
    stop = threading.Event()
    pump = fastport.Pump(port, message=port.message, reply=port.reply,
                         default_reply=port.default_reply, deadline=deadline)

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        pump.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.monotonic()
    tty = status.isatty()

    def progress() -> None:
        last, last_t = 0, time.monotonic()
        while not stop.wait(1.0 if tty else 10.0):
            now, n = time.monotonic(), scanner.counts["events"]
            p99 = pump.stats["latency_us"]["p99"]
            line = (f"{(n - last) / (now - last_t):,.0f} events/s, {n:,} events, "
                    f"{scanner.counts['denied']} denied, p99 decision {p99 / 1e3:.2f} ms")
            status.write(f"\r{line}\033[K" if tty else line + "\n")
            status.flush()
            last, last_t = n, now

    shower = threading.Thread(target=progress, daemon=True)
    try:
        with pump:
            shower.start()
            status.write(f"watching {', '.join(map(str, paths))} with {eng.name} "
                         f"({'deny' if deny else 'audit'}); Ctrl-C or SIGTERM to stop\n")
            status.flush()
            pump.run(scanner.handle)
    finally:
        stop.set()
        for s, h in old.items():
            signal.signal(s, h)
        st = pump.stats
        port.close()
        scanner.close()
    summary = dict(scanner.counts, seconds=round(time.monotonic() - t0, 3),
                   defaulted=st["defaulted"], p99_ms=st["latency_us"]["p99"] / 1e3,
                   excluded_in_c=port.stats["excluded"], engine=eng.name)
    status.write(("\n" if tty else "") + "summary: " +
                 ", ".join(f"{k}={v}" for k, v in summary.items()) + "\n")
    status.flush()
    return summary
