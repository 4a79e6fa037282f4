# Mirrors src/driver/driver.h.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from fastport.includes.fltsim cimport fsim_client, fsim_server
from fastport.includes.histogram cimport fp_hist, fp_hist_summary

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
