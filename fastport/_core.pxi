# What both builds of fastport._ext hold (fastport/_ext.pyx on POSIX, fastport/_ext_win.pyx on
# Windows): the shared helpers, the FltLib-shaped Port, the layouts and the pump.
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
