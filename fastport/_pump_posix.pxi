# What only POSIX builds have of the pump: its eventfd, for asyncio's add_reader (on Windows the
# pump's wake-up is a HANDLE, and `async for` waits in a thread instead: fastport/pump.py).


def _pump_fd(_PumpCore core not None):
    """The pump's event fd: readable while a batch is ready or the pump has ended."""
    core._ok()
    cdef int fd = fp_pump_fd(core._p)
    if fd < 0:
        raise OSError("cannot create the pump's event fd")
    return fd
