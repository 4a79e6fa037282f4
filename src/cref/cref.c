/* The C reference client (see cref.h): FltLib, overlapped gets, one completion port. Built
 * against the real <windows.h> / <fltuser.h> on Windows, the emulator's Win32 face elsewhere. */
#include <windows.h>
#ifdef FLTSIM_WIN32_WINDOWS_H /* the emulator: ask for its one extension (one call, n replies) */
#define FLTSIM_EXT_REPLY_MESSAGES 1
#endif
#include <fltuser.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "cref.h"
#include "protocols/bench.h"
#include "common/fp_os.h"

#define RLX memory_order_relaxed
#define STATUS_BUFFER_TOO_SMALL 0xC0000023u /* a truncated message: still delivered */
#define STATUS_CANCELLED 0xC0000120u

/* A record is the message buffer (header + max payload, 8-aligned: msg_bytes) followed by its
 * OVERLAPPED, as the scanner sample's SCANNER_MESSAGE embeds Ovlp after the message; the
 * payload size is only known at run time, so the OVERLAPPED sits in this tail. */
typedef struct record_tail {
    OVERLAPPED Ovlp;
} record_tail;

/* One reply to send: FltSimReplyMessages' entry on the emulator, the same fields on Windows. */
#ifdef FLTSIM_EXT_REPLY_MESSAGES
typedef FLTSIM_REPLY reply_entry;
#else
typedef struct reply_entry {
    PFILTER_REPLY_HEADER Buffer;
    DWORD Size;
    HRESULT Result;
} reply_entry;
#endif

typedef struct cref_thread {
    fp_cref *c;
    HANDLE thread;
    OVERLAPPED_ENTRY *entries; /* outstanding */
    reply_entry *replies;      /* outstanding */
    uint8_t *rbufs;            /* outstanding x reply_stride */
    uint8_t **reissue;         /* outstanding */
    _Atomic uint64_t received, replied, no_reply, late, truncated, errors, batches;
    _Atomic int32_t last_error;
    _Atomic int running;
} __attribute__((aligned(64))) cref_thread;

struct fp_cref {
    HANDLE port, iocp;
    uint32_t nthreads, outstanding;
    int protocol;
    uint32_t reply_size;
    size_t msg_bytes, rec_stride, reply_stride;
    uint8_t *records; /* nthreads x outstanding x rec_stride */
    _Atomic int stop, gone;
    _Atomic uint32_t inflight; /* gets issued and not yet dequeued */
    cref_thread *threads;
};

static inline void bump(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, RLX) + n, RLX);
}

static void count_error(cref_thread *t, HRESULT hr)
{
    bump(&t->errors, 1);
    atomic_store_explicit(&t->last_error, hr, RLX);
}

static OVERLAPPED *ovl_of(fp_cref *c, uint8_t *rec)
{
    return &((record_tail *)(void *)(rec + c->msg_bytes))->Ovlp;
}

static uint8_t *record_of(fp_cref *c, OVERLAPPED *ov)
{
    return (uint8_t *)CONTAINING_RECORD(ov, record_tail, Ovlp) - c->msg_bytes;
}

/* Writes the reply payload for one received message (payload = plen bytes after the header). */
static void answer(int protocol, const uint8_t *payload, uint32_t plen, uint8_t *out)
{
    if (protocol == FP_PROTO_BENCH) {
        BENCH_REPLY r = {0, 0};
        if (plen >= BENCH_HEADER_BYTES) {
            uint32_t len = bench_load_le32(payload + offsetof(BENCH_MESSAGE, length));
            if (len > plen)
                len = plen; /* truncated or malformed: what we have */
            r.checksum = bench_checksum(payload, len);
            r.verdict = bench_verdict(bench_load_le32(payload + offsetof(BENCH_MESSAGE, marker)));
        } else {
            r.checksum = bench_checksum(payload, plen);
        }
        memcpy(out, &r, sizeof r);
    } else {
        SCANNER_REPLY r = {1};
        size_t head = offsetof(SCANNER_NOTIFICATION, Contents);
        if (plen > head) {
            uint32_t n;
            memcpy(&n, payload, sizeof n); /* BytesToScan */
            if (n > SCANNER_READ_BUFFER_SIZE)
                n = SCANNER_READ_BUFFER_SIZE;
            if (n > plen - head)
                n = (uint32_t)(plen - head);
            r.SafeToOpen = scanner_find_foul(payload + head, n) < 0 ? 1u : 0u;
        }
        memcpy(out, &r, sizeof r);
    }
}

/* Issues the record's get. A stop that raced the issue cancels it: the stop's CancelIoEx may
 * have run before the get existed. */
static void issue(fp_cref *c, cref_thread *t, uint8_t *rec)
{
    OVERLAPPED *ov = ovl_of(c, rec);
    memset(ov, 0, sizeof *ov);
    atomic_fetch_add(&c->inflight, 1);
    HRESULT hr = FilterGetMessage(c->port, (PFILTER_MESSAGE_HEADER)(void *)rec,
                                  (DWORD)c->msg_bytes, ov);
    if (hr != HRESULT_FROM_WIN32(ERROR_IO_PENDING)) {
        atomic_fetch_sub(&c->inflight, 1);
        if (hr != HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE))
            count_error(t, hr);
        atomic_store(&c->gone, 1);
        return;
    }
    if (atomic_load(&c->stop))
        CancelIoEx(c->port, ov);
}

