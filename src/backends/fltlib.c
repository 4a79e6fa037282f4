/* The pump's backend over FltLib: overlapped FilterGetMessage into the pump's slots, one I/O
 * completion port, GetQueuedCompletionStatusEx, CancelIoEx, FilterReplyMessage. Written against
 * <windows.h> and <fltuser.h> only: on Windows it is the real FltLib; elsewhere the emulated
 * Filter Manager's Win32 face (src/fltsim/win32/), so every pump test on Linux runs this code.
 *
 * - One OVERLAPPED per slot (attach); a completion's OVERLAPPED pointer gives its slot.
 * - The message's id and reply length come from the FILTER_MESSAGE_HEADER the get wrote at the
 *   start of the slot (also for a truncated message: the header always fits).
 * - A completion that is not a success is decoded with GetOverlappedResult (the system's mapping
 *   of the NTSTATUS to a Win32 error), then reported as HRESULT_FROM_WIN32 of it.
 * - wake() posts a packet with WAKE_KEY and no OVERLAPPED.
 * - The emulator offers one extension, FltSimReplyMessages (n replies in one call, one round trip
 *   on its socket transport); it is used when present. Real FltLib has no such call: replies go
 *   one FilterReplyMessage each. Building with FP_FLTLIB_PER_MESSAGE_REPLY forces that path.
 */
#include <windows.h>
#ifdef FLTSIM_WIN32_WINDOWS_H /* the emulator: ask for its one extension (see above) */
#define FLTSIM_EXT_REPLY_MESSAGES 1
#endif
#include <fltuser.h>

#include <stdlib.h>
#include <string.h>

#include "fltlib.h"

#if defined(FLTSIM_EXT_REPLY_MESSAGES) && !defined(FP_FLTLIB_PER_MESSAGE_REPLY)
#define USE_REPLY_BATCH 1
#endif

#define WAKE_KEY ((ULONG_PTR)0x57414B45u) /* "WAKE" */
#define PORT_KEY ((ULONG_PTR)0x504F5254u) /* "PORT": the key of the port's own packets */
#define REAP_CHUNK 64u

typedef struct fltlib_backend {
    fp_backend base;
    HANDLE port;
    HANDLE iocp;
    BOOL own_iocp;
    OVERLAPPED *ov;  /* one per slot */
    uint8_t **buf;   /* the buffer posted in each slot */
    uint32_t nslots;
} fltlib_backend;

static fltlib_backend *self(fp_backend *b)
{
    return (fltlib_backend *)b;
}

static fp_hresult fl_attach(fp_backend *b, uint32_t nslots)
{
    fltlib_backend *f = self(b);
    free(f->ov);
    free(f->buf);
    f->ov = calloc(nslots ? nslots : 1, sizeof *f->ov);
    f->buf = calloc(nslots ? nslots : 1, sizeof *f->buf);
    f->nslots = nslots;
    return f->ov && f->buf ? FP_S_OK : FP_E_OUTOFMEMORY;
}

static fp_hresult fl_post(fp_backend *b, uint32_t slot, void *buffer, uint32_t size)
{
    fltlib_backend *f = self(b);
    if (slot >= f->nslots)
        return FP_E_INVALIDARG;
    memset(&f->ov[slot], 0, sizeof f->ov[slot]);
    f->buf[slot] = buffer;
    HRESULT hr = FilterGetMessage(f->port, (PFILTER_MESSAGE_HEADER)buffer, size, &f->ov[slot]);
    /* S_OK: it completed at once, and its packet is queued all the same */
    if (hr == HRESULT_FROM_WIN32(ERROR_IO_PENDING) || SUCCEEDED(hr))
        return FP_S_OK;
    return (fp_hresult)hr;
}

static fp_hresult fl_reap(fp_backend *b, fp_completion *out, uint32_t max, uint32_t timeout_ms,
                          uint32_t *n)
{
    fltlib_backend *f = self(b);
    OVERLAPPED_ENTRY e[REAP_CHUNK];
    ULONG removed = 0;
    *n = 0;
    if (max > REAP_CHUNK)
        max = REAP_CHUNK;
    if (!GetQueuedCompletionStatusEx(f->iocp, e, max, &removed, timeout_ms, FALSE)) {
        DWORD err = GetLastError();
        return err == WAIT_TIMEOUT ? FP_E_TIMEOUT : (fp_hresult)HRESULT_FROM_WIN32(err);
    }
    uint32_t k = 0;
    for (ULONG i = 0; i < removed; i++) {
        if (e[i].lpCompletionKey == WAKE_KEY || !e[i].lpOverlapped)
            continue;
        uintptr_t at = (uintptr_t)e[i].lpOverlapped, base = (uintptr_t)f->ov;
        if (at < base || at >= base + (uintptr_t)f->nslots * sizeof *f->ov)
            continue; /* not one of ours (cannot happen: the port is bound to this port only) */
        uint32_t slot = (uint32_t)((at - base) / sizeof *f->ov);
        fp_completion *c = &out[k++];
        c->slot = slot;
        c->length = e[i].dwNumberOfBytesTransferred;
        c->hr = FP_S_OK;
        c->id = 0;
        c->reply_length = 0;
        if (e[i].Internal != 0) { /* not STATUS_SUCCESS: let the system say what it means */
            DWORD bytes = 0;
            if (!GetOverlappedResult(f->port, e[i].lpOverlapped, &bytes, FALSE))
                c->hr = (fp_hresult)HRESULT_FROM_WIN32(GetLastError());
        }
        if (c->hr == FP_S_OK || c->hr == FP_E_INSUFFICIENT_BUFFER) {
            FILTER_MESSAGE_HEADER h;
            memcpy(&h, f->buf[slot], sizeof h);
            c->id = h.MessageId;
            c->reply_length = h.ReplyLength;
            if (c->length < sizeof h)
                c->length = sizeof h;
        }
    }
    *n = k;
    return FP_S_OK; /* k == 0: woken */
}

