# Mirrors src/protocols/bench.h (with scanner.h, which it includes).
from libc.stdint cimport int32_t, uint8_t, uint32_t

cdef extern from "protocols/bench.h" nogil:
    ctypedef struct BENCH_MESSAGE:
        uint32_t sender
        uint32_t seq
        uint32_t length
        uint32_t marker
    ctypedef struct BENCH_REPLY:
        uint32_t checksum
        uint32_t verdict
    ctypedef struct SCANNER_NOTIFICATION:
        uint32_t BytesToScan
        uint32_t Reserved
        uint8_t Contents[1024]
    ctypedef struct SCANNER_REPLY:
        uint8_t SafeToOpen

    const uint32_t BENCH_HEADER_BYTES
    const uint32_t BENCH_MARKER_INFECTED
    cdef enum fp_protocol:
        FP_PROTO_BENCH
        FP_PROTO_SCANNER

    uint32_t fp_protocol_reply_size(int protocol)
    uint32_t bench_load_le32(const uint8_t *p)
    uint32_t bench_checksum(const void *payload, uint32_t length)
    uint32_t bench_verdict(uint32_t marker)
    void bench_expected_reply(const BENCH_MESSAGE *m, BENCH_REPLY *out)
    long scanner_find_foul(const uint8_t *p, size_t n)
    void scanner_expected_reply(const SCANNER_NOTIFICATION *m, SCANNER_REPLY *out)
