# Mirrors src/backends/fltlib.h.
from libc.stdint cimport int32_t, uint32_t
from fastport.includes.backend cimport fp_backend

cdef extern from "backends/fltlib.h" nogil:
    fp_backend *fp_fltlib_backend_new(void *port, void *iocp, uint32_t flags, int32_t *hr)
    int32_t fp_fltlib_completion_port(void *port, void **iocp)
    void fp_fltlib_close(void *handle)
