/* fp_port_sim (src/backends/port.h): the port's calls over the emulator's own API (SimFilter*),
 * whose get has a timeout of its own. POSIX builds only, like the emulator. */
#include "port.h"
#include "../fltsim/fltsim.h"

_Static_assert(FP_PORT_INFINITE == FSIM_INFINITE, "one 'no timeout'");
_Static_assert(FP_PORT_MAX_CONTEXT == FSIM_MAX_CONTEXT, "one context limit");
_Static_assert(FP_PORT_MAX_NAME == FSIM_MAX_NAME, "one name limit");
_Static_assert(FP_PORT_MAX_MESSAGE == FSIM_MAX_MESSAGE, "one message limit");
_Static_assert(FP_PORT_SYNC_HANDLE == FLT_PORT_FLAG_SYNC_HANDLE, "one sync flag");

static SIM_HANDLE H(void *port) { return (SIM_HANDLE)(uintptr_t)port; }

fp_hresult fp_port_sim_connect(const char *name, uint32_t options, const void *context,
                               uint32_t context_size, void **port)
{
    SIM_HANDLE h = 0;
    fp_hresult hr =
        SimFilterConnectCommunicationPort(name, options, context, context_size, NULL, &h);
    *port = (void *)(uintptr_t)h;
    return hr;
}

static fp_hresult sim_get(void *port, void *buffer, uint32_t size, uint32_t timeout_ms,
                          uint32_t *got)
{
    return SimFilterGetMessage(H(port), (FP_MESSAGE_HEADER *)buffer, size, timeout_ms, got);
}

static fp_hresult sim_reply(void *port, const void *buffer, uint32_t size)
{
    return SimFilterReplyMessage(H(port), (const FP_REPLY_HEADER *)buffer, size);
}

static fp_hresult sim_send(void *port, const void *in, uint32_t in_size, void *out,
                           uint32_t out_size, uint32_t *returned)
{
    return SimFilterSendMessage(H(port), in, in_size, out, out_size, returned);
}

static fp_hresult sim_cancel(void *port)
{
    return SimFilterCancelIo(H(port), NULL);
}

static int sim_local_replies(void *port)
{
    enum fsim_transport t;
    return SimFilterGetTransport(H(port), &t) == FP_S_OK && t == FSIM_INPROC;
}

static void sim_close(void *port)
{
    SimFilterClose(H(port));
}

static fp_hresult sim_send_start(void *port, const void *in, uint32_t in_size, uint32_t out_size,
                                 void **op)
{
    SIM_SEND_OP *o = NULL;
    fp_hresult hr = SimFilterSendMessageStart(H(port), in, in_size, out_size, &o);
    *op = o;
    return hr;
}

static int sim_send_wait(void *op, uint32_t timeout_ms, void *out, uint32_t out_size,
                         uint32_t *returned, fp_hresult *hr)
{
    return SimFilterSendMessageWait(op, timeout_ms, out, out_size, returned, hr);
}

static void sim_send_end(void *op)
{
    SimFilterSendMessageEnd(op);
}

/* In a forked child: the socket transport's close there drops only the child's descriptor;
 * inproc state is left to die with the child (its locks may be held by threads not copied). */
static void sim_forsake(void *port)
{
    enum fsim_transport t;
    if (SimFilterGetTransport(H(port), &t) == FP_S_OK && t == FSIM_SOCKET)
        SimFilterClose(H(port));
}

const fp_port_ops fp_port_sim = {
    "sim",        sim_get,       sim_reply,    sim_send,   sim_cancel, sim_local_replies,
    sim_close,    sim_send_start, sim_send_wait, sim_send_end, sim_forsake, SimSetInterruptHook,
};
