"""Build of fastport's one extension module: the C core in src/ plus the Cython wrappers.

POSIX (Linux): all C sources go into a single extension (fastport._ext, from fastport/_ext.pyx)
so that the emulated Filter Manager's process-wide state (port registry, handle table) exists
once; the FltLib backend is compiled against the emulator's Win32 face (src/fltsim/win32), so
it reaches that one registry.

Windows (MSVC or mingw-w64): fastport/_ext_win.pyx becomes fastport._ext, over the portable C
only (src/common, src/pump, the FltLib backend and port over the real <windows.h>/<fltuser.h>),
linked with fltlib (FLTLIB.DLL). The emulator (POSIX-only), the test driver and its reference
clients, and fanotify are left out.

Environment switches (POSIX):
  FASTPORT_DEBUG=1     define FASTPORT_DEBUG (slot/object counters for leak tests), -O1 -g
  FASTPORT_SANITIZE=1  add -fsanitize=address,undefined (run with LD_PRELOAD of libasan)
"""
import glob
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

WINDOWS = sys.platform == "win32"
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
debug = bool(os.environ.get("FASTPORT_DEBUG"))
if debug:
    macros.append(("FASTPORT_DEBUG", "1"))

if WINDOWS:
    C_SOURCES = sorted(
        glob.glob("src/common/*.c")
        + ["src/backends/fltlib.c", "src/backends/port_fltlib.c"]
        + glob.glob("src/pump/*.c")
    )
    ext = Extension(
        "fastport._ext",
        sources=["fastport/_ext_win.pyx"] + C_SOURCES,
        include_dirs=["src", numpy.get_include()],
        # Windows 10 APIs, as `make win` builds the same C
        define_macros=macros + [("WIN32_LEAN_AND_MEAN", "1"), ("_WIN32_WINNT", "0x0A00")],
        libraries=["fltlib"],
    )
else:
    C_SOURCES = sorted(
        glob.glob("src/common/*.c")
        + glob.glob("src/fltsim/*.c")
        + glob.glob("src/backends/*.c")
        + glob.glob("src/pump/*.c")
        + glob.glob("src/driver/*.c")
        + glob.glob("src/cref/*.c")
    )
    compile_args = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-function", "-pthread"]
    link_args = ["-pthread"]
    compile_args += ["-O1", "-g"] if debug else ["-O2"]
    if os.environ.get("FASTPORT_SANITIZE"):
        compile_args += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        link_args += ["-fsanitize=address,undefined"]
    ext = Extension(
        "fastport._ext",
        sources=["fastport/_ext.pyx"] + C_SOURCES,
        include_dirs=["src", "src/fltsim/win32", numpy.get_include()],
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


class BuildExt(build_ext):
    """On Windows the flags depend on the compiler, known only here: MSVC (Visual Studio 2022
    17.5 or later) needs C11 with its experimental <stdatomic.h> (the two GCC builtins the core
    uses have MSVC forms in src/common/fp_bits.h); mingw-w64 takes the GNU flags."""

    def build_extensions(self):
        if WINDOWS:
            if self.compiler.compiler_type == "msvc":
                args = ["/std:c11", "/experimental:c11atomics", "/O2" if not debug else "/Od"]
            else:
                args = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-function",
                        "-O1" if debug else "-O2"]
            for e in self.extensions:
                e.extra_compile_args = args + list(e.extra_compile_args)
        super().build_extensions()


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=cythonize(
        [ext],
        compiler_directives={"language_level": "3", "embedsignature": True, "binding": False},
        compile_time_env={"FASTPORT_DEBUG": debug},
    ),
)
