"""The `fastport` command: `fastport bench` (the main job) and `fastport driver`."""
from __future__ import annotations

import argparse
import json
import numbers
import os
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

from fastport.status import PortError


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def _payload(text: str) -> "int | tuple[int, int]":
    try:
        if ":" in text:
            lo, hi = (int(x) for x in text.split(":", 1))
            if lo > hi:
                raise UsageError(f"payload range {text!r}: the minimum exceeds the maximum")
            value: "int | tuple[int, int]" = (lo, hi)
        else:
            lo = hi = int(text)
            value = lo
    except ValueError:
        raise UsageError(f"payload {text!r} is not a size in bytes or a range like 64:4096")
    if lo < 16:
        raise UsageError(f"payload {text!r}: the bench protocol needs at least 16 bytes")
    if hi > 1 << 20:
        raise UsageError(f"payload {text!r}: larger than the 1 MiB a message may carry")
    return value


def _positive_int(name: str, value: Any, low: int = 1, high: int = 4096) -> int:
    """An int option (a Python or numpy integer, never a bool) in [low, high]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise UsageError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _nonneg(name: str, value: Any) -> Optional[float]:
    """A number option >= 0 (a Python or numpy number, never a bool) or None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a number, got {value!r}")
    if not value >= 0:
        raise UsageError(f"{name} must be >= 0, got {value}")
    return float(value)


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where the help text says it (default None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action) or ""


