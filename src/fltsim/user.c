/* User side of the emulated Filter Manager (fltuser.h): argument checks, handle lookup, and the
 * in-process transport. The socket transport plugs in through the same handle ops. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"
#include "sock_proto.h" /* sk_thread_create */

/* ---- inproc handle ops: straight onto the kernel-side client ---- */

static fp_hresult ip_get_async(void *impl, fsim_io *ios, uint32_t n)
{
    return fsim_client_get_async(impl, ios, n);
}
static fp_hresult ip_cancel(void *impl, const void *key) { return fsim_client_cancel(impl, key); }

static fp_hresult ip_reply(void *impl, SIM_REPLY_ENTRY *e, uint32_t n)
{
    return fsim_client_reply(impl, e, n);
}

static fp_hresult ip_send(void *impl, const void *in, uint32_t in_size, void *out,
                          uint32_t out_size, uint32_t *returned)
{
    return fsim_client_user_send(impl, in, in_size, out, out_size, returned);
}

static void ip_close(fsim_hobj *o) { fsim_close_client(o->impl); }
static void ip_release(fsim_hobj *o) { fsim_client_release(o->impl); }

static const fsim_handle_ops inproc_ops = {
    .type = FSIM_H_PORT, .transport = FSIM_INPROC, .get_async = ip_get_async,
    .cancel = ip_cancel, .reply = ip_reply, .send = ip_send, .close = ip_close,
    .release = ip_release,
};

/* ---- the API ---- */

static fp_hresult connect_port(const char *name, const void *context, uint32_t context_size,
                          SIM_HANDLE *port);

fp_hresult SimFilterConnectCommunicationPort(const char *name, uint32_t options,
                                             const void *context, uint32_t context_size,
                                             const void *security_attributes, SIM_HANDLE *port)
{
    fsim_error_detail_clear();
    if (!port)
        return FP_E_INVALIDARG;
    *port = 0;
    if (!name || (options & ~FLT_PORT_FLAG_SYNC_HANDLE) || security_attributes)
        return FP_E_INVALIDARG;
    if (!fsim_name_valid(name))
        return strnlen(name, FSIM_MAX_NAME + 1) > FSIM_MAX_NAME ? FP_E_FILENAME_EXCED_RANGE
                                                               : FP_E_INVALIDARG;
    if ((context == NULL) != (context_size == 0) || context_size > FSIM_MAX_CONTEXT)
        return FP_E_INVALIDARG;

    fp_hresult hr = connect_port(name, context, context_size, port);
    if (FP_SUCCEEDED(hr) && options) {
        fsim_hobj *o = fsim_handle_ref(*port);
        o->options = options; /* nobody else has seen the handle yet */
        fsim_handle_unref(o);
    }
    return hr;
}

static fp_hresult connect_port(const char *name, const void *context, uint32_t context_size,
                          SIM_HANDLE *port)
{
    fsim_server *s = fsim_registry_find(name);
    if (s && s->transport == FSIM_INPROC) {
        fsim_client *c;
        fp_hresult hr = fsim_server_connect(s, context, context_size, (uint32_t)getpid(),
                                            (uint32_t)geteuid(), NULL, NULL, &c);
        fsim_server_release(s);
        if (!FP_SUCCEEDED(hr))
            return hr;
        SIM_HANDLE h = fsim_handle_new(&inproc_ops, c);
        if (!h) {
            fsim_close_client(c);
            fsim_client_release(c);
            return FP_E_OUTOFMEMORY;
        }
        *port = h;
        return FP_S_OK;
    }
    if (s)
        fsim_server_release(s);
    return fsim_sock_connect(name, context, context_size, port);
}

fp_hresult fsim_port_get_async(fsim_hobj *o, fsim_io *io)
{
    if (o->options & FLT_PORT_FLAG_SYNC_HANDLE)
        return FP_E_INVALIDARG; /* a synchronous handle takes no overlapped get */
    io->_next = io->_prev = NULL;
    io->_cancelled = 0;
    return o->ops->get_async(o->impl, io, 1);
}

fp_hresult SimFilterGetMessageAsync(SIM_HANDLE port, fsim_io *io)
{
    if (!io || !io->buffer || io->size < sizeof(FP_MESSAGE_HEADER) || !io->done)
        return FP_E_INVALIDARG;
    fsim_hobj *o = fsim_handle_ref_type(port, FSIM_H_PORT);
    if (!o)
        return FP_E_INVALID_HANDLE;
    fp_hresult hr = fsim_port_get_async(o, io);
    fsim_handle_unref(o);
    return hr;
}

