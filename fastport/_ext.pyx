# cython: language_level=3
"""fastport's extension module: the C core (src/) and its thin wrappers, one concern per .pxi.

One module on purpose: the emulated Filter Manager keeps process-wide state (port registry,
handle table) that must exist once, and the FltLib backend reaches it through its Win32 face.
This is the POSIX build: what both builds hold (_core.pxi), then the emulator, its own route to
a port, the pump's eventfd, the test driver and fanotify. On Windows setup.py builds
fastport/_ext_win.pyx as the same module, without them."""
from fastport.includes.fltsim cimport *
from fastport.includes.fanotify cimport *

include "_core.pxi"
include "_sim.pxi"
include "_port_sim.pxi"
include "_pump_posix.pxi"
include "_driver.pxi"
include "_fanotify.pxi"