def _parser() -> argparse.ArgumentParser:
    from fastport import __version__

    p = argparse.ArgumentParser(prog="fastport", description="Answer Filter Manager port messages "
                                "from Python at C speed: benchmarks and the test driver.")
    p.add_argument("--version", action="version", version=f"fastport {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    fmt = _DefaultsShown
    b = sub.add_parser("bench", help="run every client against the emulated driver (main job)",
                       formatter_class=fmt,
                       description="Runs every client against the same load-generating driver "
                       "settings in one run and prints a table with throughput, latency, the "
                       "ratio to the C reference client and the clients' CPU per message. "
                       "The first line estimates how long the run takes.")
    b.add_argument("--transport", nargs="+", choices=["inproc", "socket"],
                   default=["inproc", "socket"], help="emulated transports to run on")
    b.add_argument("--senders", nargs="*", type=int, default=None, metavar="K",
                   help="thread-per-message loads: K driver threads each blocked in a send "
                   "(default: 8 64, or none when --inflight is given)")
    b.add_argument("--inflight", nargs="+", type=int, default=[], metavar="N",
                   help="in-flight loads: N messages kept in flight by a few driver threads "
                   "through asynchronous sends (cheap for the driver)")
    b.add_argument("--payload", nargs="+", default=["1024"], metavar="B",
                   help="message payload bytes, or a range MIN:MAX (uniform)")
    b.add_argument("--seconds", type=float, default=1.0, help="measured seconds per run")
    b.add_argument("--repeat", type=int, default=3,
                   help="runs per case, clients taking turns; the median run is reported")
    b.add_argument("--clients", default="pump,pump-per-message,c-reference,python-loop",
                   help="comma-separated clients to run")
    b.add_argument("--protocol", choices=["bench", "scanner"], default="bench",
                   help="message protocol (scanner: 1032-byte messages)")
    b.add_argument("--threads", type=int, default=2, help="worker threads of every client")
    b.add_argument("--outstanding", type=int, default=64, help="gets in flight per thread")
    b.add_argument("--batch", type=int, default=256, help="pump batch size")
    b.add_argument("--timeout", type=float, default=10000, metavar="MS",
                   help="per-send timeout of the driver")
    b.add_argument("--open-at", nargs="+", type=float, default=[0.5], metavar="F",
                   help="open-loop runs at these fractions of c-reference's closed-loop "
                   "saturation (the largest load)")
    b.add_argument("--no-open-loop", action="store_true",
                   help="skip the open-loop runs")
    b.add_argument("--memcpy", action="store_true",
                   help="also measure this machine's memcpy bandwidth (the physical limit for "
                   "large messages) and print it with each payload's messages/s equivalent")
    b.add_argument("--json", metavar="FILE", help="write every result (and the machine) here")
    b.add_argument("--plot", metavar="FILE.png",
                   help="draw the results: throughput against load, latency against offered "
                   "rate, CPU per message (needs matplotlib: pip install 'fastport[plot]')")
    b.add_argument("--plot-from", metavar="RUN.json",
                   help="run nothing: redraw the plot of a --json file into --plot (default: "
                   "RUN.png beside it)")
    b.add_argument("--source", choices=["emulated", "fanotify"], default="emulated",
                   help="fanotify: K opener processes on a marked directory (Linux, root); "
                   "clients pump, c-reference, python-loop")
    b.add_argument("--scan", metavar="RULES.yar",
                   help="with --source fanotify: files/s and MB/s of each scan engine instead")

    d = sub.add_parser("driver", help="the load-generating test driver as its own process",
                       formatter_class=fmt,
                       description="Creates the emulated port NAME on the socket transport, "
                       "waits for a service to connect, and drives it, checking every reply: "
                       "with K sender threads each blocked in a send (thread per message), or "
                       "with --inflight N messages kept in flight by a few threads. Exit status "
                       "0 when every reply was right, 1 otherwise (or when no service connected "
                       "within --wait), 2 for a bad argument.")
    d.add_argument("--port", required=True, metavar="NAME", help="port name to create")
    d.add_argument("--senders", type=int, default=None, metavar="K",
                   help="sender threads (default: 8 thread per message; with --inflight, one "
                   "per 1024 in flight)")
    d.add_argument("--inflight", type=int, default=0, metavar="N",
                   help="keep N messages in flight through asynchronous sends (0: thread per "
                   "message)")
    d.add_argument("--payload", default="1024", metavar="B", help="bytes or MIN:MAX")
    d.add_argument("--rate", type=float, default=0.0, help="open loop, messages/s (0 = closed)")
    d.add_argument("--seconds", type=float, default=10.0, help="measured seconds")
    d.add_argument("--timeout", type=float, default=None, metavar="MS",
                   help="per-send timeout (default: none)")
    d.add_argument("--protocol", choices=["bench", "scanner"], default="bench",
                   help="message protocol")
    d.add_argument("--max-connections", type=int, default=8,
                   help="connections the port accepts")
    d.add_argument("--access", choices=["owner", "everyone"], default="owner",
                   help="who may connect (owner: root and this user)")
    d.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="give up (exit 1) when no service connected within SECONDS "
                   "(default: wait until Ctrl-C)")
    d.add_argument("--json", metavar="FILE", help="write the whole result here")

    s = sub.add_parser("scan", help="on-access scanning with YARA rules (fanotify, Linux, root)",
                       formatter_class=fmt,
                       description="Serves fanotify open permission events on PATH... with the "
                       "pump: each opened file is scanned with the YARA rules and a match is "
                       "denied (--audit: allowed and reported), one line per denial. Ctrl-C or "
                       "SIGTERM prints a summary and exits 0. Fails open: what is not scanned "
                       "within --deadline seconds is allowed.")
    s.add_argument("paths", nargs="+", metavar="PATH", help="files or directories to watch")
    s.add_argument("--rules", required=True, metavar="RULES.yar", help="YARA rules file")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--deny", action="store_true", help="deny matches (the default)")
    g.add_argument("--audit", action="store_true", help="allow matches, and report them")
    s.add_argument("--engine", choices=["yara-x", "yara"], default="yara-x",
                   help="scan engine")
    s.add_argument("--max-bytes", type=int, default=32 << 20, metavar="N",
                   help="bytes of each file scanned")
    s.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="paths matching GLOB are allowed unscanned (repeatable)")
    s.add_argument("--mark", choices=["inode", "mount", "filesystem"], default="inode",
                   help="what the fanotify mark covers")
    s.add_argument("--deadline", type=float, default=5.0, metavar="SECONDS",
                   help="what is not scanned within this is allowed")
    return p


