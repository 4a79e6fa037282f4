"""The Windows wheel as installed (cibuildwheel's test step on Windows; skipped elsewhere):
the FltLib build imports, defaults to the real Filter Manager, has no emulator, and reaches
FLTLIB.DLL. No minifilter is loaded on a build machine, so a connect finds no port."""
import sys

import pytest

import fastport

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="the Windows wheel only")


def test_the_windows_build_serves_fltlib_only():
    assert fastport.DEFAULT_BACKEND == "fltlib"
    assert fastport._connect_sim is None
    with pytest.raises(ValueError, match="not available"):
        fastport.connect("\\ScannerPort", backend="sim")
    with pytest.raises(ImportError, match="POSIX-only"):
        import fastport.sim  # noqa: F401


def test_connect_reaches_fltlib_and_finds_no_port():
    with pytest.raises(fastport.PortError) as e:  # PortNotFound; AccessDenied when not elevated
        fastport.connect("\\fastport-no-such-port")
    assert e.value.hresult in (0x80070002, 0x80070005)
