# The emulator's own route to a port (fastport.connect(backend="sim")); POSIX builds only, like
# the emulator. Included into fastport/_ext.pyx after _port.pxi.
from fastport.includes.port_sim cimport fp_port_sim, fp_port_sim_connect


def _connect_sim(str name not None, context, bint sync):
    """Backs fastport.connect for the emulated Filter Manager."""
    cdef bytes bname = _name_arg(name)
    cdef Py_buffer ctx
    PyObject_GetBuffer(context, &ctx, PyBUF_SIMPLE)
    cdef void *h = NULL
    cdef int32_t hr
    cdef const char *cname = bname
    cdef uint32_t opts = FP_PORT_SYNC_HANDLE if sync else 0
    try:
        if <size_t>ctx.len > FP_PORT_MAX_CONTEXT:
            raise ValueError(f"context is {ctx.len} bytes; the limit is {FP_PORT_MAX_CONTEXT}")
        _hook_on(&fp_port_sim)  # the socket transport's handshake
        with nogil:
            hr = fp_port_sim_connect(cname, opts, ctx.buf if ctx.len else NULL,
                                     <uint32_t>ctx.len, &h)
        _hook_off(&fp_port_sim)
    finally:
        PyBuffer_Release(&ctx)
    if PyErr_Occurred() != NULL:  # interrupted (it may have connected all the same)
        if hr >= 0:
            fp_port_sim.close(h)
        _raise_interrupt()
    _check_hr(hr, _sim_context(f"FilterConnectCommunicationPort({name!r})"))
    return _connected(name, h, &fp_port_sim, sync)
