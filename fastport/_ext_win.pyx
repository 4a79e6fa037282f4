# cython: language_level=3
"""fastport's extension module as built on Windows (setup.py compiles this file as
fastport._ext): the pump over the real FltLib and the FltLib-shaped Port (_core.pxi). The
emulated Filter Manager (POSIX-only), the test driver and its reference clients, and fanotify
are left out; fastport/_ext.pyx is the POSIX build with all of them."""

include "_core.pxi"