static void fl_wake(fp_backend *b)
{
    PostQueuedCompletionStatus(self(b)->iocp, 0, WAKE_KEY, NULL);
}

static fp_hresult fl_cancel(fp_backend *b, uint32_t slot)
{
    fltlib_backend *f = self(b);
    if (slot != FP_SLOT_ALL && slot >= f->nslots)
        return FP_E_INVALIDARG;
    if (CancelIoEx(f->port, slot == FP_SLOT_ALL ? NULL : &f->ov[slot]))
        return FP_S_OK;
    DWORD err = GetLastError();
    return err == ERROR_NOT_FOUND ? FP_S_OK : (fp_hresult)HRESULT_FROM_WIN32(err);
}

static void put_header(fp_reply *r)
{
    FILTER_REPLY_HEADER h;
    memset(&h, 0, sizeof h);
    h.Status = r->status;
    h.MessageId = r->id;
    memcpy(r->buffer, &h, sizeof h);
}

static fp_hresult fl_reply(fp_backend *b, fp_reply *r, uint32_t n)
{
    fltlib_backend *f = self(b);
    uint32_t gone = 0;
#ifdef USE_REPLY_BATCH
    FLTSIM_REPLY e[REAP_CHUNK];
    for (uint32_t i = 0; i < n;) {
        uint32_t m = n - i < REAP_CHUNK ? n - i : REAP_CHUNK;
        for (uint32_t k = 0; k < m; k++) {
            put_header(&r[i + k]);
            e[k].Buffer = (PFILTER_REPLY_HEADER)(void *)r[i + k].buffer;
            e[k].Size = r[i + k].size;
            e[k].Result = S_OK;
        }
        HRESULT hr = FltSimReplyMessages(f->port, e, m);
        if (FAILED(hr))
            return (fp_hresult)hr;
        for (uint32_t k = 0; k < m; k++)
            r[i + k].hr = (fp_hresult)e[k].Result;
        i += m;
    }
#else
    for (uint32_t i = 0; i < n; i++) {
        put_header(&r[i]);
        r[i].hr = (fp_hresult)FilterReplyMessage(f->port, (PFILTER_REPLY_HEADER)(void *)r[i].buffer,
                                                 r[i].size);
        gone += r[i].hr == (fp_hresult)HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    }
#endif
    /* the port itself is gone: a call-level failure, as the interface says */
    return n && gone == n ? (fp_hresult)HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE) : FP_S_OK;
}

static void fl_destroy(fp_backend *b)
{
    fltlib_backend *f = self(b);
    if (f->own_iocp)
        CloseHandle(f->iocp);
    free(f->ov);
    free(f->buf);
    free(f);
}

static const fp_backend_ops fltlib_ops = {
    "fltlib", fl_attach, fl_post, fl_reap, fl_wake, fl_cancel, fl_reply, fl_destroy,
};

fp_hresult fp_fltlib_completion_port(void *port, void **iocp)
{
    *iocp = CreateIoCompletionPort((HANDLE)port, NULL, PORT_KEY, 0);
    return *iocp ? FP_S_OK : (fp_hresult)HRESULT_FROM_WIN32(GetLastError());
}

void fp_fltlib_close(void *handle)
{
    if (handle)
        CloseHandle((HANDLE)handle);
}

fp_backend *fp_fltlib_backend_new(void *port, void *iocp, uint32_t flags, fp_hresult *hr)
{
    *hr = FP_S_OK;
    fltlib_backend *f = calloc(1, sizeof *f);
    if (!f) {
        *hr = FP_E_OUTOFMEMORY;
        return NULL;
    }
    f->base.ops = &fltlib_ops;
    f->base.flags = flags;
    f->port = (HANDLE)port;
    f->iocp = (HANDLE)iocp;
    if (!f->iocp) {
        *hr = fp_fltlib_completion_port(port, (void **)&f->iocp);
        if (!FP_SUCCEEDED(*hr)) {
            free(f);
            return NULL;
        }
        f->own_iocp = TRUE;
    }
    return &f->base;
}
