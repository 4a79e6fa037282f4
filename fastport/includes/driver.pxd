# Mirrors src/protocols/bench.h, src/driver/driver.h and src/cref/cref.h.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from fastport.includes.fltsim cimport SIM_HANDLE, fsim_client, fsim_server
from fastport.includes.histogram cimport fp_hist, fp_hist_summary

cdef extern from "common/fp_status.h" nogil:
    # under its own Cython name, so it never clashes with a later status.pxd entry
    const int32_t FP_DRV_E_OUTOFMEMORY "FP_E_OUTOFMEMORY"

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

cdef extern from "driver/driver.h" nogil:
    const uint32_t FP_DRIVER_MAX_SENDERS
    const uint32_t FP_DRIVER_MAX_PAYLOAD
    const uint32_t FP_DRIVER_MAX_INFLIGHT
    const uint64_t FP_DRIVER_MAX_INFLIGHT_BYTES

    ctypedef struct fp_driver:
        pass
    ctypedef struct fp_driver_config:
        uint32_t senders
        int protocol
        uint32_t payload_min
        uint32_t payload_max
        double seconds
        uint64_t messages
        double rate
        int64_t timeout_ns
        uint64_t seed
        double warmup
        uint32_t inflight
    void fp_driver_config_init(fp_driver_config *cfg)

    ctypedef struct fp_driver_result:
        uint64_t sent
        uint64_t replies_ok
        uint64_t bad_replies
        uint64_t timeouts
        uint64_t disconnects
        uint64_t overflows
        uint64_t errors
        uint64_t warmup_messages
        uint64_t wrong_size
        uint32_t wrong_size_length
        uint32_t reply_size
        int32_t first_error
        uint32_t senders_running
        int in_warmup
        int running
        double seconds
        double throughput
        fp_hist_summary latency

    int32_t fp_driver_start(const fp_driver_config *cfg, fsim_client *client, fp_driver **out)
    int32_t fp_driver_start_server(const fp_driver_config *cfg, fsim_server *server,
                                   fp_driver **out)
    void fp_driver_stop(fp_driver *d)
    void fp_driver_abort(fp_driver *d)
    enum:
        FP_DRIVER_DONE
        FP_DRIVER_RUNNING
    int fp_driver_wait(fp_driver *d, int64_t timeout_ns)
    void fp_driver_progress(fp_driver *d, fp_driver_result *out)
    int fp_driver_get_result(fp_driver *d, fp_driver_result *out)
    const fp_hist *fp_driver_histogram(fp_driver *d)
    ctypedef struct fp_hist_row:
        uint64_t low
        uint64_t high
        uint64_t count
    size_t fp_driver_histogram_rows(fp_driver *d, fp_hist_row *rows, size_t cap)
    void fp_driver_destroy(fp_driver *d)

cdef extern from "cref/cref.h" nogil:
    const uint32_t FP_CREF_MAX_THREADS
    const uint32_t FP_CREF_MAX_OUTSTANDING
    ctypedef struct fp_cref:
        pass
    ctypedef struct fp_cref_stats:
        uint64_t received
        uint64_t replied
        uint64_t no_reply
        uint64_t late
        uint64_t truncated
        uint64_t errors
        uint64_t batches
        int32_t last_error
        uint32_t threads_running
    int32_t fp_cref_start(void *port, uint32_t threads, uint32_t outstanding, int protocol,
                          uint32_t max_payload, fp_cref **out)
    void fp_cref_stop(fp_cref *c)
    void fp_cref_join(fp_cref *c)
    void fp_cref_stats_get(fp_cref *c, fp_cref_stats *out)
    void fp_cref_destroy(fp_cref *c)