def _check_plot(a: argparse.Namespace) -> None:
    """Fail before a run, not after it, when --plot cannot draw."""
    if a.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'fastport[plot]'")


def _plot(path: str, results: list, machine: Optional[dict]) -> None:
    from fastport import benchplot
    benchplot.plot(path, results, machine)
    print(f"wrote {path}")


def _replot(a: argparse.Namespace) -> int:
    from fastport import benchplot
    a.plot = a.plot or os.path.splitext(a.plot_from)[0] + ".png"
    _check_plot(a)
    results, machine = benchplot.load_results(a.plot_from)
    _plot(a.plot, results, machine)
    return 0


def _bench_fanotify(a: argparse.Namespace) -> int:
    from fastport import benchmark, fanbench
    if a.scan and a.plot:
        raise UsageError("--plot draws bench results; --scan has files/s, not a plot")
    _check_plot(a)
    if a.scan:
        rows = fanbench.scan_bench(a.scan)
        print(fanbench.format_scan(rows))
        results = rows
    else:
        clients = [c.strip() for c in a.clients.split(",") if c.strip() in fanbench.CLIENTS]
        if not clients:
            raise UsageError(f"--source fanotify runs some of {', '.join(fanbench.CLIENTS)}")
        if not a.seconds > 0:
            raise UsageError(f"--seconds must be > 0, got {a.seconds}")
        results = fanbench.run_bench(senders=[_positive_int("--senders", k)
                                              for k in (a.senders or [8, 64])],
                                     clients=clients, seconds=a.seconds,
                                     repeat=_positive_int("--repeat", a.repeat, 1, 100))
        print(benchmark.format_table(results))
    if a.json:
        benchmark.write_json(a.json, results)
        print(f"wrote {a.json}")
    if a.plot:
        _plot(a.plot, results, benchmark.machine_info())
    return 0


def _bench(a: argparse.Namespace) -> int:
    from fastport import benchmark
    if a.plot_from:
        return _replot(a)
    if a.source == "fanotify":
        return _bench_fanotify(a)
    if a.scan:
        raise UsageError("--scan needs --source fanotify")

    clients = [c.strip() for c in a.clients.split(",") if c.strip()]
    for c in clients:
        if c not in benchmark.CLIENTS:
            raise UsageError(f"unknown client {c!r}: expected some of {', '.join(benchmark.CLIENTS)}")
    if not clients:
        raise UsageError("--clients names no client")
    inflight = [_positive_int("--inflight", n, 1, 65536) for n in a.inflight]
    if a.senders is None:
        a.senders = [] if inflight else [8, 64]
    senders = [_positive_int("--senders", k) for k in a.senders]
    if not senders and not inflight:
        raise UsageError("give --senders K... and/or --inflight N...")
    open_at = [_nonneg("--open-at", f) for f in a.open_at]
    if not all(0 < f for f in open_at):  # type: ignore[operator]
        raise UsageError("--open-at fractions must be > 0")
    payloads = [_payload(p) for p in a.payload]
    if a.protocol == "scanner":
        payloads = [1032]
    if not a.seconds > 0:
        raise UsageError(f"--seconds must be > 0, got {a.seconds}")
    _nonneg("--timeout", a.timeout)
    _check_plot(a)
    settings = benchmark.Settings(threads=_positive_int("--threads", a.threads, 1, 1024),
                                  outstanding=_positive_int("--outstanding", a.outstanding, 1,
                                                            65536),
                                  batch=_positive_int("--batch", a.batch, 1, 65536),
                                  protocol=a.protocol, timeout=a.timeout / 1000.0)
    start = time.monotonic()
    results = benchmark.run_bench(transports=a.transport, senders=senders, payloads=payloads,
                                  clients=clients, seconds=a.seconds,
                                  open_loop=not a.no_open_loop,
                                  repeat=_positive_int("--repeat", a.repeat, 1, 100),
                                  settings=settings, inflight=inflight,
                                  open_at=open_at)  # type: ignore[arg-type]
    print(benchmark.format_table(results))
    if a.memcpy:
        bw = benchmark.memcpy_bandwidth()
        print(f"\nmemcpy bandwidth of this machine: {bw / 1e9:.2f} GB/s (one thread, 64 MiB "
              f"copied, measured in this run); every message is copied at least twice (into the get's buffer, and "
              f"by the handler's view or the client's read)")
        for p in payloads:
            size = p if isinstance(p, int) else p[1]
            best = max((r["throughput"] for r in results
                        if r["payload"] == (p if isinstance(p, int) else f"{p[0]}:{p[1]}")),
                       default=0.0)
            print(f"  {size} B: memcpy alone moves {bw / size:,.0f} msg/s; best client "
                  f"{best:,.0f} msg/s = {best * size / 1e9:.2f} GB/s of payload "
                  f"({best * size / bw:.0%} of memcpy)")
        for r in results:
            r["memcpy_bytes_per_s"] = bw
    m = benchmark.machine_info()
    print(f"\n{m['date']}  {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
          f"numpy {m['numpy']}  ({time.monotonic() - start:.0f} s)")
    if a.json:
        benchmark.write_json(a.json, results)
        print(f"wrote {a.json}")
    if a.plot:
        _plot(a.plot, results, m)
    return 0


