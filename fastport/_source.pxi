# What a Pump serves: a message source that makes the pump's backend (a C table of functions,
# src/backends/backend.h) and takes it back. Port (FltLib, or the emulator's Win32 face) is one;
# other sources (fanotify) subclass it the same way.


cdef class _Source:
    """Base of the objects a Pump serves. A source serves one pump at a time."""

    cdef fp_backend *_backend_new(self, object pump) except NULL:
        """A new backend for `pump` (raises if the source cannot serve it now)."""
        raise TypeError(f"{type(self).__name__} cannot be served by a pump")

    cdef _backend_done(self, object pump):
        """`pump` is done with the source: nothing of its is pending anymore (idempotent)."""
        pass

    cdef _abandon(self):
        """The pump's stop gave up waiting for the other side: make whatever is pending on the
        source complete (as failed) so that its threads end."""
        pass