static DWORD WINAPI cref_main(LPVOID arg)
{
    cref_thread *t = arg;
    fp_cref *c = t->c;
    fp_thread_name("fp-cref-", (unsigned)(t - c->threads)); /* the bench counts its CPU by name */
    for (;;) {
        ULONG n = 0;
        if (!GetQueuedCompletionStatusEx(c->iocp, t->entries, c->outstanding, &n, INFINITE,
                                         FALSE)) {
            count_error(t, HRESULT_FROM_WIN32(GetLastError())); /* the port was closed */
            break;
        }
        uint32_t k = 0, nre = 0, got = 0, done = 0;
        for (ULONG i = 0; i < n; i++) {
            OVERLAPPED *ov = t->entries[i].lpOverlapped;
            if (!ov)
                continue; /* a wake */
            done++;
            uint8_t *rec = record_of(c, ov);
            uint32_t st = (uint32_t)t->entries[i].Internal;
            if (st == STATUS_CANCELLED) { /* ours (stop), or someone else's: go on */
                t->reissue[nre++] = rec;
                continue;
            }
            if (st != 0 && st != STATUS_BUFFER_TOO_SMALL) {
                atomic_store(&c->gone, 1); /* ERROR_INVALID_HANDLE: the port is gone */
                continue;
            }
            got++;
            if (st == STATUS_BUFFER_TOO_SMALL)
                bump(&t->truncated, 1);
            t->reissue[nre++] = rec;
            PFILTER_MESSAGE_HEADER mh = (PFILTER_MESSAGE_HEADER)(void *)rec;
            if (mh->ReplyLength == 0) {
                bump(&t->no_reply, 1);
                continue;
            }
            uint8_t *rb = t->rbufs + k * c->reply_stride;
            FILTER_REPLY_HEADER rh;
            memset(&rh, 0, sizeof rh);
            rh.MessageId = mh->MessageId;
            memcpy(rb, &rh, sizeof rh);
            DWORD bytes = t->entries[i].dwNumberOfBytesTransferred;
            uint32_t plen = bytes > sizeof *mh ? bytes - (uint32_t)sizeof *mh : 0;
            answer(c->protocol, rec + sizeof *mh, plen, rb + sizeof rh);
            t->replies[k].Buffer = (PFILTER_REPLY_HEADER)(void *)rb;
            t->replies[k].Size = (DWORD)(sizeof rh + c->reply_size); /* the padding rule */
            k++;
        }
        if (got) {
            bump(&t->batches, 1);
            bump(&t->received, got);
        }
        if (k) {
            uint32_t ok = 0, late = 0;
#ifdef FLTSIM_EXT_REPLY_MESSAGES
            HRESULT hr = FltSimReplyMessages(c->port, t->replies, k);
            if (FAILED(hr)) /* the handle is bad: nothing was sent */
                for (uint32_t i = 0; i < k; i++)
                    t->replies[i].Result = hr;
#else
            for (uint32_t i = 0; i < k; i++)
                t->replies[i].Result =
                    FilterReplyMessage(c->port, t->replies[i].Buffer, t->replies[i].Size);
#endif
            for (uint32_t i = 0; i < k; i++) {
                HRESULT r = t->replies[i].Result;
                if (r == S_OK)
                    ok++;
                else if (r == ERROR_FLT_NO_WAITER_FOR_REPLY)
                    late++;
                else if (r == HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE))
                    atomic_store(&c->gone, 1);
                else
                    count_error(t, r);
            }
            bump(&t->replied, ok);
            if (late)
                bump(&t->late, late);
        }
        /* Re-issue before counting these gets out, so inflight reaches 0 only when no get of
         * this thread is about to be issued. */
        for (uint32_t i = 0; i < nre; i++)
            if (!atomic_load(&c->stop) && !atomic_load(&c->gone))
                issue(c, t, t->reissue[i]);
        if (done)
            atomic_fetch_sub(&c->inflight, done);
        if ((atomic_load(&c->stop) || atomic_load(&c->gone)) && atomic_load(&c->inflight) == 0) {
            PostQueuedCompletionStatus(c->iocp, 0, 0, NULL); /* the next thread's wake */
            break;
        }
    }
    atomic_store(&t->running, 0);
    return 0;
}

static void cref_free(fp_cref *c)
{
    if (c->threads) {
        for (uint32_t i = 0; i < c->nthreads; i++) {
            cref_thread *t = &c->threads[i];
            if (t->thread)
                CloseHandle(t->thread);
            free(t->entries);
            free(t->replies);
            fp_aligned_free(t->rbufs);
            free(t->reissue);
        }
        fp_aligned_free(c->threads);
    }
    if (c->iocp)
        CloseHandle(c->iocp);
    fp_aligned_free(c->records);
    free(c);
}

