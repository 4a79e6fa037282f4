"""The pump's headline measurement: inproc, 64 kernel-side senders, 1 KiB messages, a numpy
verdict handler; the pump beside the C reference client (same threads, same user API), the
per-message mode and a hand-written Python loop. Not a test: run it and read the ratios.

    python bench/pump_vs_c.py [--seconds S] [--repeat N] [--transport inproc|socket]
"""
import argparse
import statistics

from fastport import benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--transport", default="inproc", choices=["inproc", "socket"])
    a = ap.parse_args()
    results = benchmark.run_bench(transports=[a.transport], senders=[64], payloads=[1024],
                                  clients=list(benchmark.CLIENTS), seconds=a.seconds,
                                  repeat=a.repeat, open_loop=True)
    print(benchmark.format_table(results))
    by = {(r["client"], r["mode"]): r for r in results}
    pump, cref, loop = (by[(c, "closed")] for c in ("pump", "c-reference", "python-loop"))
    # the clients take turns, so run i of each met the same spell of the machine
    paired = statistics.median(p / c for p, c in zip(pump["runs"], cref["runs"]))
    print(f"\npump / c-reference = {pump['throughput'] / cref['throughput']:.2f} "
          f"(median of paired runs {paired:.2f})   "
          f"pump / python-loop = {pump['throughput'] / loop['throughput']:.2f}   "
          f"open-loop p99 pump / c-reference = "
          f"{by[('pump', 'open')]['latency_us']['p99'] / by[('c-reference', 'open')]['latency_us']['p99']:.2f}")
    print(f"Python CPU per message: python-loop / pump = "
          f"{loop['python_us_per_msg'] / pump['python_us_per_msg']:.1f}x "
          f"({loop['python_us_per_msg']:.2f} us / {pump['python_us_per_msg']:.2f} us)")


if __name__ == "__main__":
    main()
