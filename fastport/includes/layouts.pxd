# Mirrors src/protocols/layouts.h.

cdef extern from "protocols/layouts.h" nogil:
    ctypedef struct fp_layout:
        const char *struct_name
        const char *field_name
        size_t offset
        size_t size
    const fp_layout fp_layout_table[]
    size_t FP_LAYOUT_COUNT
