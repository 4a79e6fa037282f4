# cython: language_level=3
"""fastport's extension module as built on Windows (setup.py compiles this file as
fastport._ext): the pump over the real FltLib and the FltLib-shaped Port. The emulated Filter
Manager (POSIX-only), the test driver and its reference clients, and fanotify are left out;
fastport/_ext.pyx is the POSIX build with all of them."""
import time as _time

from fastport.includes.status cimport *
from fastport.includes.wire cimport *
from fastport.includes.backend cimport *
from fastport.includes.fltlib cimport *
from fastport.includes.port cimport *
from fastport.includes.pump cimport *

include "_common.pxi"
include "_source.pxi"
include "_port.pxi"
include "_layout.pxi"
include "_pump.pxi"
