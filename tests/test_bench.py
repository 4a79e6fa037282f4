"""The test driver, the protocols, the benchmark clients and the `fastport` command."""
import argparse
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastport
from fastport import _ext, benchmark, protocols
from fastport.cli import main
from fastport.pump import Pump

RNG = np.random.default_rng(7)


def bench_payload(length, marker):
    body = RNG.integers(0, 256, size=length - 16, dtype=np.uint8).tobytes()
    return np.array([1, 2, length, marker], dtype="<u4").tobytes() + body


def test_bench_dtypes_match_the_c_structs():
    c = _ext.c_layouts()
    msg = protocols.bench(1024).message
    head = {n: msg.fields[n][1] for n in ("sender", "seq", "length", "marker")}
    assert c["BENCH_MESSAGE"]["fields"] == head
    assert msg.fields["data"][1] == c["BENCH_MESSAGE"]["size"] == 16  # data[] follows the header
    assert c["BENCH_REPLY"]["size"] == protocols.BENCH_REPLY.itemsize == 8
    assert c["BENCH_REPLY"]["fields"] == {n: protocols.BENCH_REPLY.fields[n][1]
                                          for n in protocols.BENCH_REPLY.names}


@pytest.mark.parametrize("length", [16, 17, 63, 64, 1000, 1024])
def test_bench_handlers_agree_with_the_driver(length):
    proto = protocols.bench(1024)
    for marker in (0x42, 0x1242, 0x43):
        data = bench_payload(length, marker)
        checksum, verdict = _ext._bench_expected_reply(data)
        want = np.array([(checksum, verdict)], dtype=proto.reply).tobytes()
        assert proto.reply_for(data) == want
        raw = bytearray(proto.message.itemsize)
        raw[:length] = data
        rec = np.frombuffer(bytes(raw), dtype=proto.message)[0]
        assert bytes(proto.record_handler()(rec).tobytes()) == want


def test_scanner_handlers_agree_with_the_driver():
    proto = protocols.scanner()
    for plant, n in ((None, 1024), (100, 1024), (1020, 1024), (500, 400), (396, 400)):
        contents = bytearray(RNG.integers(0, 256, size=1024, dtype=np.uint8).tobytes())
        contents = contents.replace(b"foul", b"fowl")
        if plant is not None:
            contents[plant:plant + 4] = b"foul"
        data = np.array([n, 0], dtype="<u4").tobytes() + bytes(contents)
        want = bytes([_ext._scanner_expected_reply(data)])
        assert proto.reply_for(data) == want
        rec = np.frombuffer(data, dtype=proto.message)[0]
        assert bytes(proto.record_handler()(rec)) == want


