"""fanotify permission events through the Pump, on the real kernel, in temporary directories.

Opens come from other processes (their open() waits for our verdict); each child prints what
its opens got. Needs CAP_SYS_ADMIN: without it these tests skip, for that reason only (CI runs as
root). The argument checks run everywhere: they come before any group or mark."""
import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time

import numpy as np
import pytest

import fastport
import fastport.fanotify as fan

SIGNATURE = b"FASTPORT-TEST-SIGNATURE-3f9a"
CHILD_TIMEOUT = 60  # seconds a child may take before the test calls it stuck (never reached)

OPENER = """
import errno, json, sys
out = {}
for p in sys.argv[1:]:
    try:
        open(p, "rb").close()
        out[p] = "ok"
    except OSError as e:
        out[p] = errno.errorcode[e.errno]
print(json.dumps(out))
"""


def _can_fanotify():
    try:
        os.makedirs("/tmp", exist_ok=True)
        fan.open("/tmp").close()
        return True
    except PermissionError:
        return False


needs_root = pytest.mark.skipif(not _can_fanotify(), reason="fanotify needs CAP_SYS_ADMIN")


def opens(*paths):
    """What open() of each path gets in another process: 'ok' or the errno's name."""
    r = subprocess.run([sys.executable, "-c", OPENER, *map(str, paths)], capture_output=True,
                       text=True, timeout=CHILD_TIMEOUT, check=True)
    return json.loads(r.stdout)


@contextlib.contextmanager
def serving(port, handler, **kw):
    """A Pump running `handler` in a thread; stopped (every event answered) on exit."""
    pump = fastport.Pump(port, message=port.message, reply=port.reply,
                         default_reply=port.default_reply, **kw)
    pump.start()
    t = threading.Thread(target=pump.run, args=(handler,))
    t.start()
    try:
        yield pump
    finally:
        pump.stop()
        t.join()


def scan_handler(batch):
    """DENY what carries SIGNATURE, read through the event's own fd."""
    for i, m in enumerate(batch.messages):
        data = os.pread(int(m["fd"]), 4096, 0)
        batch.replies[i]["verdict"] = fan.DENY if SIGNATURE in data else fan.ALLOW
    batch.reply()


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "clean.txt").write_bytes(b"nothing to see\n")
    (tmp_path / "sig.bin").write_bytes(b"head " + SIGNATURE + b" tail")
    return tmp_path


# -- argument checks, before any group or mark --------------------------------------------

def test_missing_path_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as ei:
        fan.open([tmp_path, missing])
    assert ei.value.filename == str(missing)


@pytest.mark.parametrize("kw, words", [
    ({"events": ("open_perm", "opne_perm")}, "opne_perm"),
    ({"mark": "tree"}, "tree"),
    ({"on_overflow": "maybe"}, "on_overflow"),
    ({"deny_errno": errno.EACCES}, "deny_errno"),
    ({"events": ()}, "no events"),
])
def test_bad_arguments(tmp_path, kw, words):
    with pytest.raises(ValueError, match=words):
        fan.open(tmp_path, **kw)


