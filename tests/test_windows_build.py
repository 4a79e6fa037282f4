"""The Windows build, checked as far as Linux can (issue 11): the extension module Windows
compiles (fastport/_ext_win.pyx: no emulator, no driver, no fanotify) must cythonize and its C
must compile, so a shared .pxi that uses something POSIX-only fails here, not on a Windows
machine; and the FltLib port (src/backends/port_fltlib.c) compiles with mingw-w64 against the
real <windows.h>/<fltuser.h> with -Werror. Windows' own Python headers are not here: the
module's C is compiled with the Linux ones, the emulator's Win32 face standing in for
<windows.h> (which the module itself never includes)."""
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy
import pytest

from test_samples_mingw import MINGW, needs_mingw

ROOT = Path(__file__).resolve().parents[1]


def test_the_windows_module_cythonizes_and_compiles(tmp_path):
    pytest.importorskip("Cython")  # the test extra installs it
    out = tmp_path / "_ext.c"
    r = subprocess.run([sys.executable, "-m", "cython", "-3", "-I", str(ROOT),
                        "--module-name", "fastport._ext", str(ROOT / "fastport" / "_ext_win.pyx"),
                        "-o", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    for posix_only in ("fsim_", "SimFilter", "fp_driver", "fp_cref", "fp_fan", "fp_port_sim",
                       "fp_pump_fd"):
        assert posix_only not in text, f"the Windows module refers to {posix_only}"
    r = subprocess.run(["cc", "-fsyntax-only", "-std=gnu11", "-Wall", "-Wno-unused-function",
                        "-I" + sysconfig.get_paths()["include"], "-I" + numpy.get_include(),
                        "-I" + str(ROOT / "src"), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@needs_mingw
def test_the_fltlib_port_compiles_against_the_real_windows_headers(tmp_path):
    obj = tmp_path / "port_fltlib.o"
    src = ROOT / "src" / "backends" / "port_fltlib.c"
    r = subprocess.run([MINGW, "-std=gnu11", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'src'}",
                        "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    nm = subprocess.run(["x86_64-w64-mingw32-nm", str(obj)], capture_output=True, text=True)
    imports = {line.split()[-1] for line in nm.stdout.splitlines() if " U " in line}
    assert {"FilterConnectCommunicationPort", "FilterGetMessage", "FilterReplyMessage",
            "FilterSendMessage"} <= imports, imports
