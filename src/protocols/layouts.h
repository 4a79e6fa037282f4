/* sizeof/offsetof of the wire structs, as a table the Cython layer hands to Python
 * (fastport._ext.c_layouts) so that tests can compare them with the numpy dtypes. */
#ifndef FP_PROTOCOLS_LAYOUTS_H
#define FP_PROTOCOLS_LAYOUTS_H

#include <stddef.h>
#include "../fltsim/fltsim.h"
#include "bench.h"
#include "scanner.h"

typedef struct fp_layout {
    const char *struct_name;
    const char *field_name; /* NULL: the row gives sizeof the struct itself */
    size_t offset;
    size_t size;
} fp_layout;

#define FP_LAYOUT_STRUCT(s) {#s, NULL, 0, sizeof(s)}
#define FP_LAYOUT_FIELD(s, f) {#s, #f, offsetof(s, f), sizeof(((s *)0)->f)}

static const fp_layout fp_layout_table[] = {
    FP_LAYOUT_STRUCT(FP_MESSAGE_HEADER),
    FP_LAYOUT_FIELD(FP_MESSAGE_HEADER, ReplyLength),
    FP_LAYOUT_FIELD(FP_MESSAGE_HEADER, MessageId),
    FP_LAYOUT_STRUCT(FP_REPLY_HEADER),
    FP_LAYOUT_FIELD(FP_REPLY_HEADER, Status),
    FP_LAYOUT_FIELD(FP_REPLY_HEADER, MessageId),
    FP_LAYOUT_STRUCT(SCANNER_NOTIFICATION),
    FP_LAYOUT_FIELD(SCANNER_NOTIFICATION, BytesToScan),
    FP_LAYOUT_FIELD(SCANNER_NOTIFICATION, Reserved),
    FP_LAYOUT_FIELD(SCANNER_NOTIFICATION, Contents),
    FP_LAYOUT_STRUCT(SCANNER_REPLY),
    FP_LAYOUT_FIELD(SCANNER_REPLY, SafeToOpen),
    FP_LAYOUT_STRUCT(BENCH_MESSAGE), /* the header; data[] (flexible) starts at its end */
    FP_LAYOUT_FIELD(BENCH_MESSAGE, sender),
    FP_LAYOUT_FIELD(BENCH_MESSAGE, seq),
    FP_LAYOUT_FIELD(BENCH_MESSAGE, length),
    FP_LAYOUT_FIELD(BENCH_MESSAGE, marker),
    FP_LAYOUT_STRUCT(BENCH_REPLY),
    FP_LAYOUT_FIELD(BENCH_REPLY, checksum),
    FP_LAYOUT_FIELD(BENCH_REPLY, verdict),
};

#define FP_LAYOUT_COUNT (sizeof fp_layout_table / sizeof fp_layout_table[0])

#endif