def test_dtypes():
    assert fan.message_dtype().names == ("mask", "id", "pid", "fd")
    assert fan.message_dtype(64)["path"].itemsize == 64
    assert fan.REPLY.names == ("verdict",)
    assert fan.ALLOW != fan.DENY


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root (and util-linux's setpriv) to drop the capability")
def test_without_cap_sys_admin(tmp_path):
    code = (f"import fastport.fanotify as f\ntry:\n    f.open({str(tmp_path)!r})\n"
            "except PermissionError as e:\n    print('PermissionError', e)\n")
    r = subprocess.run(["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin",
                        sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=CHILD_TIMEOUT, cwd="/")
    assert "PermissionError" in r.stdout and "CAP_SYS_ADMIN" in r.stdout, r.stderr


# -- the real kernel --------------------------------------------------------------------

@needs_root
def test_signature_denied_clean_allowed(tree):
    with fan.open(tree, resolve_paths=True) as port, serving(port, scan_handler) as pump:
        got = opens(tree / "clean.txt", tree / "sig.bin", tree / "clean.txt")
        st = pump.stats
    assert got == {str(tree / "clean.txt"): "ok", str(tree / "sig.bin"): "EPERM"}
    assert st["received"] == 3 and st["replied"] == 3 and st["defaulted"] == 0
    s = port.stats
    assert s["delivered"] == 3 and s["replied"] == 3 and s["held"] == 0


@needs_root
def test_paths_resolved_in_c(tree):
    seen = []

    def handler(batch):
        seen.extend(bytes(p).rstrip(b"\0").decode() for p in batch.messages["path"])
        seen.extend(int(p) for p in batch.messages["pid"])

    with fan.open(tree, resolve_paths=True, path_bytes=512) as port, serving(port, handler):
        opens(tree / "clean.txt")
    assert seen[0] == str(tree / "clean.txt")
    assert seen[1] != os.getpid()


@needs_root
def test_exec_denied(tmp_path):
    tool = tmp_path / "tool"
    shutil.copy("/bin/true", tool)
    os.chmod(tool, 0o755)

    def handler(batch):
        ex = (batch.messages["mask"] & fan.EVENTS["open_exec_perm"]) != 0
        batch.replies["verdict"] = np.where(ex, fan.DENY, fan.ALLOW)
        batch.reply()

    with fan.open(tmp_path, events=("open_perm", "open_exec_perm")) as port, \
            serving(port, handler):
        assert opens(tool) == {str(tool): "ok"}  # reading it is fine
        r = subprocess.run([sys.executable, "-c",
                            f"import subprocess\ntry:\n    subprocess.run([{str(tool)!r}])\n"
                            "except PermissionError:\n    print('refused')\n"],
                           capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    assert r.stdout.strip() == "refused", r.stderr


@needs_root
def test_self_exclusion(tree):
    """The handler opens the file it is asked about, and the test process opens marked files:
    both would wait forever on themselves if C did not allow this process's events."""
    def handler(batch):
        for i, m in enumerate(batch.messages):
            with open(bytes(m["path"]).rstrip(b"\0"), "rb") as f:
                data = f.read()
            batch.replies[i]["verdict"] = fan.DENY if SIGNATURE in data else fan.ALLOW
        batch.reply()

    with fan.open(tree, resolve_paths=True) as port, serving(port, handler) as pump:
        with open(tree / "sig.bin", "rb") as f:  # our own open: allowed in C
            assert SIGNATURE in f.read()
        got = opens(tree / "sig.bin")
        st = pump.stats
    assert got == {str(tree / "sig.bin"): "EPERM"}
    assert st["received"] == 1
    assert port.stats["excluded"] >= 2  # the test's open and the handler's


@needs_root
@pytest.mark.parametrize("on_overflow, expect", [("allow", "ok"), ("deny", "EPERM")])
def test_deadline_default_with_a_sleeping_handler(tree, on_overflow, expect):
    """A handler that never returns in time: the deadline answers with port.default_reply
    (fail open unless on_overflow='deny')."""
    asleep, wake = threading.Event(), threading.Event()

    def handler(batch):
        asleep.set()
        wake.wait()

    with fan.open(tree, on_overflow=on_overflow) as port:
        with serving(port, handler, deadline=0.2) as pump:
            try:
                got = opens(tree / "clean.txt")
                assert asleep.is_set()
            finally:
                wake.set()
            st = pump.stats
    assert got == {str(tree / "clean.txt"): expect}
    assert st["defaulted_deadline"] == 1


@needs_root
def test_deny_errno(tree):
    try:
        port = fan.open(tree, deny_errno=errno.EIO)
    except OSError as e:
        pytest.skip(f"no pre-content groups here: {e}")
    with port, serving(port, scan_handler):
        got = opens(tree / "sig.bin", tree / "clean.txt")
    assert got == {str(tree / "sig.bin"): "EIO", str(tree / "clean.txt"): "ok"}


@needs_root
def test_stop_under_load_answers_everything(tmp_path):
    """Openers keep opening while the pump stops; stop answers what was read, closing the group
    lets the kernel allow the rest: no process is left blocked in open()."""
    files = []
    for i in range(20):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x")
        files.append(str(p))
    gate = threading.Event()

    def handler(batch):
        gate.set()
        batch.replies["verdict"] = fan.ALLOW
        batch.reply()

    port = fan.open(tmp_path)
    loop = "import sys\nfor _ in range(50):\n    for p in sys.argv[1:]:\n        open(p).close()\n"
    kids = [subprocess.Popen([sys.executable, "-c", loop, *files]) for _ in range(4)]
    try:
        with serving(port, handler) as pump:
            assert gate.wait(CHILD_TIMEOUT)
        st = pump.stats
        assert st["received"] == st["replied"] + st["defaulted"]
        assert port.stats["delivered"] == st["received"]
        assert port.stats["held"] == 0
    finally:
        port.close()
        codes = [k.wait(CHILD_TIMEOUT) for k in kids]
    assert codes == [0, 0, 0, 0]


@needs_root
def test_compileall_workload_counts_equal(tmp_path):
    """A real workload: compileall on a copy of a package of the standard library, every
    directory marked: it finishes, every event answered, the pump's counts equal the events."""
    src = os.path.join(sysconfig.get_paths()["stdlib"], "email")
    tree = tmp_path / "email"
    shutil.copytree(src, tree, ignore=shutil.ignore_patterns("__pycache__"))
    dirs = [d for d, _, _ in os.walk(tree)]

    def handler(batch):
        batch.replies["verdict"] = fan.ALLOW
        batch.reply()

    with fan.open(dirs) as port:
        with serving(port, handler, batch=64) as pump:
            r = subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)],
                               capture_output=True, text=True, timeout=CHILD_TIMEOUT)
        st = pump.stats
        s = port.stats
    assert r.returncode == 0, r.stderr
    assert s["delivered"] >= len(list(tree.glob("*.py")))
    assert st["received"] == s["delivered"]
    assert st["replied"] == st["received"] and st["defaulted"] == 0
    assert s["replied"] == s["delivered"] and s["held"] == 0 and s["stale"] == 0


