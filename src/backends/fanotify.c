/* The pump's backend over a fanotify group (Linux).
 *
 * - post remembers a free slot (FIFO: gets are served oldest first).
 * - reap read()s at most as many events as there are posted slots and free fds in the budget
 *   (FAN_EVENT_METADATA_LEN each, so nothing read ever waits for a slot), copies each into the
 *   next posted slot: a header like FILTER_MESSAGE_HEADER {ReplyLength = 16 + reply size,
 *   MessageId = id}, then fp_fan_message (+ the path when asked). It polls the group and an
 *   eventfd that wake(), cancel() and a reply freeing the fd budget write to.
 * - Events of excluded processes are answered FAN_ALLOW here, before any slot or Python: the
 *   scanner's own opens (its handler reading the file it is asked about) never wait on itself.
 * - reply maps the id back to its event fd, writes one struct fanotify_response, THEN closes the
 *   fd (closing first would let the kernel forget the event and the write fail); every fd is
 *   closed exactly once (reply, or destroy for what nobody answered, allowed first).
 * - The fd budget keeps the process clear of EMFILE: at most `budget` event fds held at once.
 *   With it spent, events wait in the kernel, or (overflow_verdict set: the queue-full policy)
 *   are read and answered with that verdict at once, here, so the group never stalls.
 * - A response the kernel refuses for its FAN_AUDIT bit (a group without FAN_ENABLE_AUDIT) is
 *   written again without it: an event is never left waiting for want of a valid response.
 */
#ifdef __linux__
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fanotify.h"
#include "../common/fp_wire.h"

/* Newer than some distributions' uapi headers (Debian's lacks them) */
#ifndef FAN_ERRNO_SHIFT
#define FAN_ERRNO_BITS 8
#define FAN_ERRNO_SHIFT (32 - FAN_ERRNO_BITS)
#define FAN_ERRNO_MASK ((1 << FAN_ERRNO_BITS) - 1)
#define FAN_DENY_ERRNO(err) (FAN_DENY | ((((uint32_t)(err)) & FAN_ERRNO_MASK) << FAN_ERRNO_SHIFT))
#endif
#ifndef FAN_PRE_ACCESS
#define FAN_PRE_ACCESS 0x00100000
#endif
#define PERM_EVENTS (FAN_OPEN_PERM | FAN_ACCESS_PERM | FAN_OPEN_EXEC_PERM | FAN_PRE_ACCESS)
#define REAP_MAX 256u

typedef struct held {
    uint64_t id; /* 0: free */
    int fd;
} held;

typedef struct fan_backend {
    fp_backend base;
    fp_fan_config cfg;
    int wake_fd;
    pid_t self_pid;
    pthread_mutex_t mu;       /* posted FIFO, slot state, held table */
    uint32_t nslots;
    uint8_t **buf;            /* per slot: the posted buffer */
    uint32_t *size;
    uint8_t *posted;          /* per slot: a get is posted */
    uint8_t *cancelled;       /* per slot: cancel asked */
    uint32_t *fifo;           /* posted slots, oldest first (may hold cancelled-and-reaped ones) */
    uint32_t head, count;
    atomic_uint wakes;        /* wake() calls not yet consumed by a reap */
    atomic_uint cancel_req;   /* cancel() calls since the last reap looked */
    held *tab;                /* held event fds, by id & mask */
    uint32_t tab_mask;
    int budget_waiting;       /* reap stopped reading for want of budget: wake it on a reply */
    uint64_t next_id;
    fp_fan_stats own, *st;    /* st: cfg->stats, or own */
    uint8_t *rbuf;
} fan_backend;

static fan_backend *self(fp_backend *b)
{
    return (fan_backend *)b;
}