def _driver(a: argparse.Namespace) -> int:
    from fastport import _ext
    from fastport.sim import FilterManager

    inflight = _positive_int("--inflight", a.inflight, 0, 65536)
    if a.senders is None:
        from fastport.benchmark import driver_threads
        a.senders = driver_threads(inflight) if inflight else 8
    senders = _positive_int("--senders", a.senders)
    if inflight and inflight < senders:
        raise UsageError(f"--inflight {inflight} is less than --senders {senders}: each sender "
                         f"thread keeps at least one message in flight")
    payload = _payload(a.payload) if a.protocol == "bench" else 1032
    pmin, pmax = (payload, payload) if isinstance(payload, int) else payload
    if not a.rate >= 0:
        raise UsageError(f"--rate must be >= 0, got {a.rate}")
    if not a.seconds > 0:
        raise UsageError(f"--seconds must be > 0, got {a.seconds}")
    _nonneg("--timeout", a.timeout)
    maxc = _positive_int("--max-connections", a.max_connections, 1, 1024)
    wait = _nonneg("--wait", a.wait)
    tty = sys.stdout.isatty()

    with FilterManager("socket") as fm:
        try:
            server = fm.create_port(a.port, max_connections=maxc, access=a.access)
        except (ValueError, TypeError) as e:
            raise UsageError(f"port name {a.port!r}: {e}")
        print(f"fastport driver: waiting for a service to connect to {a.port!r} "
              f"(socket transport, {_ext.runtime_dir()})", flush=True)
        give_up = None if wait is None else time.monotonic() + wait
        try:
            while not server.clients:
                if give_up is not None and time.monotonic() >= give_up:
                    print(f"fastport driver: no service connected to {a.port!r} within "
                          f"{wait:g} s", file=sys.stderr, flush=True)
                    return 1
                time.sleep(0.05)
        except KeyboardInterrupt:
            print("\nfastport driver: interrupted before any service connected", flush=True)
            return 130

        load = f"{inflight} in flight" if inflight else f"{senders} threads"
        print(f"fastport driver: a service connected; driving it for {a.seconds:g} s "
              f"({load}, {'open loop at %g msg/s' % a.rate if a.rate else 'closed loop'})",
              flush=True)

        def progress(p: dict) -> None:
            line = (f"{p['seconds']:6.1f} s  {p['messages_per_s']:>11,.0f} msg/s  "
                    f"p99 {p['p99_us']:>9,.1f} us  timeouts {p['timeouts']}  "
                    f"bad replies {p['bad_replies']}{'  (warm-up)' if p.get('warmup') else ''}")
            if tty:
                print("\r" + line, end="", flush=True)
            else:
                print(line, flush=True)

        r = _ext._run_driver(server, senders=senders, payload_min=pmin, payload_max=pmax,
                             protocol=a.protocol, seconds=a.seconds, rate=a.rate,
                             timeout=None if a.timeout is None else a.timeout / 1000.0,
                             progress=progress, inflight=inflight)
        if tty:
            print()
    lat = r["latency_us"]
    print(f"fastport driver: {r['messages']:,} messages in {r['seconds']:.1f} s = "
          f"{r['throughput']:,.0f} msg/s{' (interrupted)' if r.get('interrupted') else ''}\n"
          f"  latency us: p50 {lat['p50']:,.1f}  p90 {lat['p90']:,.1f}  p99 {lat['p99']:,.1f}  "
          f"p99.9 {lat['p999']:,.1f}  max {lat['max']:,.1f}\n"
          f"  timeouts {r['timeouts']}  bad replies {r['bad_replies']}  "
          f"too long {r['overflows']}  disconnects {r['disconnects']}  errors {r['errors']}")
    for line in _reply_diagnosis(r):
        print("  " + line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0 if r["bad_replies"] == 0 and r["overflows"] == 0 else 1


def _reply_diagnosis(r: dict) -> list:
    """What went wrong with the replies, in words: wrong sizes apart from wrong contents."""
    proto, want = r["protocol"], r["reply_size"]
    layout = {"scanner": "SCANNER_REPLY {BOOLEAN SafeToOpen}",
              "bench": "BENCH_REPLY {u32 checksum, u32 verdict}"}.get(proto, "reply")
    rule = (f"a reply is the 16-byte FILTER_REPLY_HEADER followed by exactly {want} byte(s) of "
            f"{layout}")
    out = []
    if r["wrong_size"]:
        n = r["wrong_size_length"]
        out.append(f"{r['wrong_size']:,} replies had {n} byte{'' if n == 1 else 's'}; the {proto} "
                   f"protocol expects {want} ({rule})")
    if r["overflows"]:
        out.append(f"{r['overflows']:,} replies were longer than the {want} byte(s) the {proto} "
                   f"protocol expects, so the kernel refused them (STATUS_BUFFER_OVERFLOW; the "
                   f"service's FilterReplyMessage got 0x8007007A): {rule}")
    wrong_content = r["bad_replies"] - r["wrong_size"]
    if wrong_content:
        out.append(f"{wrong_content:,} replies had the right size but the wrong content (not "
                   f"the {proto} protocol's answer to their message)")
    return out


def _scan(a: argparse.Namespace) -> int:
    from fastport import scan
    if a.max_bytes < 1:
        raise UsageError(f"--max-bytes must be >= 1, got {a.max_bytes}")
    try:
        scan.run(a.paths, a.rules, engine_name=a.engine, deny=not a.audit,
                 max_bytes=a.max_bytes, exclude=a.exclude, mark=a.mark,
                 deadline=_nonneg("--deadline", a.deadline))
    except scan.RulesError as e:
        raise UsageError(f"{a.rules} does not compile: {e}")
    except ImportError as e:
        raise UsageError(str(e))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `fastport` console script."""
    a = _parser().parse_args(argv)
    try:
        return {"bench": _bench, "driver": _driver, "scan": _scan}[a.command](a)
    except UsageError as e:
        print(f"fastport {a.command}: {e}", file=sys.stderr)
        return 2
    except PortError as e:
        print(f"fastport {a.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nfastport {a.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        print(f"fastport {a.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
