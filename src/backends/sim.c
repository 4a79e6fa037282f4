#include <stdlib.h>
#include "sim.h"

typedef struct sim_backend {
    fp_backend base;
    SIM_HANDLE port;
} sim_backend;

_Static_assert(sizeof(fp_recv) == sizeof(SIM_GET_ENTRY), "fp_recv mirrors SIM_GET_ENTRY");
_Static_assert(sizeof(fp_send) == sizeof(SIM_REPLY_ENTRY), "fp_send mirrors SIM_REPLY_ENTRY");

static fp_hresult sim_get_batch(fp_backend *b, void *ts, fp_recv *e, uint32_t n,
                                uint32_t timeout_ms, uint32_t *filled)
{
    (void)ts;
    return SimFilterGetMessages(((sim_backend *)b)->port, (SIM_GET_ENTRY *)(void *)e, n,
                                timeout_ms, filled);
}

static fp_hresult sim_reply_batch(fp_backend *b, fp_send *e, uint32_t n)
{
    return SimFilterReplyMessages(((sim_backend *)b)->port, (SIM_REPLY_ENTRY *)(void *)e, n);
}

static fp_hresult sim_cancel(fp_backend *b)
{
    return SimFilterCancel(((sim_backend *)b)->port);
}

static void sim_destroy(fp_backend *b)
{
    free(b);
}

static const fp_backend_ops sim_ops = {
    "sim", NULL, NULL, sim_get_batch, sim_reply_batch, sim_cancel, sim_destroy,
};

fp_backend *fp_sim_backend_new(SIM_HANDLE port)
{
    sim_backend *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->base.ops = &sim_ops;
    s->port = port;
    enum fsim_transport t;
    if (SimFilterGetTransport(port, &t) == FP_S_OK && t == FSIM_INPROC)
        s->base.flags = FP_BACKEND_LOCAL_REPLY;
    return &s->base;
}
