/* User side of the emulated Filter Manager (fltuser.h): argument checks, handle lookup, and the
 * in-process transport. The socket transport plugs in through the same handle ops. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

/* ---- inproc handle ops: straight onto the kernel-side client ---- */

static fp_hresult ip_get(void *impl, SIM_GET_ENTRY *e, uint32_t n, uint32_t t, uint32_t *filled)
{
    return fsim_client_get(impl, e, n, t, filled);
}

static fp_hresult ip_reply(void *impl, SIM_REPLY_ENTRY *e, uint32_t n)
{
    return fsim_client_reply(impl, e, n);
}

static fp_hresult ip_send(void *impl, const void *in, uint32_t in_size, void *out,
                          uint32_t out_size, uint32_t *returned)
{
    return fsim_client_user_send(impl, in, in_size, out, out_size, returned);
}

static fp_hresult ip_cancel(void *impl)
{
    fsim_client_cancel(impl);
    return FP_S_OK;
}

static void ip_close(void *impl) { fsim_close_client(impl); }
static void ip_release(void *impl) { fsim_client_release(impl); }

static const fsim_handle_ops inproc_ops = {ip_get, ip_reply, ip_send, ip_cancel, ip_close,
                                           ip_release, FSIM_INPROC};

/* ---- the API ---- */

fp_hresult SimFilterConnectCommunicationPort(const char *name, uint32_t options,
                                             const void *context, uint32_t context_size,
                                             const void *security_attributes, SIM_HANDLE *port)
{
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

static int entries_valid(const SIM_GET_ENTRY *e, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (!e[i].buffer || e[i].size < sizeof(FP_MESSAGE_HEADER))
            return 0;
    return 1;
}

fp_hresult SimFilterGetMessages(SIM_HANDLE port, SIM_GET_ENTRY *entries, uint32_t count,
                                uint32_t timeout_ms, uint32_t *filled)
{
    if (filled)
        *filled = 0;
    if (!filled || !entries || count == 0 || !entries_valid(entries, count))
        return FP_E_INVALIDARG;
    fsim_hobj *o = fsim_handle_ref(port);
    if (!o)
        return FP_E_INVALID_HANDLE;
    fp_hresult hr = o->ops->get(o->impl, entries, count, timeout_ms, filled);
    fsim_handle_unref(o);
    return hr;
}

fp_hresult SimFilterGetMessage(SIM_HANDLE port, FP_MESSAGE_HEADER *buffer, uint32_t size,
                               uint32_t timeout_ms, uint32_t *bytes_copied)
{
    SIM_GET_ENTRY e = {buffer, size, 0, FP_S_OK, 0};
    uint32_t filled = 0;
    if (bytes_copied)
        *bytes_copied = 0;
    fp_hresult hr = SimFilterGetMessages(port, &e, 1, timeout_ms, &filled);
    if (!FP_SUCCEEDED(hr))
        return hr;
    if (bytes_copied)
        *bytes_copied = e.length;
    return e.hr;
}

fp_hresult SimFilterReplyMessages(SIM_HANDLE port, SIM_REPLY_ENTRY *entries, uint32_t count)
{
    if (!entries || count == 0)
        return FP_E_INVALIDARG;
    fsim_hobj *o = fsim_handle_ref(port);
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
    fsim_hobj *o = fsim_handle_ref(port);
    if (!o)
        return FP_E_INVALID_HANDLE;
    fp_hresult hr = o->ops->send(o->impl, in_buffer, in_size, out_buffer, out_size, bytes_returned);
    fsim_handle_unref(o);
    return hr;
}

fp_hresult SimFilterCancel(SIM_HANDLE port)
{
    fsim_hobj *o = fsim_handle_ref(port);
    if (!o)
        return FP_E_INVALID_HANDLE;
    fp_hresult hr = o->ops->cancel(o->impl);
    fsim_handle_unref(o);
    return hr;
}

fp_hresult SimFilterGetTransport(SIM_HANDLE port, enum fsim_transport *transport)
{
    fsim_hobj *o = transport ? fsim_handle_ref(port) : NULL;
    if (!o)
        return transport ? FP_E_INVALID_HANDLE : FP_E_INVALIDARG;
    *transport = o->ops->transport;
    fsim_handle_unref(o);
    return FP_S_OK;
}

fp_hresult SimFilterClose(SIM_HANDLE port)
{
    return fsim_handle_close(port) == 0 ? FP_S_OK : FP_E_INVALID_HANDLE;
}
