# Mirrors the POSIX half of src/backends/port.h: the port's calls over the emulator.
from libc.stdint cimport int32_t, uint32_t
from fastport.includes.port cimport fp_port_ops

cdef extern from "backends/port.h" nogil:
    const fp_port_ops fp_port_sim
    int32_t fp_port_sim_connect(const char *name, uint32_t options, const void *context,
                                uint32_t context_size, void **port)