fp_hresult fp_cref_start(void *port, uint32_t threads, uint32_t outstanding, int protocol,
                         uint32_t max_payload, fp_cref **out)
{
    if (!out)
        return E_INVALIDARG;
    *out = NULL;
    if (!port || threads < 1 || threads > FP_CREF_MAX_THREADS || outstanding < 1 ||
        outstanding > FP_CREF_MAX_OUTSTANDING || max_payload < 1 || max_payload > (1u << 20) ||
        (protocol != FP_PROTO_BENCH && protocol != FP_PROTO_SCANNER))
        return E_INVALIDARG;
    fp_cref *c = calloc(1, sizeof *c);
    if (!c)
        return E_OUTOFMEMORY;
    c->port = port;
    c->nthreads = threads;
    c->outstanding = outstanding;
    c->protocol = protocol;
    c->reply_size = fp_protocol_reply_size(protocol);
    c->msg_bytes = ((size_t)sizeof(FILTER_MESSAGE_HEADER) + max_payload + 7u) & ~(size_t)7u;
    c->rec_stride = (c->msg_bytes + sizeof(record_tail) + 63u) & ~(size_t)63u;
    c->reply_stride = ((size_t)sizeof(FILTER_REPLY_HEADER) + c->reply_size + 15u) & ~(size_t)15u;
    c->iocp = CreateIoCompletionPort(port, NULL, 0, threads);
    if (!c->iocp) {
        DWORD e = GetLastError();
        cref_free(c);
        return e == ERROR_INVALID_HANDLE ? HRESULT_FROM_WIN32(e)
               : e == ERROR_INVALID_PARAMETER ? E_INVALIDARG
                                              : E_OUTOFMEMORY;
    }
    size_t nrec = (size_t)threads * outstanding;
    c->records = fp_aligned_alloc(64, nrec * c->rec_stride);
    c->threads = fp_aligned_alloc(64, sizeof(cref_thread) * threads);
    if (!c->records || !c->threads) {
        cref_free(c);
        return E_OUTOFMEMORY;
    }
    memset(c->threads, 0, sizeof(cref_thread) * threads);
    for (uint32_t i = 0; i < threads; i++) {
        cref_thread *t = &c->threads[i];
        t->c = c;
        t->entries = calloc(outstanding, sizeof *t->entries);
        t->replies = calloc(outstanding, sizeof *t->replies);
        t->reissue = calloc(outstanding, sizeof *t->reissue);
        t->rbufs = fp_aligned_alloc(64, ((c->reply_stride * outstanding + 63u) & ~(size_t)63u));
        if (!t->entries || !t->replies || !t->reissue || !t->rbufs) {
            cref_free(c);
            return E_OUTOFMEMORY;
        }
    }
    for (uint32_t i = 0; i < threads; i++) { /* first: a failure here leaves no get pending */
        cref_thread *t = &c->threads[i];
        atomic_store(&t->running, 1);
        t->thread = CreateThread(NULL, 0, cref_main, t, 0, NULL);
        if (!t->thread) {
            atomic_store(&t->running, 0);
            fp_cref_destroy(c);
            return E_OUTOFMEMORY;
        }
    }
    for (size_t i = 0; i < nrec && !atomic_load(&c->gone); i++)
        issue(c, &c->threads[0], c->records + i * c->rec_stride);
    if (atomic_load(&c->gone)) /* the port failed at once: let the threads see it */
        PostQueuedCompletionStatus(c->iocp, 0, 0, NULL);
    *out = c;
    return S_OK;
}

void fp_cref_stop(fp_cref *c)
{
    if (!c)
        return;
    atomic_store(&c->stop, 1);
    CancelIoEx(c->port, NULL); /* ERROR_NOT_FOUND or a closed handle: nothing to cancel */
    for (uint32_t i = 0; i < c->nthreads; i++)
        PostQueuedCompletionStatus(c->iocp, 0, 0, NULL);
}

void fp_cref_join(fp_cref *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->nthreads; i++)
        if (c->threads[i].thread)
            WaitForSingleObject(c->threads[i].thread, INFINITE);
}

void fp_cref_stats_get(fp_cref *c, fp_cref_stats *out)
{
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < c->nthreads; i++) {
        cref_thread *t = &c->threads[i];
        out->received += atomic_load_explicit(&t->received, RLX);
        out->replied += atomic_load_explicit(&t->replied, RLX);
        out->no_reply += atomic_load_explicit(&t->no_reply, RLX);
        out->late += atomic_load_explicit(&t->late, RLX);
        out->truncated += atomic_load_explicit(&t->truncated, RLX);
        out->errors += atomic_load_explicit(&t->errors, RLX);
        out->batches += atomic_load_explicit(&t->batches, RLX);
        int32_t le = atomic_load_explicit(&t->last_error, RLX);
        if (le)
            out->last_error = le;
        out->threads_running += (uint32_t)atomic_load(&t->running);
    }
}

void fp_cref_destroy(fp_cref *c)
{
    if (!c)
        return;
    fp_cref_stop(c);
    fp_cref_join(c);
    cref_free(c);
}