def wait_until(cond, timeout=CHILD_TIMEOUT):
    """Polls observable state (never a fixed sleep): True once cond() holds."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


@needs_root
def test_fd_budget_bounds_held_fds(tree):
    """With a budget of 2 fds, the pump waiting when full, and 6 processes opening at once, the
    handler sees every event but never more than 2 event fds held (the rest wait in the kernel,
    not in our fd table)."""
    most = []

    def handler(batch):
        most.append(port.stats["held"])
        batch.replies["verdict"] = fan.ALLOW
        batch.reply()

    port = fan.open(tree, fd_budget=2)
    with port, serving(port, handler, on_full="wait") as pump:
        kids = [subprocess.Popen([sys.executable, "-c", OPENER, str(tree / "clean.txt")],
                                 stdout=subprocess.DEVNULL) for _ in range(6)]
        codes = [k.wait(CHILD_TIMEOUT) for k in kids]
        st = pump.stats
    assert codes == [0] * 6 and st["received"] == 6
    assert 1 <= max(most) <= 2 and port.stats["budget"] == 2


@needs_root
def test_pre_access_where_offered(tree):
    try:
        port = fan.open(tree, events=("pre_access",))
    except OSError as e:
        assert "pre-content" in str(e)
        return
    with port, serving(port, scan_handler):
        got = opens(tree / "clean.txt", tree / "sig.bin")
    # pre_access comes on reads, not opens: both open, and no process waits
    assert got == {str(tree / "clean.txt"): "ok", str(tree / "sig.bin"): "ok"}


@needs_root
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_pre_access_refused_on_tmpfs_names_the_cause():
    d = __import__("tempfile").mkdtemp(dir="/dev/shm")
    try:
        with pytest.raises(OSError, match="pre-content") as ei:
            fan.open(d, events=("pre_access",))
        assert d in str(ei.value)
    finally:
        os.rmdir(d)


@needs_root
def test_bench_rows_have_the_emulated_bench_keys(tmp_path):
    from fastport import benchmark, fanbench
    rows = [fanbench.run_case(c, senders=1, seconds=0.2, workdir=str(tmp_path / c))
            for c in fanbench.CLIENTS if not os.makedirs(tmp_path / c)]
    benchmark.add_ratios(rows)
    for r in rows:
        assert r["source"] == "fanotify" and r["messages"] > 0 and r["errors"] == 0
        assert r["latency_us"]["p50"] > 0
        assert r["cpu_us_per_msg"] > 0
    assert "pump" in benchmark.format_table(rows)


def _deny_all(batch):
    batch.replies["verdict"] = fan.DENY
    batch.reply()


@needs_root
def test_listed_pids_are_allowed_in_c(tree):
    sig = str(tree / "sig.bin")
    waiting = subprocess.Popen(["sh", "-c", 'read x; exec cat "$0" >/dev/null', sig],
                               stdin=subprocess.PIPE)
    with fan.open(tree, exclude_pids=[waiting.pid]) as port, serving(port, _deny_all) as pump:
        waiting.communicate(b"go\n", timeout=CHILD_TIMEOUT)
        denied = opens(sig)
        st = pump.stats
    assert waiting.returncode == 0  # its cat ran under the listed pid
    assert denied == {sig: "EPERM"}
    assert st["received"] == 1 and port.stats["excluded"] == 1


@needs_root
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs util-linux's setpriv")
def test_listed_uids_are_allowed_in_c():
    import tempfile
    d = tempfile.mkdtemp()
    try:
        os.chmod(d, 0o755)
        f = os.path.join(d, "sig.bin")
        with open(f, "wb") as w:
            w.write(SIGNATURE)
        os.chmod(f, 0o644)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", f]
        with fan.open(d, exclude_uids=[65534]) as port, serving(port, _deny_all) as pump:
            r = subprocess.run(as_nobody, capture_output=True, timeout=CHILD_TIMEOUT)
            st = pump.stats
        assert r.returncode == 0 and r.stdout == SIGNATURE
        assert st["received"] == 0 and port.stats["excluded"] == 1
    finally:
        shutil.rmtree(d)


@needs_root
@pytest.mark.parametrize("on_overflow, expect", [("allow", "ok"), ("deny", "EPERM")])
def test_fd_budget_spent_answers_with_on_overflow(tree, on_overflow, expect):
    """The queue-full policy: a consumer that keeps its batches unanswered holds the whole fd
    budget (2); the next opens are answered in C with the on_overflow verdict at once instead of
    waiting in the kernel, and the held ones get the consumer's verdict when it answers."""
    port = fan.open(tree, fd_budget=2, on_overflow=on_overflow)
    pump = fastport.Pump(port, message=port.message, reply=port.reply, batch=1)
    clean = str(tree / "clean.txt")
    batches, answer = [], threading.Event()

    def keep_one():  # one batch (one event) per thread, kept unanswered until told
        b = next(pump)
        batches.append(b)
        answer.wait()
        b.replies["verdict"] = fan.DENY
        b.reply()
        b.release()

    with port, pump:
        consumers = [threading.Thread(target=keep_one) for _ in range(2)]
        for t in consumers:
            t.start()
        held = [subprocess.Popen([sys.executable, "-c", OPENER, clean], stdout=subprocess.PIPE,
                                 text=True) for _ in range(2)]
        assert wait_until(lambda: len(batches) == 2)
        more = [opens(clean) for _ in range(3)]  # they would wait forever without the policy
        answer.set()
        for t in consumers:
            t.join()
        firsts = [json.loads(k.communicate(timeout=CHILD_TIMEOUT)[0]) for k in held]
        s = port.stats
    assert more == [{clean: expect}] * 3
    assert firsts == [{clean: "EPERM"}] * 2
    assert s["overflowed"] == 3 and s["delivered"] == 2 and s["held"] == 0


