/* The FltLib test double (see fltlib_double.h): a message-mode named pipe per port, the sender's
 * waiters in a table indexed by MessageId. */
#include "fltlib_double.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "common/fp_os.h"

#define STATUS_BUFFER_TOO_SMALL_ ((LONG)0xC0000023L)
#define PIPE_BUFFER (1u << 20)

/* ntdll: queues a completion packet with any status (PostQueuedCompletionStatus's own call,
 * which always passes STATUS_SUCCESS). */
LONG NTAPI NtSetIoCompletion(HANDLE port, ULONG_PTR key, ULONG_PTR apc_context, LONG status,
                             ULONG_PTR information);

enum { W_NONE = 0, W_WAITING, W_REPLIED, W_GONE };

typedef struct waiter {
    uint8_t state;
    uint32_t accept; /* reply payload bytes the sender takes */
    int32_t status;
    uint32_t len;
    uint8_t payload[FLTD_MAX_REPLY];
} waiter;

typedef struct held {
    struct held *next;
    uint32_t len;
    uint8_t bytes[]; /* header + body */
} held;

struct fltd_kernel {
    fltd_kernel *next; /* the registry (g_mu) */
    WCHAR name[128];
    WCHAR pipe[128];
    HANDLE server;
    HANDLE client; /* the user's handle, once connected */
    HANDLE iocp;
    fp_mutex mu;   /* everything below */
    bool disconnected;
    uint32_t get_size;
    uint64_t next_id;
    waiter *w; /* indexed by MessageId */
    size_t wcap;
    held *held_head, *held_tail;
    fltd_stats st;
};

static SRWLOCK g_mu = SRWLOCK_INIT;
static fltd_kernel *g_ports;
static LONG g_serial;

static fltd_kernel *by_handle(HANDLE h)
{
    AcquireSRWLockShared(&g_mu);
    fltd_kernel *k = g_ports;
    while (k && (!h || k->client != h))
        k = k->next;
    ReleaseSRWLockShared(&g_mu);
    return k;
}

fltd_kernel *fltd_create(const WCHAR *name)
{
    fltd_kernel *k = calloc(1, sizeof *k);
    if (!k || wcslen(name) >= sizeof k->name / sizeof *k->name) {
        free(k);
        return NULL;
    }
    wcscpy(k->name, name);
    char pipe[128];
    snprintf(pipe, sizeof pipe, "\\\\.\\pipe\\fastport-fltd-%lu-%ld",
             (unsigned long)GetCurrentProcessId(), (long)InterlockedIncrement(&g_serial));
    for (size_t i = 0; i <= strlen(pipe); i++)
        k->pipe[i] = (WCHAR)pipe[i];
    k->server = CreateNamedPipeW(k->pipe, PIPE_ACCESS_DUPLEX,
                                 PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE | PIPE_WAIT, 1,
                                 PIPE_BUFFER, PIPE_BUFFER, 0, NULL);
    if (k->server == INVALID_HANDLE_VALUE) {
        free(k);
        return NULL;
    }
    fp_mutex_init(&k->mu);
    AcquireSRWLockExclusive(&g_mu);
    k->next = g_ports;
    g_ports = k;
    ReleaseSRWLockExclusive(&g_mu);
    return k;
}

void fltd_destroy(fltd_kernel *k)
{
    if (!k)
        return;
    AcquireSRWLockExclusive(&g_mu);
    for (fltd_kernel **pp = &g_ports; *pp; pp = &(*pp)->next)
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    ReleaseSRWLockExclusive(&g_mu);
    CloseHandle(k->server);
    while (k->held_head) {
        held *h = k->held_head;
        k->held_head = h->next;
        free(h);
    }
    free(k->w);
    free(k);
}

void fltd_bind_completion(fltd_kernel *k, HANDLE iocp)
{
    fp_mutex_lock(&k->mu);
    k->iocp = iocp;
    fp_mutex_unlock(&k->mu);
}

/* ---------------------------------------------------------------- FltLib */

