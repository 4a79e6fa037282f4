"""`fastport scan` and its Scanner on the real kernel, with both engines (yara-x, yara-python).
Needs CAP_SYS_ADMIN for the kernel parts (skipped without it, for that reason only)."""
import os
import signal
import subprocess
import sys

import pytest

import fastport.fanotify as fan
from fastport import scan

from test_fanotify import CHILD_TIMEOUT, SIGNATURE, needs_root, opens, serving

RULES = f'rule test_sig {{ strings: $a = "{SIGNATURE.decode()}" condition: $a }}\n'


@pytest.fixture
def rules(tmp_path):
    p = tmp_path / "rules.yar"
    p.write_text(RULES)
    return p


@pytest.fixture
def tree(tmp_path):
    d = tmp_path / "watched"
    d.mkdir()
    (d / "clean.txt").write_bytes(b"nothing to see\n")
    (d / "sig.bin").write_bytes(b"head " + SIGNATURE + b" tail")
    (d / "skip.sig").write_bytes(SIGNATURE)
    (d / "empty").write_bytes(b"")
    return d


def _fastport(*args, **kw):
    return subprocess.run([sys.executable, "-m", "fastport.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT, **kw)


@pytest.mark.parametrize("engine", scan.ENGINES)
def test_rules_that_do_not_compile(tmp_path, engine):
    bad = tmp_path / "bad.yar"
    bad.write_text("rule {\n")
    r = _fastport("scan", tmp_path, "--rules", bad, "--engine", engine)
    assert r.returncode == 2
    assert "does not compile" in r.stderr and str(bad) in r.stderr


def test_missing_path_before_any_mark(tmp_path, rules):
    r = _fastport("scan", tmp_path / "nope", "--rules", rules)
    assert r.returncode == 1 and "nope" in r.stderr


@needs_root
@pytest.mark.parametrize("engine", scan.ENGINES)
def test_scanner_denies_matches_caches_and_excludes(tree, rules, engine, tmp_path):
    out = open(tmp_path / "out.txt", "w+")
    sc = scan.Scanner(scan.engine(engine, str(rules)), exclude=["*.sig"], out=out)
    with fan.open(tree, resolve_paths=True) as port, serving(port, sc.handle):
        got = opens(tree / "clean.txt", tree / "sig.bin", tree / "skip.sig", tree / "empty")
        again = opens(tree / "clean.txt")
    sc.close()
    assert got == {str(tree / "clean.txt"): "ok", str(tree / "sig.bin"): "EPERM",
                   str(tree / "skip.sig"): "ok", str(tree / "empty"): "ok"}
    assert again == {str(tree / "clean.txt"): "ok"}
    assert sc.counts["scanned"] == 3 and sc.counts["cached"] == 1
    assert sc.counts["excluded"] == 1 and sc.counts["denied"] == 1
    out.seek(0)
    line, = out.read().splitlines()
    assert line.startswith(f"denied {tree / 'sig.bin'} pid=") and "rule=test_sig" in line
    assert "(python" in line  # the opening process's name


@needs_root
def test_audit_allows_and_reports(tree, rules, tmp_path):
    out = open(tmp_path / "out.txt", "w+")
    sc = scan.Scanner(scan.engine("yara", str(rules)), deny=False, out=out)
    with fan.open(tree, resolve_paths=True) as port, serving(port, sc.handle):
        got = opens(tree / "sig.bin")
    sc.close()
    assert got == {str(tree / "sig.bin"): "ok"}
    out.seek(0)
    assert out.read().startswith(f"audit {tree / 'sig.bin'}")


@needs_root
def test_cli_denies_then_sigterm_prints_summary(tree, rules):
    p = subprocess.Popen([sys.executable, "-m", "fastport.cli", "scan", str(tree), "--rules",
                          str(rules), "--engine", "yara-x"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr.readline().startswith("watching ")
        got = opens(tree / "sig.bin", tree / "clean.txt")
        line = p.stdout.readline()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert got == {str(tree / "sig.bin"): "EPERM", str(tree / "clean.txt"): "ok"}
    assert line.startswith(f"denied {tree / 'sig.bin'}") and "rule=test_sig" in line
    assert p.returncode == 0
    assert "summary:" in err and "denied=1" in err
