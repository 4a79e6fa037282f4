"""Build of fastport's one extension module: the C core in src/ plus the Cython wrappers.

All C sources are compiled into a single extension (fastport._ext) so that the emulated Filter
Manager's process-wide state (port registry, handle table) exists once.

Environment switches:
  FASTPORT_DEBUG=1     define FASTPORT_DEBUG (slot/object counters for leak tests), -O1 -g
  FASTPORT_SANITIZE=1  add -fsanitize=address,undefined (run with LD_PRELOAD of libasan)
"""
import glob
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

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
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if os.environ.get("FASTPORT_DEBUG"):
    macros.append(("FASTPORT_DEBUG", "1"))
    compile_args += ["-O1", "-g"]
else:
    compile_args += ["-O2"]
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

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives={"language_level": "3", "embedsignature": True, "binding": False},
        compile_time_env={"FASTPORT_DEBUG": bool(os.environ.get("FASTPORT_DEBUG"))},
    ),
)