HRESULT WINAPI FilterConnectCommunicationPort(LPCWSTR lpPortName, DWORD dwOptions,
                                              LPCVOID lpContext, WORD wSizeOfContext,
                                              LPSECURITY_ATTRIBUTES lpSecurityAttributes,
                                              HANDLE *hPort)
{
    (void)lpSecurityAttributes;
    if (!hPort || !lpPortName || (!lpContext) != (wSizeOfContext == 0))
        return E_INVALIDARG;
    *hPort = INVALID_HANDLE_VALUE;
    AcquireSRWLockExclusive(&g_mu);
    fltd_kernel *k = g_ports;
    while (k && wcscmp(k->name, lpPortName) != 0)
        k = k->next;
    HRESULT hr = S_OK;
    if (!k) {
        hr = HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND);
    } else if (k->client) {
        hr = HRESULT_FROM_WIN32(ERROR_CONNECTION_COUNT_LIMIT);
    } else {
        DWORD flags = dwOptions & FLT_PORT_FLAG_SYNC_HANDLE ? 0 : FILE_FLAG_OVERLAPPED;
        HANDLE c = CreateFileW(k->pipe, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING,
                               flags, NULL);
        DWORD mode = PIPE_READMODE_MESSAGE;
        if (c == INVALID_HANDLE_VALUE) {
            hr = HRESULT_FROM_WIN32(GetLastError());
        } else if (!SetNamedPipeHandleState(c, &mode, NULL, NULL)) {
            hr = HRESULT_FROM_WIN32(GetLastError());
            CloseHandle(c);
        } else {
            ConnectNamedPipe(k->server, NULL); /* ERROR_PIPE_CONNECTED: the client came first */
            k->client = c;
            *hPort = c;
        }
    }
    ReleaseSRWLockExclusive(&g_mu);
    return hr;
}

HRESULT WINAPI FilterGetMessage(HANDLE hPort, PFILTER_MESSAGE_HEADER lpMessageBuffer,
                                DWORD dwMessageBufferSize, LPOVERLAPPED lpOverlapped)
{
    fltd_kernel *k = by_handle(hPort);
    if (!k)
        return HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    if (!lpOverlapped)
        return E_NOTIMPL;
    if (!lpMessageBuffer || dwMessageBufferSize < sizeof(FILTER_MESSAGE_HEADER))
        return E_INVALIDARG;
    fp_mutex_lock(&k->mu); /* a disconnect never misses a get posted meanwhile */
    if (k->disconnected) {
        fp_mutex_unlock(&k->mu);
        return HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    }
    k->get_size = dwMessageBufferSize;
    held *h = k->iocp ? k->held_head : NULL;
    if (h) { /* a message longer than the gets: this one completes with it, truncated */
        k->held_head = h->next;
        DWORD n = h->len < dwMessageBufferSize ? h->len : dwMessageBufferSize;
        LONG status = h->len > dwMessageBufferSize ? STATUS_BUFFER_TOO_SMALL_ : 0;
        memcpy(lpMessageBuffer, h->bytes, n);
        lpOverlapped->Internal = (ULONG_PTR)(ULONG)status;
        lpOverlapped->InternalHigh = n;
        LONG st = NtSetIoCompletion(k->iocp, 0, (ULONG_PTR)lpOverlapped, status, n);
        k->st.gets += st == 0;
        fp_mutex_unlock(&k->mu);
        free(h);
        return st == 0 ? HRESULT_FROM_WIN32(ERROR_IO_PENDING) : E_FAIL;
    }
    BOOL done = ReadFile(hPort, lpMessageBuffer, dwMessageBufferSize, NULL, lpOverlapped);
    DWORD err = done ? 0 : GetLastError();
    if (done || err == ERROR_IO_PENDING) /* completed at once or not: the packet comes later */
        k->st.gets++;
    fp_mutex_unlock(&k->mu);
    if (done || err == ERROR_IO_PENDING)
        return HRESULT_FROM_WIN32(ERROR_IO_PENDING);
    if (err == ERROR_BROKEN_PIPE || err == ERROR_PIPE_NOT_CONNECTED || err == ERROR_NO_DATA)
        err = ERROR_INVALID_HANDLE; /* the port is gone */
    return HRESULT_FROM_WIN32(err);
}

HRESULT WINAPI FilterReplyMessage(HANDLE hPort, PFILTER_REPLY_HEADER lpReplyBuffer,
                                  DWORD dwReplyBufferSize)
{
    fltd_kernel *k = by_handle(hPort);
    if (!k)
        return HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    if (!lpReplyBuffer || dwReplyBufferSize < sizeof(FILTER_REPLY_HEADER))
        return E_INVALIDARG;
    FILTER_REPLY_HEADER h;
    memcpy(&h, lpReplyBuffer, sizeof h);
    uint32_t len = dwReplyBufferSize - (uint32_t)sizeof h;
    HRESULT hr;
    fp_mutex_lock(&k->mu);
    waiter *w = h.MessageId && h.MessageId <= k->next_id ? &k->w[h.MessageId] : NULL;
    if (k->disconnected) {
        hr = HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    } else if (!w || w->state != W_WAITING) {
        hr = ERROR_FLT_NO_WAITER_FOR_REPLY;
    } else if (len > w->accept) { /* the sender gets STATUS_BUFFER_OVERFLOW, nothing copied */
        w->state = W_GONE;
        hr = HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER);
    } else {
        w->status = h.Status;
        w->len = len;
        memcpy(w->payload, (const uint8_t *)lpReplyBuffer + sizeof h, len);
        w->state = W_REPLIED;
        hr = S_OK;
    }
    if (hr == S_OK)
        k->st.replies++;
    else if (hr == ERROR_FLT_NO_WAITER_FOR_REPLY)
        k->st.no_waiter++;
    else
        k->st.other_failures++;
    fp_mutex_unlock(&k->mu);
    return hr;
}

