"""`fastport bench`: every client against the same load-generating test driver, in one run.

Clients (all compute the same reply of the same protocol):
  pump              fastport.Pump with a numpy batch handler (the product)
  pump-per-message  fastport.Pump, run(handler, per_message=True)
  c-reference       C threads: batch get, reply computed in C, batch reply (same user API)
  python-loop       Python threads calling port.get_message / port.reply_message per message

Each case: a fresh emulated port on the chosen transport, the client serving it, the C driver
(K senders, closed loop, or open loop at a given rate) measuring throughput and latency and
checking every reply. Ratios are to c-reference in the same run and settings.

"py us/msg" is the CPU time of the client's Python threads per message they served (the pump's
consumer; the loop's threads). The GIL serialises that time, so it is the ceiling on a machine
with cores to spare; on a small machine the emulated kernel's senders take most of the CPU and
cap every client's throughput first.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

import fastport
from fastport import _ext, protocols
from fastport.pump import Pump
from fastport.sim import FilterManager
from fastport.status import PortError

__all__ = ["CLIENTS", "Settings", "run_case", "run_bench", "machine_info", "format_table"]

CLIENTS = ("pump", "pump-per-message", "c-reference", "python-loop")


@dataclass
class Settings:
    """How every client is configured (the same threads and gets in flight for all)."""

    threads: int = 2
    outstanding: int = 64
    batch: int = 256
    consumer_reap: bool = True
    protocol: str = "bench"
    timeout: Optional[float] = 10.0
    warmup: float = 0.25
    seed: int = 1


class _Client:
    def start(self, port: Any, proto: protocols.Protocol, s: Settings) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def python_cost(self) -> Optional[tuple[float, int]]:
        """(CPU seconds of the client's Python threads, messages they served), after stop();
        None for a client without Python threads. The GIL serialises that time, so it bounds
        the client's throughput once the machine has cores to spare."""
        return None


class _PumpClient(_Client):
    def __init__(self, per_message: bool) -> None:
        self.per_message = per_message

    def start(self, port: Any, proto: protocols.Protocol, s: Settings) -> None:
        self.pump = Pump(port, message=proto.message, reply=proto.reply, threads=s.threads,
                         outstanding=s.outstanding, batch=s.batch,
                         consumer_reap=s.consumer_reap)
        handler = proto.record_handler() if self.per_message else proto.batch_handler()
        self.error: Optional[BaseException] = None
        self.pump.start()

        self.cpu = 0.0

        def serve() -> None:
            t0 = time.thread_time()
            try:
                self.pump.run(handler, per_message=self.per_message)
            except PortError:
                pass  # the port went away at the end of the case
            except BaseException as e:  # reported by stop()
                self.error = e
            finally:
                self.cpu = time.thread_time() - t0

        self.thread = threading.Thread(target=serve, name="fastport-bench-pump", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.pump.stop()
        self.thread.join()
        if self.error:
            raise self.error

    def python_cost(self) -> Optional[tuple[float, int]]:
        return self.cpu, self.pump.stats["received"]


class _CReference(_Client):
    def start(self, port: Any, proto: protocols.Protocol, s: Settings) -> None:
        self.c = _ext.CReference(port, threads=s.threads, outstanding=s.outstanding,
                                 protocol=proto.name, max_payload=proto.message.itemsize)
        self.c.start()

    def stop(self) -> None:
        self.c.stop()


class _PythonLoop(_Client):
    """What a Python user writes by hand: get, compute, reply, one message at a time."""

    def start(self, port: Any, proto: protocols.Protocol, s: Settings) -> None:
        self.stopping = threading.Event()
        size = 16 + proto.message.itemsize
        reply_for = proto.reply_for
        self.costs: list[tuple[float, int]] = []

        def serve() -> None:
            t0, n = time.thread_time(), 0
            try:
                while not self.stopping.is_set():
                    try:
                        m = port.get_message(size=size, timeout=0.1)
                    except fastport.status.PortTimeout:
                        continue
                    except PortError:
                        return
                    n += 1
                    if m.reply_length:
                        try:
                            port.reply_message(m.message_id, reply_for(bytes(m.data)))
                        except PortError:
                            pass
            finally:
                self.costs.append((time.thread_time() - t0, n))

        self.threads = [threading.Thread(target=serve, daemon=True) for _ in range(s.threads)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join()

    def python_cost(self) -> Optional[tuple[float, int]]:
        return sum(c for c, _ in self.costs), sum(n for _, n in self.costs)


def _make_client(name: str) -> _Client:
    if name == "pump":
        return _PumpClient(per_message=False)
    if name == "pump-per-message":
        return _PumpClient(per_message=True)
    if name == "c-reference":
        return _CReference()
    if name == "python-loop":
        return _PythonLoop()
    raise ValueError(f"unknown client {name!r}: expected one of {', '.join(CLIENTS)}")


_case_ids = iter(range(1, 1 << 62))


def run_case(client: str, *, transport: str = "inproc", senders: int = 64,
             payload: "int | tuple[int, int]" = 1024, seconds: float = 2.0, rate: float = 0.0,
             settings: Optional[Settings] = None,
             progress: Optional[Callable[[dict], None]] = None) -> dict:
    """One client against the driver; returns a result row (the JSON schema's keys)."""
    s = settings or Settings()
    pmin, pmax = (payload, payload) if isinstance(payload, int) else payload
    proto = protocols.get(s.protocol, pmax if s.protocol == "bench" else 1032)
    name = f"\\fastport-bench-{os.getpid()}-{next(_case_ids)}"
    c = _make_client(client)
    with FilterManager(transport) as fm:
        server = fm.create_port(name)
        port = fastport.connect(name)
        try:
            c.start(port, proto, s)
            try:
                r = _ext._run_driver(server.clients[0], senders=senders, payload_min=pmin,
                                     payload_max=pmax, protocol=s.protocol, seconds=seconds,
                                     rate=rate, timeout=s.timeout, seed=s.seed, warmup=s.warmup,
                                     progress=progress)
            finally:
                c.stop()
        finally:
            port.close()
    cost = c.python_cost()
    return {
        "client": client,
        "source": "emulated",
        "transport": transport,
        "protocol": s.protocol,
        "senders": senders,
        "payload": pmin if pmin == pmax else f"{pmin}:{pmax}",
        "mode": "open" if rate else "closed",
        "rate": rate,
        "seconds": r["seconds"],
        "messages": r["messages"],
        "throughput": r["throughput"],
        "latency_us": {k: r["latency_us"][k] for k in ("p50", "p90", "p99", "p999", "max")},
        "timeouts": r["timeouts"],
        "bad_replies": r["bad_replies"],
        "disconnects": r["disconnects"],
        "errors": r["errors"],
        "threads": s.threads,
        "outstanding": s.outstanding,
        "histogram": r["histogram"],
        "interrupted": r.get("interrupted", False),
        "python_us_per_msg": cost[0] * 1e6 / cost[1] if cost and cost[1] else None,
    }


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastport": fastport.__version__,
    }


def _key(r: dict) -> tuple:
    return (r["transport"], r["senders"], r["payload"], r["mode"], r["protocol"])


def add_ratios(results: list[dict]) -> None:
    """ratio = throughput / c-reference's in the same settings; p99_ratio likewise for p99."""
    ref = {_key(r): r for r in results if r["client"] == "c-reference"}
    for r in results:
        base = ref.get(_key(r))
        if base and base["throughput"]:
            r["ratio"] = r["throughput"] / base["throughput"]
            p99 = base["latency_us"]["p99"]
            r["p99_ratio"] = r["latency_us"]["p99"] / p99 if p99 else None
        else:
            r["ratio"] = r["p99_ratio"] = None


def run_bench(*, transports: list[str], senders: list[int], payloads: list, clients: list[str],
              seconds: float, open_loop: bool = True, repeat: int = 3,
              settings: Optional[Settings] = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)
              ) -> list[dict]:
    """The matrix: every client x transport x senders x payload, closed loop; then, per
    transport and payload at the largest sender count, every client open loop at 50% of
    c-reference's measured saturation. Each case runs `repeat` times, the clients taking turns
    (so a slow spell of the machine hits them alike); the run with the median throughput is
    kept, and every run's throughput is listed under "runs"."""
    cases = [(t, k, p) for t in transports for k in senders for p in payloads]
    n_open = len(transports) * len(payloads) if open_loop else 0
    total = (len(cases) + n_open) * len(clients) * repeat
    results: list[dict] = []
    done = 0

    def label(p: Any) -> Any:
        return p if isinstance(p, int) else f"{p[0]}:{p[1]}"

    def case(t: str, k: int, p: Any, rate: float = 0.0) -> None:
        nonlocal done
        runs: dict[str, list[dict]] = {c: [] for c in order}
        for _ in range(repeat):
            for c in order:
                done += 1
                what = f"{c:<16} {t:<6} {k:>4} senders {str(label(p)):>9} B"
                what += f" open {rate:,.0f}/s" if rate else " closed"
                r = run_case(c, transport=t, senders=k, payload=p, seconds=seconds, rate=rate,
                             settings=settings)
                log(f"[{done:>3}/{total}] {what}  {r['throughput']:>10,.0f} msg/s  "
                    f"p99 {r['latency_us']['p99']:>9,.1f} us  timeouts {r['timeouts']}  "
                    f"bad {r['bad_replies']}")
                runs[c].append(r)
        for c in order:
            ordered = sorted(runs[c], key=lambda r: r["throughput"])
            keep = dict(ordered[len(ordered) // 2])
            keep["runs"] = [r["throughput"] for r in runs[c]]
            results.append(keep)

    # c-reference first in each case, so its saturation is known for the open-loop runs
    order = sorted(clients, key=lambda c: c != "c-reference")
    for t, k, p in cases:
        case(t, k, p)
    if open_loop:
        kmax = max(senders)
        for t in transports:
            for p in payloads:
                ref = [r for r in results if r["client"] == "c-reference" and r["mode"] ==
                       "closed" and r["transport"] == t and r["senders"] == kmax and
                       r["payload"] == label(p)]
                if ref:
                    case(t, kmax, p, rate=0.5 * ref[0]["throughput"])
    add_ratios(results)
    return results


def _us(v: float) -> str:
    """A latency for the table: microseconds, or milliseconds / seconds when large."""
    if v >= 1e6:
        return f"{v / 1e6:,.2f} s"
    if v >= 1e4:
        return f"{v / 1e3:,.1f} ms"
    return f"{v:,.1f}"


def format_table(results: list[dict]) -> str:
    head = (f"{'client':<17}{'transport':<10}{'senders':>8}{'payload':>10}{'mode':>7}"
            f"{'msg/s':>11}{'p50 us':>11}{'p99 us':>11}{'p99.9 us':>11}{'timeouts':>9}"
            f"{'bad':>5}{'x c-ref':>9}{'py us/msg':>11}")
    lines = [head, "-" * len(head)]
    for r in results:
        lat = r["latency_us"]
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        py = r.get("python_us_per_msg")
        py_s = f"{py:.2f}" if py is not None else "-"
        lines.append(
            f"{r['client']:<17}{r['transport']:<10}{r['senders']:>8}{str(r['payload']):>10}"
            f"{r['mode']:>7}{r['throughput']:>11,.0f}{_us(lat['p50']):>11}{_us(lat['p99']):>11}"
            f"{_us(lat['p999']):>11}{r['timeouts']:>9}{r['bad_replies']:>5}{ratio:>9}{py_s:>11}")
    return "\n".join(lines)


def write_json(path: str, results: list[dict]) -> None:
    with open(path, "w") as f:
        json.dump({"machine": machine_info(), "results": results}, f, indent=1)
        f.write("\n")


def plot(path: str, results: list[dict]) -> None:
    """Throughput against senders per client (one panel per transport), and the latency
    distribution of the open-loop runs (or the largest closed-loop runs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(CLIENTS, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    styles = {"inproc": "-", "socket": "--"}
    closed = [r for r in results if r["mode"] == "closed"]
    transports = sorted({r["transport"] for r in closed}) or ["inproc"]
    fig, axes = plt.subplots(1, len(transports) + 1, figsize=(6 * (len(transports) + 1), 4.5))
    for ax, t in zip(axes, transports):
        for c in CLIENTS:
            pts = sorted((r["senders"], r["throughput"]) for r in closed
                         if r["client"] == c and r["transport"] == t)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=c,
                        color=colors[c])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("senders (kernel threads)")
        ax.set_ylabel("messages / s")
        ax.set_title(f"throughput, {t}, closed loop")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[-1]
    lat = [r for r in results if r["mode"] == "open"] or closed
    for r in lat:
        rows = r.get("histogram") or []
        if not rows:
            continue
        counts = np.array([c for _, _, c in rows], dtype=float)
        highs = np.array([h for _, h, _ in rows], dtype=float) / 1e3
        cdf = np.cumsum(counts) / counts.sum()
        ax.plot(highs, 1 - cdf + 1e-6, label=f"{r['client']} {r['transport']} {r['mode']}",
                color=colors.get(r["client"]), linestyle=styles.get(r["transport"], "-"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("receive-to-reply latency seen by the kernel (us)")
    ax.set_ylabel("fraction of messages slower")
    ax.set_title("latency distribution")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