static void kick(fan_backend *f)
{
    uint64_t one = 1;
    /* EAGAIN: the counter is saturated, so the reaper wakes anyway */
    if (write(f->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        return;
}

static fp_hresult from_errno(int e)
{
    return (fp_hresult)(0x80070000u | ((uint32_t)e & 0xFFFFu));
}

/* The per-slot arrays attach sizes (a second attach replaces them). */
static void free_slots(fan_backend *f)
{
    free(f->buf);
    free(f->size);
    free(f->posted);
    free(f->cancelled);
    free(f->fifo);
    free(f->rbuf);
}

static fp_hresult fan_attach(fp_backend *b, uint32_t nslots)
{
    fan_backend *f = self(b);
    size_t n = nslots ? nslots : 1;
    free_slots(f);
    f->buf = calloc(n, sizeof *f->buf);
    f->size = calloc(n, sizeof *f->size);
    f->posted = calloc(n, 1);
    f->cancelled = calloc(n, 1);
    f->fifo = calloc(n, sizeof *f->fifo);
    f->rbuf = malloc((n < REAP_MAX ? n : REAP_MAX) * FAN_EVENT_METADATA_LEN);
    f->nslots = nslots;
    f->head = f->count = 0;
    return f->buf && f->size && f->posted && f->cancelled && f->fifo && f->rbuf ? FP_S_OK
                                                                              : FP_E_OUTOFMEMORY;
}

static fp_hresult fan_post(fp_backend *b, uint32_t slot, void *buffer, uint32_t size)
{
    fan_backend *f = self(b);
    if (slot >= f->nslots || size < FP_SLOT_HEADER)
        return FP_E_INVALIDARG;
    pthread_mutex_lock(&f->mu);
    f->buf[slot] = buffer;
    f->size[slot] = size;
    f->posted[slot] = 1;
    f->cancelled[slot] = 0;
    f->fifo[(f->head + f->count) % f->nslots] = slot;
    int first = f->count++ == 0;
    pthread_mutex_unlock(&f->mu);
    if (first)
        kick(f); /* a reaper polling without slots does not watch the group: let it look again */
    return FP_S_OK;
}

/* The oldest posted slot (mu held); UINT32_MAX when none. */
static uint32_t take_slot(fan_backend *f)
{
    while (f->count) {
        uint32_t s = f->fifo[f->head];
        f->head = (f->head + 1) % f->nslots;
        f->count--;
        if (f->posted[s]) {
            f->posted[s] = 0;
            f->cancelled[s] = 0; /* a message won the race with its cancel */
            return s;
        }
    }
    return UINT32_MAX;
}

/* One response for event fd `fd`; 0 or the errno of the write. */
static int respond(fan_backend *f, int fd, uint32_t response)
{
    struct fanotify_response r = {.fd = fd, .response = response};
    ssize_t w = write(f->cfg.fd, &r, sizeof r);
    return w == (ssize_t)sizeof r ? 0 : w < 0 ? errno : EIO;
}

static int uid_of(pid_t pid, uint32_t *uid)
{
    char p[64], line[256];
    snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
    FILE *fp = fopen(p, "re");
    int found = 0;
    if (!fp)
        return 0;
    while (!found && fgets(line, sizeof line, fp))
        found = sscanf(line, "Uid: %u", uid) == 1;
    fclose(fp);
    return found;
}

static int excluded(fan_backend *f, pid_t pid)
{
    if (f->cfg.exclude_self && pid == f->self_pid)
        return 1;
    for (uint32_t i = 0; i < f->cfg.n_exclude_pids; i++)
        if (f->cfg.exclude_pids[i] == pid)
            return 1;
    uint32_t uid;
    if (f->cfg.n_exclude_uids && uid_of(pid, &uid))
        for (uint32_t i = 0; i < f->cfg.n_exclude_uids; i++)
            if (f->cfg.exclude_uids[i] == uid)
                return 1;
    return 0;
}

/* Keep `fd` under a fresh id (mu held): ids skip any index still held by an older event. */
static uint64_t hold(fan_backend *f, int fd)
{
    for (;;) {
        uint64_t id = ++f->next_id;
        held *h = &f->tab[id & f->tab_mask];
        if (h->id == 0) {
            h->id = id;
            h->fd = fd;
            f->st->held++;
            return id;
        }
    }
}

static void fill_slot(fan_backend *f, uint32_t slot, const struct fanotify_event_metadata *m,
                      uint64_t id, fp_completion *c)
{
    uint8_t *dst = f->buf[slot];
    uint32_t cap = f->size[slot];
    uint32_t perm = (m->mask & PERM_EVENTS) != 0;
    FP_MESSAGE_HEADER h = {perm ? FP_SLOT_HEADER + f->cfg.reply_size : 0, 0, id};
    memcpy(dst, &h, sizeof h);
    fp_fan_message msg = {m->mask, id, m->pid, m->fd};
    uint32_t want = FP_SLOT_HEADER + FP_FAN_MESSAGE_FIXED + f->cfg.path_bytes;
    uint32_t room = cap - FP_SLOT_HEADER;
    memcpy(dst + FP_SLOT_HEADER, &msg, room < sizeof msg ? room : sizeof msg);
    if (f->cfg.path_bytes && room > FP_FAN_MESSAGE_FIXED) {
        /* resolved here, in the worker thread, without the GIL */
        char link[32];
        char *path = (char *)dst + FP_SLOT_HEADER + FP_FAN_MESSAGE_FIXED;
        uint32_t pcap = room - FP_FAN_MESSAGE_FIXED;
        if (pcap > f->cfg.path_bytes)
            pcap = f->cfg.path_bytes;
        snprintf(link, sizeof link, "/proc/self/fd/%d", m->fd);
        ssize_t k = readlink(link, path, pcap);
        if (k < 0)
            k = 0;
        memset(path + k, 0, pcap - (uint32_t)k);
    }
    c->slot = slot;
    c->id = id;
    c->reply_length = h.ReplyLength;
    c->length = want <= cap ? want : cap;
    c->hr = want <= cap ? FP_S_OK : FP_E_INSUFFICIENT_BUFFER;
}

/* Completes cancelled posted slots (mu held); returns how many went into out. */
static uint32_t reap_cancelled(fan_backend *f, fp_completion *out, uint32_t max)
{
    uint32_t k = 0;
    for (uint32_t s = 0; s < f->nslots && k < max; s++) {
        if (f->posted[s] && f->cancelled[s]) {
            f->posted[s] = 0;
            f->cancelled[s] = 0;
            out[k++] = (fp_completion){s, 0, FP_E_OPERATION_ABORTED, 0, 0};
        }
    }
    return k;
}

static uint32_t to_kernel(const fan_backend *f, uint32_t v)
{
    uint32_t out = FAN_ALLOW;
    if (v & FP_FAN_DENY)
        out = f->cfg.deny_errno ? (uint32_t)FAN_DENY_ERRNO(f->cfg.deny_errno) : FAN_DENY;
    return out | (v & FP_FAN_AUDIT ? FAN_AUDIT : 0);
}

/* One read() of at most `want` events into slots (overflow: answered with the overflow verdict
 * instead, no slot taken); returns completions written, or -errno. */
static int64_t read_events(fan_backend *f, fp_completion *out, uint32_t want, int overflow)
{
    ssize_t got = read(f->cfg.fd, f->rbuf, (size_t)want * FAN_EVENT_METADATA_LEN);
    if (got < 0)
        return -errno;
    uint32_t k = 0;
    int len = (int)got;
    const struct fanotify_event_metadata *m = (const void *)f->rbuf;
    pthread_mutex_lock(&f->mu);
    for (; FAN_EVENT_OK(m, len); m = FAN_EVENT_NEXT(m, len)) {
        if (m->fd == FAN_NOFD) {
            f->st->overflows += (m->mask & FAN_Q_OVERFLOW) != 0;
            continue;
        }
        if (!(m->mask & PERM_EVENTS)) {
            f->st->notify++;
            close(m->fd);
            continue;
        }
        f->st->read++;
        if (excluded(f, m->pid)) {
            respond(f, m->fd, FAN_ALLOW);
            close(m->fd);
            f->st->excluded++;
            continue;
        }
        if (overflow) {
            respond(f, m->fd, to_kernel(f, f->cfg.overflow_verdict));
            close(m->fd);
            f->st->overflowed++;
            continue;
        }
        uint32_t slot = take_slot(f);
        if (slot == UINT32_MAX) { /* cannot happen: reads are sized by the posted count */
            respond(f, m->fd, FAN_ALLOW);
            close(m->fd);
            continue;
        }
        uint64_t id = hold(f, m->fd);
        fill_slot(f, slot, m, id, &out[k++]);
        f->st->delivered++;
    }
    pthread_mutex_unlock(&f->mu);
    return k;
}

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static fp_hresult fan_reap(fp_backend *b, fp_completion *out, uint32_t max, uint32_t timeout_ms,
                           uint32_t *n)
{
    fan_backend *f = self(b);
    uint64_t end = timeout_ms == FP_INFINITE_MS ? 0 : now_ms() + timeout_ms;
    *n = 0;
    if (max > REAP_MAX)
        max = REAP_MAX;
    for (;;) {
        if (atomic_exchange(&f->cancel_req, 0)) {
            pthread_mutex_lock(&f->mu);
            uint32_t k = reap_cancelled(f, out, max);
            for (uint32_t s = 0; s < f->nslots; s++)
                if (f->posted[s] && f->cancelled[s])
                    atomic_store(&f->cancel_req, 1); /* more than max: the next reap goes on */
            pthread_mutex_unlock(&f->mu);
            if (k) {
                *n = k;
                return FP_S_OK;
            }
        }
        pthread_mutex_lock(&f->mu);
        uint32_t want = f->count < max ? f->count : max;
        uint32_t room = f->cfg.fd_budget > f->st->held ? f->cfg.fd_budget - f->st->held : 0;
        /* the budget spent: wait for a reply to free an fd, or answer what comes at once */
        int overflow = room == 0 && f->cfg.overflow_verdict != 0;
        if (want > room && !overflow)
            want = room;
        f->budget_waiting = room == 0;
        pthread_mutex_unlock(&f->mu);
        if (want) {
            int64_t k = read_events(f, out, want, overflow);
            if (k > 0) {
                *n = (uint32_t)k;
                return FP_S_OK;
            }
            if (k < 0 && k != -EAGAIN && k != -EINTR)
                return from_errno((int)-k);
            if (k == 0)
                continue; /* all answered here (excluded, overflow): read on */
        }
        unsigned w = atomic_load(&f->wakes);
        while (w && !atomic_compare_exchange_weak(&f->wakes, &w, w - 1))
            ;
        if (w)
            return FP_S_OK; /* woken: *n == 0 */
        struct pollfd p[2] = {{f->wake_fd, POLLIN, 0}, {want ? f->cfg.fd : -1, POLLIN, 0}};
        int wait = -1;
        if (end) {
            uint64_t t = now_ms();
            if (t >= end)
                return FP_E_TIMEOUT;
            wait = (int)(end - t);
        }
        int r = poll(p, 2, wait);
        if (r < 0 && errno != EINTR)
            return from_errno(errno);
        if (r > 0 && (p[0].revents & POLLIN)) {
            uint64_t v;
            if (read(f->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                return from_errno(errno);
        }
        if (r > 0 && (p[1].revents & (POLLERR | POLLNVAL)))
            return FP_E_INVALID_HANDLE; /* the group is gone */
    }
}

static void fan_wake(fp_backend *b)
{
    fan_backend *f = self(b);
    atomic_fetch_add(&f->wakes, 1);
    kick(f);
}

static fp_hresult fan_cancel(fp_backend *b, uint32_t slot)
{
    fan_backend *f = self(b);
    if (slot != FP_SLOT_ALL && slot >= f->nslots)
        return FP_E_INVALIDARG;
    pthread_mutex_lock(&f->mu);
    for (uint32_t s = slot == FP_SLOT_ALL ? 0 : slot; s < f->nslots; s++) {
        if (f->posted[s])
            f->cancelled[s] = 1;
        if (slot != FP_SLOT_ALL)
            break;
    }
    pthread_mutex_unlock(&f->mu);
    atomic_store(&f->cancel_req, 1);
    kick(f);
    return FP_S_OK;
}

static uint32_t verdict(const fan_backend *f, const fp_reply *r)
{
    uint32_t v = 0;
    if (r->size >= FP_REPLY_HEADER_AREA + sizeof v)
        memcpy(&v, r->buffer + FP_REPLY_HEADER_AREA, sizeof v);
    return to_kernel(f, v);
}

static fp_hresult fan_reply(fp_backend *b, fp_reply *r, uint32_t n)
{
    fan_backend *f = self(b);
    int kick_reaper = 0;
    for (uint32_t i = 0; i < n; i++) {
        int fd = -1;
        pthread_mutex_lock(&f->mu);
        held *h = &f->tab[r[i].id & f->tab_mask];
        if (r[i].id && h->id == r[i].id) {
            fd = h->fd;
            h->id = 0;
            f->st->held--;
            kick_reaper |= f->budget_waiting;
            f->budget_waiting = 0;
        } else {
            f->st->stale++;
        }
        pthread_mutex_unlock(&f->mu);
        if (fd < 0) {
            r[i].hr = FP_E_FLT_NO_WAITER_FOR_REPLY;
            continue;
        }
        /* the response first: once the fd is closed the kernel no longer knows the event */
        uint32_t v = verdict(f, &r[i]);
        int e = respond(f, fd, v), unaudited = 0;
        if (e == EINVAL && (v & FAN_AUDIT)) { /* no FAN_ENABLE_AUDIT: the verdict without it */
            e = respond(f, fd, v & ~(uint32_t)FAN_AUDIT);
            unaudited = 1;
        }
        close(fd);
        r[i].hr = e == 0 ? FP_S_OK : e == ENOENT ? FP_E_FLT_NO_WAITER_FOR_REPLY : from_errno(e);
        if (e == 0) {
            pthread_mutex_lock(&f->mu);
            f->st->replied++;
            f->st->audit_refused += unaudited;
            pthread_mutex_unlock(&f->mu);
        }
    }
    if (kick_reaper)
        kick(f);
    return FP_S_OK;
}

static void fan_destroy(fp_backend *b)
{
    fan_backend *f = self(b);
    /* nobody will answer these anymore: allow, then close, each exactly once */
    for (uint32_t i = 0; f->tab && i <= f->tab_mask; i++) {
        if (f->tab[i].id) {
            respond(f, f->tab[i].fd, FAN_ALLOW);
            close(f->tab[i].fd);
        }
    }
    if (f->st)
        f->st->held = 0;
    if (f->wake_fd >= 0)
        close(f->wake_fd);
    pthread_mutex_destroy(&f->mu);
    free_slots(f);
    free(f->tab);
    free((void *)f->cfg.exclude_pids);
    free((void *)f->cfg.exclude_uids);
    free(f);
}

static const fp_backend_ops fan_ops = {
    "fanotify", fan_attach, fan_post, fan_reap, fan_wake, fan_cancel, fan_reply, fan_destroy,
};

uint32_t fp_fan_default_budget(void)
{
    struct rlimit rl;
    uint64_t soft = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        soft = rl.rlim_cur;
    /* half the limit, leaving the rest (and at least 64) to the handler and the library */
    uint64_t b = soft / 2;
    if (soft > 64 && b > soft - 64)
        b = soft - 64;
    if (b > 65536)
        b = 65536;
    return b ? (uint32_t)b : 1;
}

void fp_fan_backend_stats(fp_backend *b, fp_fan_stats *out)
{
    fan_backend *f = self(b);
    pthread_mutex_lock(&f->mu);
    *out = *f->st;
    pthread_mutex_unlock(&f->mu);
}

fp_backend *fp_fan_backend_new(const fp_fan_config *cfg, fp_hresult *hr)
{
    *hr = FP_E_OUTOFMEMORY;
    if (cfg->fd < 0) {
        *hr = FP_E_INVALIDARG;
        return NULL;
    }
    fan_backend *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->base.ops = &fan_ops;
    f->base.flags = FP_BACKEND_LOCAL_REPLY;
    f->cfg = *cfg;
    f->cfg.exclude_pids = NULL;
    f->cfg.exclude_uids = NULL;
    f->st = cfg->stats ? cfg->stats : &f->own;
    f->wake_fd = -1;
    pthread_mutex_init(&f->mu, NULL);
    if (!f->cfg.fd_budget)
        f->cfg.fd_budget = fp_fan_default_budget();
    f->st->budget = f->cfg.fd_budget;
    f->st->held = 0;
    uint32_t t = 2;
    while (t < 2u * f->cfg.fd_budget)
        t <<= 1;
    f->tab = calloc(t, sizeof *f->tab);
    f->tab_mask = t - 1;
    if (cfg->n_exclude_pids) {
        int32_t *p = malloc(cfg->n_exclude_pids * sizeof *p);
        if (p)
            memcpy(p, cfg->exclude_pids, cfg->n_exclude_pids * sizeof *p);
        f->cfg.exclude_pids = p;
    }
    if (cfg->n_exclude_uids) {
        uint32_t *u = malloc(cfg->n_exclude_uids * sizeof *u);
        if (u)
            memcpy(u, cfg->exclude_uids, cfg->n_exclude_uids * sizeof *u);
        f->cfg.exclude_uids = u;
    }
    f->self_pid = getpid();
    f->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!f->tab || (cfg->n_exclude_pids && !f->cfg.exclude_pids) ||
        (cfg->n_exclude_uids && !f->cfg.exclude_uids) || f->wake_fd < 0) {
        if (f->wake_fd < 0 && f->tab)
            *hr = from_errno(errno);
        fan_destroy(&f->base);
        return NULL;
    }
    *hr = FP_S_OK;
    return &f->base;
}
#endif
