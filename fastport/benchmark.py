"""`fastport bench`: every client against the same load-generating test driver, in one run.

Clients (all compute the same reply of the same protocol):
  pump              fastport.Pump with a numpy batch handler (the product)
  pump-per-message  fastport.Pump, run(handler, per_message=True)
  c-reference       C threads: batch get, reply computed in C, batch reply (same user API)
  python-loop       Python threads calling port.get_message / port.reply_message per message

Each case: a fresh emulated port on the chosen transport, the client serving it, the C driver
(K senders, closed loop, or open loop at a given rate) measuring throughput and latency and
checking every reply. Ratios are to c-reference in the same run and settings.

Load: `senders` threads each blocked in FltSendMessage (thread per message, what a kernel under
many blocked threads looks like; inflight 0), or `inflight` messages kept in flight by a few
driver threads through the emulator's asynchronous sends (the client sees the same messages;
the driver then costs little CPU, as a real kernel's senders cost this machine nothing).

"py us/msg" is the CPU time of the client's Python threads per message they served (the pump's
consumer; the loop's threads). The GIL serialises that time, so it is the ceiling on a machine
with cores to spare. "cpu us/msg" (cpu_us_per_msg) is the CPU time of ALL of the client's own
threads per message served: the C workers, reply threads and reaper (fp-worker-N, fp-reply-N,
fp-reaper), the C reference's threads (fp-cref-N) and the Python threads; the driver's threads
(fp-send-N) are not counted. It is read per thread (/proc/self/task/*/schedstat), so it stays
meaningful when the driver shares the machine.
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

__all__ = ["CLIENTS", "Settings", "run_case", "run_bench", "machine_info", "format_table",
           "client_cpu", "driver_threads", "memcpy_bandwidth", "estimate_seconds"]

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


# The client's C threads, by the names they give themselves (the pump's and c-reference's).
_CLIENT_THREADS = ("fp-worker-", "fp-reply-", "fp-reaper", "fp-cref-")


def _thread_cpu(tid: str) -> float:
    """CPU seconds of thread `tid` of this process: schedstat's nanoseconds, else stat's ticks."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu(python_tids: "list[int]") -> dict[int, float]:
    """CPU seconds so far of each of the client's threads: C threads found by name, Python
    threads by native id. Empty where /proc is missing."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            if int(tid) not in python_tids:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    if not f.read().startswith(_CLIENT_THREADS):
                        continue
            out[int(tid)] = _thread_cpu(tid)
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
    return out


class _Client:
    def start(self, port: Any, proto: protocols.Protocol, s: Settings) -> None:
        raise NotImplementedError

    def python_tids(self) -> "list[int]":
        """Native ids of the client's Python threads (for cpu_us_per_msg)."""
        return []

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

    def python_tids(self) -> "list[int]":
        return [self.thread.native_id] if self.thread.native_id else []

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

    def python_tids(self) -> "list[int]":
        return [t.native_id for t in self.threads if t.native_id]

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