/* ---------------------------------------------------------------- the kernel's side */

uint64_t fltd_send(fltd_kernel *k, const void *body, uint32_t len, uint32_t reply_payload)
{
    if (reply_payload > FLTD_MAX_REPLY)
        return 0;
    uint32_t total = (uint32_t)sizeof(FILTER_MESSAGE_HEADER) + len;
    held *m = malloc(sizeof *m + total);
    if (!m)
        return 0;
    m->next = NULL;
    m->len = total;
    fp_mutex_lock(&k->mu);
    if (k->disconnected || !k->client) {
        fp_mutex_unlock(&k->mu);
        free(m);
        return 0;
    }
    uint64_t id = ++k->next_id;
    if (id >= k->wcap) {
        size_t cap = k->wcap ? k->wcap * 2 : 1024;
        waiter *w = realloc(k->w, cap * sizeof *w);
        if (!w) {
            k->next_id--;
            fp_mutex_unlock(&k->mu);
            free(m);
            return 0;
        }
        memset(w + k->wcap, 0, (cap - k->wcap) * sizeof *w);
        k->w = w;
        k->wcap = cap;
    }
    k->w[id].state = reply_payload ? W_WAITING : W_NONE;
    k->w[id].accept = reply_payload;
    FILTER_MESSAGE_HEADER h;
    memset(&h, 0, sizeof h);
    h.ReplyLength = reply_payload ? (ULONG)sizeof(FILTER_REPLY_HEADER) + reply_payload : 0;
    h.MessageId = id;
    memcpy(m->bytes, &h, sizeof h);
    memcpy(m->bytes + sizeof h, body, len);
    k->st.sent++;
    if (k->get_size && total > k->get_size) { /* see the header: held for the next get */
        k->st.truncated++;
        if (k->held_tail && k->held_head)
            k->held_tail->next = m;
        else
            k->held_head = m;
        k->held_tail = m;
        fp_mutex_unlock(&k->mu);
        return id;
    }
    fp_mutex_unlock(&k->mu);
    DWORD written = 0;
    BOOL ok = WriteFile(k->server, m->bytes, total, &written, NULL);
    free(m);
    return ok && written == total ? id : 0;
}

bool fltd_reply_of(fltd_kernel *k, uint64_t id, int32_t *status, void *payload, uint32_t cap,
                   uint32_t *len)
{
    bool got = false;
    fp_mutex_lock(&k->mu);
    if (id && id <= k->next_id && k->w[id].state == W_REPLIED) {
        const waiter *w = &k->w[id];
        *status = w->status;
        *len = w->len;
        memcpy(payload, w->payload, w->len < cap ? w->len : cap);
        got = true;
    }
    fp_mutex_unlock(&k->mu);
    return got;
}

uint64_t fltd_replied(fltd_kernel *k)
{
    fp_mutex_lock(&k->mu);
    uint64_t n = k->st.replies;
    fp_mutex_unlock(&k->mu);
    return n;
}

void fltd_abandon(fltd_kernel *k, uint64_t id)
{
    fp_mutex_lock(&k->mu);
    if (id && id <= k->next_id && k->w[id].state == W_WAITING)
        k->w[id].state = W_GONE;
    fp_mutex_unlock(&k->mu);
}

void fltd_disconnect(fltd_kernel *k)
{
    fp_mutex_lock(&k->mu);
    if (!k->disconnected) {
        k->disconnected = true;
        for (uint64_t id = 1; id <= k->next_id; id++)
            if (k->w[id].state == W_WAITING)
                k->w[id].state = W_GONE; /* FltSendMessage: STATUS_PORT_DISCONNECTED */
        while (k->held_head) {
            held *h = k->held_head;
            k->held_head = h->next;
            free(h);
        }
        k->held_tail = NULL;
        if (k->client)
            CancelIoEx(k->client, NULL); /* the pending gets end (STATUS_CANCELLED) */
    }
    fp_mutex_unlock(&k->mu);
}

void fltd_stats_get(fltd_kernel *k, fltd_stats *out)
{
    fp_mutex_lock(&k->mu);
    *out = k->st;
    fp_mutex_unlock(&k->mu);
}