@needs_root
def test_full_slab_answered_at_once_without_a_deadline(tree):
    """A fanotify port's pump answers what finds its slab full at once (on_full="default", no
    deadline needed): a handler that keeps every batch's views forever cannot stall the opens."""
    kept = []

    def hoarder(batch):
        kept.append(batch.messages)  # the view keeps its chunk from being recycled
        batch.replies["verdict"] = fan.ALLOW
        batch.reply()

    clean = str(tree / "clean.txt")
    with fan.open(tree) as port:
        with serving(port, hoarder, threads=1, outstanding=1, batch=1) as pump:
            assert pump.on_full == "default"
            got = [opens(clean) for _ in range(40)]
            st = pump.stats
        kept.clear()
    assert got == [{clean: "ok"}] * 40
    assert st["defaulted_overflow"] > 0
    assert st["received"] == 40 and st["replied"] + st["defaulted_overflow"] == 40


@pytest.fixture
def tmpfs(tmp_path):
    """A private tmpfs mounted at tmp_path/mnt, and the same filesystem bound at tmp_path/bind."""
    mnt, bind = tmp_path / "mnt", tmp_path / "bind"
    mnt.mkdir()
    bind.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "fastport-test", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        subprocess.run(["mount", "--bind", str(mnt), str(bind)], check=True)
        try:
            (mnt / "a" / "b").mkdir(parents=True)
            (mnt / "a" / "b" / "sig.bin").write_bytes(SIGNATURE)
            (mnt / "a" / "b" / "clean.txt").write_bytes(b"clean")
            yield mnt, bind
        finally:
            subprocess.run(["umount", str(bind)], check=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@needs_root
@pytest.mark.parametrize("mark, via_bind", [("inode", "ok"), ("mount", "ok"),
                                            ("filesystem", "EPERM")])
def test_marks_cover_what_they_say(tmpfs, mark, via_bind):
    """inode: the directory's direct children only; mount: everything under that mount, not the
    same files reached through another mount; filesystem: every mount of it."""
    mnt, bind = tmpfs
    nested = "EPERM" if mark != "inode" else "ok"
    with fan.open(mnt, mark=mark) as port, serving(port, scan_handler):
        got = opens(mnt / "a" / "b" / "sig.bin", mnt / "a" / "b" / "clean.txt",
                    bind / "a" / "b" / "sig.bin")
    assert got == {str(mnt / "a" / "b" / "sig.bin"): nested,
                   str(mnt / "a" / "b" / "clean.txt"): "ok",
                   str(bind / "a" / "b" / "sig.bin"): via_bind}


@needs_root
@pytest.mark.parametrize("audit", [True, False])
def test_audit_verdicts(tree, audit):
    """DENY | AUDIT: with audit=True the kernel takes it as it is (and writes an audit record);
    without, it refuses the AUDIT bit and the backend sends the verdict without it: the opener
    gets EPERM either way, never a process left waiting."""
    def handler(batch):
        batch.replies["verdict"] = fan.DENY | fan.AUDIT
        batch.reply()

    with fan.open(tree, audit=audit) as port, serving(port, handler) as pump:
        got = opens(tree / "clean.txt")
        st, s = pump.stats, port.stats
    assert got == {str(tree / "clean.txt"): "EPERM"}
    assert st["replied"] == 1 and s["replied"] == 1
    assert s["audit_refused"] == (0 if audit else 1)
