"""`fastport bench --plot` and `--plot-from`: every shape of results gives a full figure."""
import json
import pathlib
import shutil

import pytest

from fastport.cli import main

pytest.importorskip("matplotlib")
from fastport import benchplot  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "bench" / "results"
PNG = b"\x89PNG\r\n\x1a\n"


def row(client, *, senders=64, inflight=0, payload=1024, transport="inproc", mode="closed",
        rate=0.0, throughput=1e5, p99=2000.0, cpu=5.0, py=None, saturated=False):
    return {"client": client, "source": "emulated", "transport": transport, "senders": senders,
            "inflight": inflight, "payload": payload, "mode": mode, "rate": rate,
            "throughput": throughput, "latency_us": {"p50": p99 / 4, "p99": p99},
            "cpu_us_per_msg": cpu, "python_us_per_msg": py, "saturated": saturated}


def fanotify_row(client, senders, throughput):
    # what fanbench writes: no inflight, payload 0, no CPU figures, transport "kernel"
    return {"client": client, "source": "fanotify", "transport": "kernel", "senders": senders,
            "payload": 0, "mode": "closed", "rate": 0.0, "throughput": throughput,
            "latency_us": {"p50": 50.0, "p90": 80.0, "p99": 100.0 * senders}}


def drawn(tmp_path, results, machine=None):
    out = tmp_path / "p.png"
    titles = benchplot.plot(str(out), results, machine)
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 10_000
    assert titles and all(titles)  # no untitled (empty) panel
    return titles


def kinds(titles):
    return [t.split(",")[0].split(":")[0] for t in titles]


@pytest.mark.parametrize("name", ["inflight-run", "default-run", "fanotify-run",
                                  "inflight-256-headline"])
def test_every_committed_result_plots(tmp_path, name):
    results, machine = benchplot.load_results(str(RESULTS / f"{name}.json"))
    titles = drawn(tmp_path, results, machine)
    assert any(t.startswith("Throughput against load") for t in titles)


def test_panels_of_the_in_flight_run(tmp_path):
    results, machine = benchplot.load_results(str(RESULTS / "inflight-run.json"))
    titles = drawn(tmp_path, results, machine)
    # one panel per question and payload, the payload in the title, not in a legend
    assert titles[:4] == [
        "Throughput against load, closed loop: inproc, 1 KiB",
        "Throughput against load, closed loop: inproc, 64 KiB",
        "Latency against offered rate, open loop: inproc, 1 KiB, 256 in flight",
        "Latency against offered rate, open loop: inproc, 64 KiB, 256 in flight"]
    assert titles[4].startswith("Client CPU per message") and len(titles) == 5


def test_single_load_closed_loop_only(tmp_path):
    results = [row(c, throughput=t) for c, t in (("pump", 5e5), ("c-reference", 4e5))]
    assert kinds(drawn(tmp_path, results)) == ["Throughput against load",
                                               "Client CPU per message"]


def test_several_loads_both_modes_closed_loop_only(tmp_path):
    results = [row(c, senders=k, throughput=1e4 * k, p99=30.0 * k)
               for c in ("pump", "python-loop") for k in (8, 64)]
    results += [row(c, senders=1, inflight=n, throughput=1e3 * n, py=1.0)
                for c in ("pump", "python-loop") for n in (256, 1024, 4096)]
    assert kinds(drawn(tmp_path, results)) == ["Throughput against load",
                                               "Latency against load",
                                               "Client CPU per message"]


def test_open_loop_where_every_client_fell_behind(tmp_path):
    results = [row("pump", inflight=256, throughput=2e5, cpu=None),
               row("c-reference", inflight=256, throughput=4e5, cpu=None)]
    results += [row(c, inflight=256, mode="open", rate=r, throughput=r / 2, p99=5e6,
                    saturated=True)
                for c in ("pump", "c-reference") for r in (1e5, 2e5, 9e5)]
    # no CPU figures: no CPU panel
    assert kinds(drawn(tmp_path, results)) == ["Throughput against load",
                                               "Latency against offered rate"]


def test_two_transports_a_payload_range_and_an_unknown_client(tmp_path):
    results = [row(c, transport=t, payload="16:4096", throughput=1e5)
               for t in ("inproc", "socket") for c in ("pump", "my-client")]
    results.append(row("pump", transport="socket", payload="16:4096", mode="open", rate=5e4,
                       throughput=5e4, p99=900.0))
    titles = drawn(tmp_path, results)
    assert "Throughput against load, closed loop: socket, 16 B-4 KiB" in titles
    assert "Latency against offered rate, open loop: socket, 16 B-4 KiB, 64 threads" in titles


def test_fanotify_rows(tmp_path):
    results = [fanotify_row(c, k, 1e4 * k) for c in ("pump", "c-reference") for k in (1, 4, 16)]
    assert drawn(tmp_path, results) == ["Throughput against load, closed loop: fanotify",
                                        "Latency against load, closed loop: fanotify"]


def test_nothing_to_plot(tmp_path):
    scan = json.loads((RESULTS / "fanotify-scan-run.json").read_text())["results"]
    with pytest.raises(ValueError, match="no bench results"):
        benchplot.plot(str(tmp_path / "p.png"), scan)


def test_latency_units_follow_the_scale():
    assert [benchplot._unit([row("pump", p99=v)])[0] for v in (900.0, 2e4, 3e6)] == [
        "us", "ms", "s"]


def test_rates_and_payloads_read_as_people_write_them():
    assert [benchplot._rate(v) for v in (0, 8, 64, 2500, 544316, 1.25e6)] == [
        "0", "8", "64", "2.5k", "544k", "1.25M"]
    assert [benchplot._payload(p) for p in (1024, 65536, 1032, 0)] == [
        "1 KiB", "64 KiB", "1032 B", ""]


def test_plot_from_a_json_file(tmp_path, capsys):
    out = tmp_path / "again.png"
    assert main(["bench", "--plot-from", str(RESULTS / "default-run.json"),
                 "--plot", str(out)]) == 0
    assert out.read_bytes().startswith(PNG)
    assert f"wrote {out}" in capsys.readouterr().out
    # without --plot: the PNG goes beside the JSON
    run = tmp_path / "run.json"
    shutil.copy(RESULTS / "fanotify-run.json", run)
    assert main(["bench", "--plot-from", str(run)]) == 0
    assert (tmp_path / "run.png").read_bytes().startswith(PNG)


def test_plot_from_a_file_without_bench_results_is_one_line(tmp_path, capsys):
    rc = main(["bench", "--plot-from", str(RESULTS / "fanotify-scan-run.json"),
               "--plot", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert rc == 1 and "no bench results" in err and len(err.strip().splitlines()) == 1