@pytest.mark.parametrize("inflight", [0, 32])
@pytest.mark.parametrize("client", benchmark.CLIENTS)
def test_every_client_answers_every_message_right(transport, client, inflight):
    r = benchmark.run_case(client, transport=transport, senders=4, payload=(64, 2048),
                           seconds=0.3, settings=benchmark.Settings(warmup=0.1),
                           inflight=inflight)
    assert r["messages"] > 0 and r["throughput"] > 0
    assert r["inflight"] == inflight
    assert r["senders"] == (1 if inflight else 4)
    assert r["cpu_us_per_msg"] > 0  # every client has threads of its own
    assert r["saturated"] is False  # closed loop
    assert r["bad_replies"] == 0 and r["timeouts"] == 0 and r["errors"] == 0
    lat = r["latency_us"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    if client == "c-reference":  # no Python thread serves
        assert r["python_us_per_msg"] is None
    else:
        assert r["python_us_per_msg"] > 0


def test_scanner_protocol_through_the_pump(transport):
    r = benchmark.run_case("pump", transport=transport, senders=4, payload=1032, seconds=0.3,
                           settings=benchmark.Settings(protocol="scanner", warmup=0.1))
    assert r["messages"] > 0 and r["bad_replies"] == 0


def test_driver_counts_wrong_replies(fm, port_name):
    proto = protocols.bench(256)
    server = fm.create_port(port_name)
    port = fastport.connect(port_name)
    handler = proto.batch_handler()

    def corrupt(batch):
        handler(batch)  # sends the right replies ...
        batch.replies["checksum"] += 1  # (too late to matter)

    def wrong(batch):
        batch.replies["checksum"] = 1
        batch.reply()

    for h, all_bad in ((corrupt, False), (wrong, True)):
        with Pump(port, message=proto.message, reply=proto.reply) as pump:
            t = threading.Thread(target=pump.run, args=(h,))
            t.start()
            r = _ext._run_driver(server.clients[0], senders=4, payload_min=256, messages=500,
                                 timeout=5.0)
            pump.stop()
            t.join()
        assert r["messages"] == 500
        assert r["bad_replies"] == (500 if all_bad else 0)
        assert r["replies_ok"] == (0 if all_bad else 500)
    port.close()


def test_driver_open_loop_and_timeouts(fm, port_name):
    server = fm.create_port(port_name)
    port = fastport.connect(port_name)
    with _ext.CReference(port, threads=1, outstanding=4, protocol="bench", max_payload=1024):
        r = _ext._run_driver(server.clients[0], senders=4, payload_min=1024, seconds=0.5,
                             rate=2000.0, timeout=5.0)
    assert r["bad_replies"] == 0 and r["messages"] > 100
    assert r["throughput"] < 4000  # paced by the rate, not the client
    # nobody serves: every send times out, none is lost
    r = _ext._run_driver(server.clients[0], senders=2, payload_min=64, messages=4, timeout=0.05)
    assert r["timeouts"] == 4 and r["bad_replies"] == 0
    port.close()


def test_driver_bad_arguments(fm, port_name):
    server = fm.create_port(port_name)
    port = fastport.connect(port_name)
    client = server.clients[0]
    for kw in (dict(senders=0), dict(senders=1, rate=-1.0), dict(senders=1, payload_min=8),
               dict(senders=1, payload_min=2 ** 21), dict(senders=1, protocol="ftp"),
               dict(senders=4, inflight=3), dict(senders=1, inflight=65537),
               dict(senders=1, inflight=2048, payload_min=2 ** 20)):
        kw.setdefault("seconds", 0.1)
        with pytest.raises((ValueError, TypeError)):
            _ext._run_driver(client, **kw)
    port.close()


def _comm(tid):
    with open(f"/proc/self/task/{tid}/comm") as f:
        return f.read().strip()


def test_client_cpu_counts_the_clients_threads_not_the_drivers(fm, port_name):
    server = fm.create_port(port_name)
    port = fastport.connect(port_name)
    done = threading.Event()
    with _ext.CReference(port, threads=2, outstanding=4, protocol="bench", max_payload=1024):
        # the driver runs until stopped by the port's close below; its threads are fp-send-N
        t = threading.Thread(target=lambda: (_ext._run_driver(
            server.clients[0], senders=2, inflight=8, payload_min=64, seconds=30), done.set()))
        t.start()
        def named(prefix):
            return [n for n in map(_comm, os.listdir("/proc/self/task")) if n.startswith(prefix)]

        while not named("fp-send-") or len(named("fp-cref-")) < 2:  # every thread has started
            assert t.is_alive()
        me = threading.get_native_id()
        cpu = benchmark.client_cpu([me])
        names = sorted(_comm(tid) for tid in cpu if tid != me)
        assert names == ["fp-cref-0", "fp-cref-1"]
        assert cpu[me] > 0 and all(v >= 0 for v in cpu.values())
        port.close()  # the driver sees the disconnect and ends
        t.join()
    assert done.is_set()


def test_driver_in_flight_mode(fm, port_name):
    server = fm.create_port(port_name)
    port = fastport.connect(port_name)
    with _ext.CReference(port, threads=1, outstanding=16, protocol="bench", max_payload=2048):
        r = _ext._run_driver(server.clients[0], senders=2, inflight=64, payload_min=16,
                             payload_max=2048, messages=3000, timeout=5.0)
    assert r["inflight"] == 64 and r["senders"] == 2
    assert r["messages"] == 3000 and r["replies_ok"] == 3000 and r["bad_replies"] == 0
    # nobody serves: every message in flight times out, none is lost
    r = _ext._run_driver(server.clients[0], senders=1, inflight=16, payload_min=64, messages=40,
                         timeout=0.02)
    assert r["timeouts"] == 40 and r["replies_ok"] == 0
    port.close()


# ---- the command line ----

def test_bench_command_table_and_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["bench", "--transport", "inproc", "--senders", "2", "--seconds", "0.2",
               "--repeat", "2", "--clients", "pump,c-reference", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "c-reference" in text and "x c-ref" in text
    doc = json.loads(out.read_text())
    assert set(doc) >= {"machine", "results"}
    for r in doc["results"]:
        assert set(r) >= {"client", "source", "transport", "senders", "payload", "seconds",
                          "messages", "throughput", "latency_us", "timeouts", "bad_replies"}
        assert set(r["latency_us"]) >= {"p50", "p90", "p99", "p999", "max"}
        assert r["bad_replies"] == 0
        assert len(r["runs"]) == 2 and r["throughput"] in r["runs"]
    modes = {(r["client"], r["mode"]) for r in doc["results"]}
    assert modes == {("pump", "closed"), ("c-reference", "closed"), ("pump", "open"),
                     ("c-reference", "open")}
    ref = [r for r in doc["results"] if r["client"] == "c-reference"]
    assert all(r["ratio"] == 1.0 for r in ref)


def test_bench_command_in_flight_columns(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["bench", "--transport", "inproc", "--inflight", "16", "--seconds", "0.2",
               "--repeat", "1", "--clients", "pump,c-reference", "--open-at", "0.5",
               "--json", str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    head = cap.out.splitlines()[0]
    assert "cpu us/msg" in head and "py us/msg" in head and "sat" in head
    assert "16 in flight" in cap.out
    assert "about" in cap.err.splitlines()[0]  # the duration estimate comes first
    doc = json.loads(out.read_text())
    for r in doc["results"]:
        assert r["inflight"] == 16 and r["cpu_us_per_msg"] > 0
        assert isinstance(r["saturated"], bool)
    assert {r["mode"] for r in doc["results"]} == {"closed", "open"}


def test_every_option_has_help_and_shows_its_default():
    from fastport.cli import _parser
    p = _parser()
    subs = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in subs.choices.items():
        for a in sp._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help, (name, a.dest)
        text = sp.format_help()
        assert "(default:" in text, name
    assert "8 64" in subs.choices["bench"].format_help()


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "fastport.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd="/", **kw)


@pytest.mark.parametrize("args", [
    ["bench", "--clients", "pump,nonsense"],
    ["bench", "--senders", "-3"],
    ["bench", "--payload", "99999999"],
    ["driver", "--port", "x", "--rate", "-1"],
    ["driver", "--port", "", "--seconds", "1"],
    ["driver", "--port", "y" * 300, "--seconds", "1"],
])
def test_bad_command_input_is_one_line(args):
    p = _cli(*args)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.parametrize("load", [["--senders", "4"], ["--inflight", "64"]])
def test_driver_command_against_a_pump_in_another_process(port_name, tmp_path, load):
    out = tmp_path / "d.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastport.cli", "driver", "--port", port_name, *load,
         "--seconds", "1", "--json", str(out)],
        stdout=subprocess.PIPE, text=True, cwd="/", env=os.environ.copy())
    try:
        assert "waiting" in proc.stdout.readline()
        proto = protocols.bench(1024)
        port = fastport.connect(port_name)
        ended = []

        def serve(pump):
            try:
                pump.run(proto.batch_handler())
            except fastport.status.PortDisconnected as e:  # the driver exits at the end
                ended.append(e)

        with Pump(port, message=proto.message, reply=proto.reply) as pump:
            t = threading.Thread(target=serve, args=(pump,))
            t.start()
            rest = proc.stdout.read()
            assert proc.wait(30) == 0, rest
            pump.stop()
            t.join()
        assert "bad replies 0" in rest
        r = json.loads(out.read_text())
        assert r["messages"] > 0 and r["bad_replies"] == 0
        assert r["inflight"] == (64 if "--inflight" in load else 0)
    finally:
        proc.kill()
        proc.wait()
