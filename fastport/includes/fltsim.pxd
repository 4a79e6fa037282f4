# Mirrors src/fltsim/fltsim.h one to one.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from fastport.includes.wire cimport FP_MESSAGE_HEADER, FP_REPLY_HEADER

cdef extern from "fltsim/fltsim.h" nogil:
    const uint32_t FSIM_MAX_NAME
    const uint32_t FSIM_MAX_CONTEXT
    const uint32_t FSIM_MAX_MESSAGE
    const uint32_t FSIM_INFINITE
    const uint32_t FLT_PORT_FLAG_SYNC_HANDLE

    cdef enum fsim_access:
        FSIM_ACCESS_OWNER
        FSIM_ACCESS_EVERYONE
    cdef enum fsim_transport:
        FSIM_INPROC
        FSIM_SOCKET

    ctypedef struct fsim_server:
        pass
    ctypedef struct fsim_client:
        pass

    ctypedef struct fsim_callbacks:
        int32_t (*connect_notify)(void *cookie, fsim_client *client, const void *context,
                                  uint32_t context_size, void **conn_cookie) noexcept
        void (*disconnect_notify)(void *cookie, fsim_client *client) noexcept
        int32_t (*message_notify)(void *cookie, fsim_client *client, const void *input,
                                  uint32_t input_size, void *output, uint32_t output_size,
                                  uint32_t *returned) noexcept
        void *cookie

    int32_t fsim_create_port(const char *name, fsim_transport transport, uint32_t max_connections,
                             fsim_access access, const fsim_callbacks *callbacks,
                             fsim_server **server)
    void fsim_close_server(fsim_server *server)
    void fsim_disconnect_all(fsim_server *server)
    size_t fsim_server_clients(fsim_server *server, fsim_client **out, size_t cap)
    ctypedef struct fsim_server_stats:
        uint64_t peers_timed_out
        uint64_t connections_refused
        uint64_t sends_dropped
        uint64_t slow_peers_dropped
    void fsim_server_stats_get(fsim_server *server, fsim_server_stats *out)
    int32_t fsim_send(fsim_client *client, const void *data, uint32_t length, void *reply,
                      uint32_t *reply_length, int64_t timeout_ns, int32_t *reply_status)
    ctypedef struct fsim_sendq:
        pass
    ctypedef struct fsim_send_req:
        const void *data
        uint32_t length
        uint32_t reply_cap
        void *reply
        int64_t timeout_ns
        void *user
        int32_t status
        uint32_t reply_length
        int32_t reply_status
        uint64_t message_id
    int32_t fsim_sendq_create(fsim_sendq **out)
    void fsim_sendq_destroy(fsim_sendq *q)
    int32_t fsim_send_async(fsim_client *c, fsim_send_req *req, fsim_sendq *q)
    uint32_t fsim_sendq_wait(fsim_sendq *q, fsim_send_req **out, uint32_t cap, int64_t timeout_ns)
    uint32_t fsim_sendq_inflight(fsim_sendq *q)
    void fsim_send_abandon(fsim_send_req *req)
    void fsim_close_client(fsim_client *client)
    void fsim_client_retain(fsim_client *client)
    void fsim_client_release(fsim_client *client)
    void *fsim_client_cookie(const fsim_client *client)
    uint64_t fsim_client_id(const fsim_client *client)
    int fsim_client_connected(const fsim_client *client)
    uint32_t fsim_client_peer_pid(const fsim_client *client)
    uint32_t fsim_client_peer_uid(const fsim_client *client)
    uint32_t fsim_client_pending_gets(fsim_client *client)
    uint32_t fsim_client_queued(fsim_client *client)
    uint32_t fsim_client_awaiting_reply(fsim_client *client)

    ctypedef uint64_t SIM_HANDLE
    cdef struct fsim_io
    ctypedef void (*fsim_io_done)(fsim_io *io, int32_t hr, uint32_t bytes) noexcept
    cdef struct fsim_io:
        FP_MESSAGE_HEADER *buffer
        uint32_t size
        const void *key
        fsim_io_done done
        void *user
    ctypedef struct SIM_REPLY_ENTRY:
        const FP_REPLY_HEADER *buffer
        uint32_t size
        int32_t hr

    int32_t SimFilterConnectCommunicationPort(const char *port_name, uint32_t options,
                                              const void *context, uint32_t context_size,
                                              const void *security_attributes, SIM_HANDLE *port)
    int32_t SimFilterGetMessageAsync(SIM_HANDLE port, fsim_io *io)
    int32_t SimFilterCancelIo(SIM_HANDLE port, const void *key)
    int32_t SimFilterGetMessage(SIM_HANDLE port, FP_MESSAGE_HEADER *buffer, uint32_t size,
                                uint32_t timeout_ms, uint32_t *bytes_copied)
    int32_t SimFilterReplyMessage(SIM_HANDLE port, const FP_REPLY_HEADER *buffer, uint32_t size)
    int32_t SimFilterReplyMessages(SIM_HANDLE port, SIM_REPLY_ENTRY *entries, uint32_t count)
    int32_t SimFilterSendMessage(SIM_HANDLE port, const void *in_buffer, uint32_t in_size,
                                 void *out_buffer, uint32_t out_size, uint32_t *bytes_returned)
    ctypedef struct SIM_SEND_OP:
        pass
    int32_t SimFilterSendMessageStart(SIM_HANDLE port, const void *in_buffer, uint32_t in_size,
                                      uint32_t out_size, SIM_SEND_OP **op)
    int SimFilterSendMessageWait(SIM_SEND_OP *op, uint32_t timeout_ms, void *out_buffer,
                                 uint32_t out_size, uint32_t *bytes_returned, int32_t *hr)
    void SimFilterSendMessageEnd(SIM_SEND_OP *op)
    int32_t SimFilterGetTransport(SIM_HANDLE port, fsim_transport *transport)
    int32_t SimFilterClose(SIM_HANDLE port)
    const char *fsim_runtime_dir()
    const char *fsim_error_detail()
    int64_t fsim_debug_live_clients()
    int64_t fsim_debug_live_servers()
    int64_t fsim_debug_peer_waits()
