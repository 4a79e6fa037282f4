"""The pump's headline measurement: inproc, 256 messages kept in flight by the driver's
asynchronous sends (so the driver costs little of this machine's CPU), 1 KiB messages, a numpy
verdict handler; the pump beside the C reference client (same threads, same user API), the
per-message mode and a hand-written Python loop; then 64 KiB messages against this machine's
memcpy bandwidth measured in the same run. Not a test: run it and read the ratios.

    python bench/pump_vs_c.py [--seconds S] [--repeat N] [--transport inproc|socket]
                              [--inflight N]
"""
import argparse
import statistics

from fastport import benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (median kept)")
    ap.add_argument("--transport", default="inproc", choices=["inproc", "socket"],
                    help="emulated transport")
    ap.add_argument("--inflight", type=int, default=256, help="messages in flight")
    a = ap.parse_args()
    results = benchmark.run_bench(transports=[a.transport], senders=[], inflight=[a.inflight],
                                  payloads=[1024], clients=list(benchmark.CLIENTS),
                                  seconds=a.seconds, repeat=a.repeat, open_loop=True)
    print(benchmark.format_table(results))
    by = {(r["client"], r["mode"]): r for r in results}
    pump, cref, loop = (by[(c, "closed")] for c in ("pump", "c-reference", "python-loop"))
    # the clients take turns, so run i of each met the same spell of the machine
    paired = statistics.median(p / c for p, c in zip(pump["runs"], cref["runs"]))
    print(f"\npump / c-reference = {pump['throughput'] / cref['throughput']:.2f} "
          f"(median of paired runs {paired:.2f})   "
          f"pump / python-loop = {pump['throughput'] / loop['throughput']:.1f}   "
          f"open-loop p99 pump / c-reference = "
          f"{by[('pump', 'open')]['latency_us']['p99'] / by[('c-reference', 'open')]['latency_us']['p99']:.2f}")
    print(f"client CPU per message: pump / c-reference = "
          f"{pump['cpu_us_per_msg'] / cref['cpu_us_per_msg']:.2f} "
          f"({pump['cpu_us_per_msg']:.2f} us / {cref['cpu_us_per_msg']:.2f} us)   "
          f"Python CPU per message: python-loop / pump = "
          f"{loop['python_us_per_msg'] / pump['python_us_per_msg']:.1f}x")

    big = benchmark.run_bench(transports=[a.transport], senders=[], inflight=[64],
                              payloads=[65536], clients=["c-reference", "pump"],
                              seconds=a.seconds, repeat=a.repeat, open_loop=False)
    bw = benchmark.memcpy_bandwidth()
    print("\n" + benchmark.format_table(big))
    print(f"memcpy of this machine (same run): {bw / 1e9:.2f} GB/s = {bw / 65536:,.0f} "
          f"64 KiB copies/s")
    for r in big:
        print(f"  {r['client']:<12} {r['throughput']:>9,.0f} msg/s = "
              f"{r['throughput'] * 65536 / 1e9:.2f} GB/s of payload "
              f"({r['throughput'] * 65536 / bw:.0%} of one memcpy)")


if __name__ == "__main__":
    main()
