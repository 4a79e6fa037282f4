"""fastport/_ext.pyi against the built extension, signature by signature.

mypy.stubtest (run by scripts/test.sh) checks names, classes and attributes, but it cannot see
the parameters of a Cython function built with binding=False. Cython embeds each signature as
the first line of its docstring (embedsignature), so this test compares those with the stub:
parameter names, their kinds (positional, keyword-only, *args, **kwargs) and which ones have a
default. Batch and _PumpCore are left to the pump's own work."""
import ast
import inspect
from pathlib import Path

import pytest

from fastport import _ext

CLASSES = ["Port", "Message", "ClientPort", "ServerPort", "SendResult", "CReference",
           "FanotifyPort"]
FUNCTIONS = ["_connect_sim", "_connect_fltlib", "_pump_fd", "_create_port", "runtime_dir", "c_layouts", "debug_counters",
             "_run_driver", "_bench_checksum", "_bench_expected_reply", "_scanner_expected_reply", "_fan_open", "_fan_cref_run"]


def _split_top(text):
    parts, depth, cur, quote = [], 0, "", None
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _runtime_params(doc_line):
    """[(name, kind, has_default)] from Cython's embedded 'f(Type a, b=1, *, c=None)'."""
    inner = doc_line[doc_line.index("(") + 1:doc_line.rindex(")")]
    out, kind = [], "pos"
    for p in _split_top(inner):
        if p == "*":
            kind = "kwonly"
            continue
        if p == "/":
            continue
        if p.startswith("**"):
            out.append((p[2:], "varkw", False))
            continue
        if p.startswith("*"):
            out.append((p[1:], "varargs", False))
            kind = "kwonly"
            continue
        decl, _, default = p.partition("=")
        decl = decl.replace(" not None", "").strip()
        out.append((decl.split()[-1], kind, bool(default)))
    return out


def _stub_params(fn):
    a = fn.args
    out = []
    pos = a.posonlyargs + a.args
    defaults = [False] * (len(pos) - len(a.defaults)) + [True] * len(a.defaults)
    out += [(x.arg, "pos", d) for x, d in zip(pos, defaults)]
    if a.vararg:
        out.append((a.vararg.arg, "varargs", False))
    out += [(x.arg, "kwonly", d is not None) for x, d in zip(a.kwonlyargs, a.kw_defaults)]
    if a.kwarg:
        out.append((a.kwarg.arg, "varkw", False))
    return out


def _stub():
    tree = ast.parse(Path(_ext.__file__).with_name("_ext.pyi").read_text())
    return {n.name: n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}


def _cases():
    stub = _stub()
    for name in FUNCTIONS:
        yield name, getattr(_ext, name), stub[name], False
    for cname in CLASSES:
        cls = getattr(_ext, cname)
        methods = {n.name: n for n in stub[cname].body if isinstance(n, ast.FunctionDef)}
        for mname, node in methods.items():
            if any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list):
                continue
            yield f"{cname}.{mname}", (cls if mname == "__init__" else getattr(cls, mname)), \
                node, True


@pytest.mark.parametrize("name, runtime, node, method", list(_cases()), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_stub_signature_matches_the_extension(name, runtime, node, method):
    doc = (inspect.getdoc(runtime) or "").splitlines()
    first = doc[0] if doc else ""
    short = name.split(".")[-1] if not name.endswith("__init__") else name.split(".")[0]
    assert first.split("(")[0].endswith(short), f"{name}: no embedded signature ({first!r})"
    got = _runtime_params(first)
    want = _stub_params(node)
    if method and name.endswith("__init__"):
        want = want[1:]  # the class docstring's signature has no self
    assert got == want, f"{name}: extension {got} != stub {want}"