def driver_threads(inflight: int) -> int:
    """Sender threads the driver uses to keep `inflight` messages in flight: one per 1024."""
    return max(1, (inflight + 1023) // 1024)


def run_case(client: str, *, transport: str = "inproc", senders: int = 64,
             payload: "int | tuple[int, int]" = 1024, seconds: float = 2.0, rate: float = 0.0,
             settings: Optional[Settings] = None,
             progress: Optional[Callable[[dict], None]] = None, inflight: int = 0) -> dict:
    """One client against the driver; returns a result row (the JSON schema's keys).
    inflight 0: `senders` threads each blocked in a send; N > 0: N messages in flight through
    asynchronous sends, kept by driver_threads(N) threads (`senders` is then ignored)."""
    s = settings or Settings()
    if inflight:
        senders = driver_threads(inflight)
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
                cpu0 = client_cpu(c.python_tids())
                r = _ext._run_driver(server.clients[0], senders=senders, payload_min=pmin,
                                     payload_max=pmax, protocol=s.protocol, seconds=seconds,
                                     rate=rate, timeout=s.timeout, seed=s.seed, warmup=s.warmup,
                                     progress=progress, inflight=inflight)
                cpu1 = client_cpu(c.python_tids())
            finally:
                c.stop()
        finally:
            port.close()
    cost = c.python_cost()
    # every message of the run (warm-up included) was served while the CPU was counted
    served = r["replies_ok"] + r["bad_replies"] + r["warmup_messages"]
    cpu = sum(t - cpu0.get(tid, 0.0) for tid, t in cpu1.items())
    offered = rate
    return {
        "client": client,
        "source": "emulated",
        "transport": transport,
        "protocol": s.protocol,
        "senders": senders,
        "payload": pmin if pmin == pmax else f"{pmin}:{pmax}",
        "mode": "open" if rate else "closed",
        "inflight": inflight,
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
        "cpu_us_per_msg": cpu * 1e6 / served if cpu1 and served else None,
        # open loop: the client answered under 95 % of the offered rate (it fell behind)
        "saturated": bool(offered) and r["throughput"] < 0.95 * offered,
    }


def memcpy_bandwidth(size: int = 64 << 20, repeat: int = 5) -> float:
    """Bytes/s one thread copies on this machine (best of `repeat` copies of `size` bytes, out of
    cache): the physical limit for large messages, each of which is copied at least twice."""
    src = np.ones(size, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in first
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return size / best


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
    return (r["transport"], r["senders"], r.get("inflight", 0), r["payload"], r["mode"],
            r["protocol"], r["rate"])


def add_ratios(results: list[dict]) -> None:
    """ratio = throughput / c-reference's in the same settings; p99_ratio likewise for p99;
    cpu_ratio likewise for cpu_us_per_msg."""
    ref = {_key(r): r for r in results if r["client"] == "c-reference"}
    for r in results:
        base = ref.get(_key(r))
        if base and base["throughput"]:
            r["ratio"] = r["throughput"] / base["throughput"]
            p99 = base["latency_us"]["p99"]
            r["p99_ratio"] = r["latency_us"]["p99"] / p99 if p99 else None
            cpu, cpu_ref = r.get("cpu_us_per_msg"), base.get("cpu_us_per_msg")
            r["cpu_ratio"] = cpu / cpu_ref if cpu is not None and cpu_ref else None
        else:
            r["ratio"] = r["p99_ratio"] = r["cpu_ratio"] = None


def _load(r: dict) -> str:
    """The driver's load in words: '64 threads' (each blocked in a send) or '256 in flight'."""
    if r.get("inflight"):
        return f"{r['inflight']} in flight"
    return f"{r['senders']} threads"


def estimate_seconds(n_runs: int, seconds: float, settings: Settings) -> float:
    """How long n_runs runs take: each its warm-up and window, plus about 1 s of set-up and
    drain (measured on the 2-core machine)."""
    return n_runs * (seconds + settings.warmup + 1.0)


def run_bench(*, transports: list[str], senders: list[int], payloads: list, clients: list[str],
              seconds: float, open_loop: bool = True, repeat: int = 3,
              settings: Optional[Settings] = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
              inflight: Optional[list[int]] = None, open_at: Optional[list[float]] = None
              ) -> list[dict]:
    """The matrix: every client x transport x load x payload, closed loop, where a load is a
    sender count (thread per message) or an in-flight count (asynchronous sends); then, per
    transport and payload at the largest load (in flight if any, else threads), every client
    open loop at each fraction in open_at (default 0.5) of c-reference's measured closed-loop
    saturation. Each case runs `repeat` times, the clients taking turns (so a slow spell of the
    machine hits them alike); the run with the median throughput is kept, and every run's
    throughput is listed under "runs". The first line logged estimates the duration."""
    s = settings or Settings()
    inflight = list(inflight or [])
    open_at = list(open_at or [0.5])
    loads = [(k, 0) for k in senders] + [(driver_threads(n), n) for n in inflight]
    cases = [(t, k, n, p) for t in transports for k, n in loads for p in payloads]
    n_open = len(transports) * len(payloads) * len(open_at) if open_loop and loads else 0
    total = (len(cases) + n_open) * len(clients) * repeat
    est = estimate_seconds(total, seconds, s)
    minutes, secs = divmod(round(est), 60)
    log(f"fastport bench: {total} runs of {seconds:g} s (+ {s.warmup:g} s warm-up), "
        f"about {f'{minutes} min ' if minutes else ''}{secs} s")
    results: list[dict] = []
    done = 0

    def label(p: Any) -> Any:
        return p if isinstance(p, int) else f"{p[0]}:{p[1]}"

    def case(t: str, k: int, n: int, p: Any, rate: float = 0.0) -> None:
        nonlocal done
        runs: dict[str, list[dict]] = {c: [] for c in order}
        for _ in range(repeat):
            for c in order:
                done += 1
                r = run_case(c, transport=t, senders=k, payload=p, seconds=seconds, rate=rate,
                             settings=s, inflight=n)
                what = f"{c:<16} {t:<6} {_load(r):>14} {str(label(p)):>6} B"
                what += f" open {rate:>9,.0f} msg/s" if rate else " closed" + " " * 14
                cpu = r["cpu_us_per_msg"]
                log(f"[{done:>3}/{total}] {what} {r['throughput']:>10,.0f} msg/s  "
                    f"p99 {_lat(r['latency_us']['p99']):>11}  "
                    f"cpu {'-' if cpu is None else f'{cpu:.2f}':>5} us/msg  "
                    f"timeouts {r['timeouts']}  bad {r['bad_replies']}"
                    f"{'  SATURATED' if r['saturated'] else ''}")
                runs[c].append(r)
        for c in order:
            ordered = sorted(runs[c], key=lambda r: r["throughput"])
            keep = dict(ordered[len(ordered) // 2])
            keep["runs"] = [r["throughput"] for r in runs[c]]
            results.append(keep)

    # c-reference first in each case, so its saturation is known for the open-loop runs
    order = sorted(clients, key=lambda c: c != "c-reference")
    for t, k, n, p in cases:
        case(t, k, n, p)
    if open_loop and loads:
        k, n = loads[-1]
        for t in transports:
            for p in payloads:
                ref = [r for r in results if r["client"] == "c-reference" and r["mode"] ==
                       "closed" and r["transport"] == t and r["senders"] == k and
                       r["inflight"] == n and r["payload"] == label(p)]
                for f in open_at:
                    if ref:
                        case(t, k, n, p, rate=f * ref[0]["throughput"])
    add_ratios(results)
    return results


def _us(v: float) -> str:
    """A latency for the table: microseconds, or milliseconds / seconds when large."""
    if v >= 1e6:
        return f"{v / 1e6:,.2f} s"
    if v >= 1e4:
        return f"{v / 1e3:,.1f} ms"
    return f"{v:,.1f}"


def _lat(v: float) -> str:
    """A latency with its unit, as the table shows it ('123.4 us', '23.1 ms', '1.50 s')."""
    text = _us(v)
    return text if text.endswith("s") else f"{text} us"


def format_table(results: list[dict]) -> str:
    """The results as a table: one row per client and case. load = the driver's (threads each
    blocked in a send, or messages in flight); sat = the client fell behind the offered rate."""
    head = (f"{'client':<17}{'transport':<10}{'load':>15}{'payload':>9}{'mode':>7}"
            f"{'msg/s':>11}{'p50 us':>11}{'p99 us':>11}{'p99.9 us':>11}{'timeouts':>9}"
            f"{'bad':>5}{'x c-ref':>9}{'py us/msg':>11}{'cpu us/msg':>12}{'sat':>5}")
    lines = [head, "-" * len(head)]
    for r in results:
        lat = r["latency_us"]
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        py = r.get("python_us_per_msg")
        py_s = f"{py:.2f}" if py is not None else "-"
        cpu = r.get("cpu_us_per_msg")
        cpu_s = f"{cpu:.2f}" if cpu is not None else "-"
        sat = "yes" if r.get("saturated") else ("no" if r["mode"] == "open" else "-")
        lines.append(
            f"{r['client']:<17}{r['transport']:<10}{_load(r):>15}{str(r['payload']):>9}"
            f"{r['mode']:>7}{r['throughput']:>11,.0f}{_us(lat['p50']):>11}{_us(lat['p99']):>11}"
            f"{_us(lat['p999']):>11}{r['timeouts']:>9}{r['bad_replies']:>5}{ratio:>9}{py_s:>11}"
            f"{cpu_s:>12}{sat:>5}")
    return "\n".join(lines)


def write_json(path: str, results: list[dict]) -> None:
    with open(path, "w") as f:
        json.dump({"machine": machine_info(), "results": results}, f, indent=1)
        f.write("\n")

