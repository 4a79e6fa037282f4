# sizeof/offsetof of the C wire structs, for the layout-parity tests (tests/test_dtypes.py).
# Included into fastport/_ext.pyx; the table lives in src/protocols/layouts.h.

from fastport.includes.layouts cimport fp_layout, fp_layout_table, FP_LAYOUT_COUNT


def c_layouts():
    """Layouts of the wire structs as the C compiler sees them.

    Returns {struct name: {"size": sizeof, "fields": {field: offsetof},
    "field_sizes": {field: sizeof the member}}} for FP_MESSAGE_HEADER, FP_REPLY_HEADER,
    SCANNER_NOTIFICATION and SCANNER_REPLY.
    """
    cdef size_t i
    cdef const fp_layout *row
    layouts = {}
    for i in range(FP_LAYOUT_COUNT):
        row = &fp_layout_table[i]
        entry = layouts.setdefault(
            row.struct_name.decode("ascii"), {"size": 0, "fields": {}, "field_sizes": {}}
        )
        if row.field_name == NULL:
            entry["size"] = row.size
        else:
            field = row.field_name.decode("ascii")
            entry["fields"][field] = row.offset
            entry["field_sizes"][field] = row.size
    return layouts