fp_hresult SimFilterCancelIo(SIM_HANDLE port, const void *key)
{
    fsim_hobj *o = fsim_handle_ref_type(port, FSIM_H_PORT);
    if (!o)
        return FP_E_INVALID_HANDLE;
    fp_hresult hr = o->ops->cancel(o->impl, key);
    fsim_handle_unref(o);
    return hr;
}

/* ---- the waited get over an overlapped one ---- */

typedef struct waited {
    sem_t *sem; /* the waiting thread's: posted once, by the completion */
    fp_hresult hr;
    uint32_t bytes;
} waited;

static void waited_done(fsim_io *io, fp_hresult hr, uint32_t bytes)
{
    waited *w = io->user;
    w->hr = hr;
    w->bytes = bytes;
    sem_post(w->sem); /* the last touch: the waiter may return at once */
}

fp_hresult SimFilterGetMessage(SIM_HANDLE port, FP_MESSAGE_HEADER *buffer, uint32_t size,
                               uint32_t timeout_ms, uint32_t *bytes_copied)
{
    if (bytes_copied)
        *bytes_copied = 0;
    if (!buffer || size < sizeof(FP_MESSAGE_HEADER))
        return FP_E_INVALIDARG;
    fsim_hobj *o = fsim_handle_ref_type(port, FSIM_H_PORT);
    if (!o)
        return FP_E_INVALID_HANDLE;
    if (timeout_ms == 0 && o->ops->idle && o->ops->idle(o->impl)) { /* a poll, nothing queued */
        fsim_handle_unref(o);
        return FP_E_TIMEOUT;
    }
    uint64_t deadline = timeout_ms == FSIM_INFINITE ? 0 : fp_now_ns() + timeout_ms * FP_NS_PER_MS;
    waited w = {fsim_thread_sem(), FP_E_OPERATION_ABORTED, 0};
    fsim_io io = {.buffer = buffer, .size = size, .key = &w, .done = waited_done, .user = &w};
    fp_hresult hr = o->ops->get_async(o->impl, &io, 1);
    if (hr == FP_E_IO_PENDING) {
        int timed_out = fsim_sem_take(w.sem, deadline) != 0;
        if (timed_out) { /* withdraw it, then take its completion (a message may have won) */
            (void)o->ops->cancel(o->impl, &w);
            if (o->ops->settle)
                o->ops->settle(o->impl, w.sem);
            else
                fsim_sem_take(w.sem, 0);
        }
        hr = w.hr;
        if (timed_out && hr == FP_E_OPERATION_ABORTED)
            hr = FP_E_TIMEOUT;
        if (bytes_copied && (hr == FP_S_OK || hr == FP_E_INSUFFICIENT_BUFFER))
            *bytes_copied = w.bytes;
    }
    fsim_handle_unref(o);
    return hr;
}

fp_hresult SimFilterReplyMessages(SIM_HANDLE port, SIM_REPLY_ENTRY *entries, uint32_t count)
{
    if (!entries || count == 0)
        return FP_E_INVALIDARG;
    fsim_hobj *o = fsim_handle_ref_type(port, FSIM_H_PORT);
    if (!o)
        return FP_E_INVALID_HANDLE;
    fp_hresult hr = o->ops->reply(o->impl, entries, count);
    fsim_handle_unref(o);
    return hr;
}

fp_hresult SimFilterReplyMessage(SIM_HANDLE port, const FP_REPLY_HEADER *buffer, uint32_t size)
{
    if (!buffer || size < sizeof(FP_REPLY_HEADER))
        return FP_E_INVALIDARG;
    SIM_REPLY_ENTRY e = {buffer, size, FP_S_OK};
    fp_hresult hr = SimFilterReplyMessages(port, &e, 1);
    return FP_SUCCEEDED(hr) ? e.hr : hr;
}

fp_hresult SimFilterSendMessage(SIM_HANDLE port, const void *in_buffer, uint32_t in_size,
                                void *out_buffer, uint32_t out_size, uint32_t *bytes_returned)
{
    if (!bytes_returned)
        return FP_E_INVALIDARG;
    *bytes_returned = 0;
    if ((!in_buffer && in_size) || in_size > FSIM_MAX_MESSAGE)
        return FP_E_INVALIDARG;
    if (!out_buffer)
        out_size = 0; /* "ignored if lpOutBuffer is NULL" */
    if (out_size > FSIM_MAX_MESSAGE)
        return FP_E_INVALIDARG;
    fsim_hobj *o = fsim_handle_ref_type(port, FSIM_H_PORT);
    if (!o)
        return FP_E_INVALID_HANDLE;
    fp_hresult hr = o->ops->send(o->impl, in_buffer, in_size, out_buffer, out_size, bytes_returned);
    fsim_handle_unref(o);
    return hr;
}

