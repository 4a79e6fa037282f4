# cython: language_level=3
"""fastport's extension module: the C core (src/) and its thin wrappers, one concern per .pxi.

One module on purpose: the emulated Filter Manager keeps process-wide state (port registry,
handle table) that must exist once, and the FltLib backend reaches it through its Win32 face.
This is the POSIX build; on Windows setup.py builds fastport/_ext_win.pyx as the same module,
without the emulator and what stands on it."""
import time as _time

from fastport.includes.fltsim cimport *
from fastport.includes.status cimport *
from fastport.includes.wire cimport *
from fastport.includes.backend cimport *
from fastport.includes.fltlib cimport *
from fastport.includes.port cimport *
from fastport.includes.pump cimport *
from fastport.includes.fanotify cimport *

include "_common.pxi"
include "_source.pxi"
include "_sim.pxi"
include "_port.pxi"
include "_port_sim.pxi"
include "_layout.pxi"
include "_pump.pxi"
include "_pump_posix.pxi"
include "_driver.pxi"
include "_fanotify.pxi"