/* ---- a send its caller may walk away from ---- */

struct SIM_SEND_OP {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    int done, refs;    /* refs: the caller's and the thread's */
    SIM_HANDLE port;
    fp_hresult hr;
    uint32_t in_size, out_size, returned;
    uint8_t *out;
    uint8_t in[];
};

static void op_unref(SIM_SEND_OP *op)
{
    pthread_mutex_lock(&op->mu);
    int last = --op->refs == 0;
    pthread_mutex_unlock(&op->mu);
    if (!last)
        return;
    pthread_mutex_destroy(&op->mu);
    pthread_cond_destroy(&op->cv);
    free(op->out);
    free(op);
}

static void *op_main(void *p)
{
    SIM_SEND_OP *op = p;
    uint32_t ret = 0;
    fp_hresult hr = SimFilterSendMessage(op->port, op->in_size ? op->in : NULL, op->in_size,
                                         op->out, op->out_size, &ret);
    pthread_mutex_lock(&op->mu);
    op->hr = hr;
    op->returned = ret;
    op->done = 1;
    pthread_cond_signal(&op->cv);
    pthread_mutex_unlock(&op->mu);
    op_unref(op);
    return NULL;
}

fp_hresult SimFilterSendMessageStart(SIM_HANDLE port, const void *in_buffer, uint32_t in_size,
                                     uint32_t out_size, SIM_SEND_OP **op_out)
{
    if (!op_out || (!in_buffer && in_size) || in_size > FSIM_MAX_MESSAGE ||
        out_size > FSIM_MAX_MESSAGE)
        return FP_E_INVALIDARG;
    *op_out = NULL;
    SIM_SEND_OP *op = calloc(1, sizeof *op + in_size);
    if (!op)
        return FP_E_OUTOFMEMORY;
    if (out_size && !(op->out = malloc(out_size))) {
        free(op);
        return FP_E_OUTOFMEMORY;
    }
    pthread_mutex_init(&op->mu, NULL);
    fsim_cond_init_mono(&op->cv);
    op->refs = 2;
    op->port = port;
    op->in_size = in_size;
    op->out_size = out_size;
    if (in_size)
        memcpy(op->in, in_buffer, in_size);
    pthread_t t;
    if (sk_thread_create(&t, op_main, op) != 0) {
        op->refs = 1;
        op_unref(op);
        return FP_E_OUTOFMEMORY;
    }
    pthread_detach(t);
    *op_out = op;
    return FP_S_OK;
}

int SimFilterSendMessageWait(SIM_SEND_OP *op, uint32_t timeout_ms, void *out_buffer,
                             uint32_t out_size, uint32_t *bytes_returned, fp_hresult *hr)
{
    struct timespec dl = fp_timespec_at(fp_now_ns() + (uint64_t)timeout_ms * FP_NS_PER_MS);
    pthread_mutex_lock(&op->mu);
    while (!op->done) {
        if (timeout_ms == FSIM_INFINITE)
            pthread_cond_wait(&op->cv, &op->mu);
        else if (pthread_cond_timedwait(&op->cv, &op->mu, &dl) == ETIMEDOUT)
            break;
    }
    int done = op->done;
    pthread_mutex_unlock(&op->mu);
    if (done) {
        uint32_t n = op->returned < out_size ? op->returned : out_size;
        if (n)
            memcpy(out_buffer, op->out, n);
        *bytes_returned = n;
        *hr = op->hr;
    }
    return done;
}

void SimFilterSendMessageEnd(SIM_SEND_OP *op)
{
    if (op)
        op_unref(op);
}

fp_hresult SimFilterGetTransport(SIM_HANDLE port, enum fsim_transport *transport)
{
    fsim_hobj *o = transport ? fsim_handle_ref_type(port, FSIM_H_PORT) : NULL;
    if (!o)
        return transport ? FP_E_INVALID_HANDLE : FP_E_INVALIDARG;
    *transport = o->ops->transport;
    fsim_handle_unref(o);
    return FP_S_OK;
}

fp_hresult SimFilterClose(SIM_HANDLE port)
{
    fsim_hobj *o = fsim_handle_ref_type(port, FSIM_H_PORT); /* another type's handle stays open */
    if (!o)
        return FP_E_INVALID_HANDLE;
    fsim_handle_unref(o);
    return fsim_handle_close(port) == 0 ? FP_S_OK : FP_E_INVALID_HANDLE;
}
