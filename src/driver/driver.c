/* The load-generating test driver (see driver.h). */
#include "driver.h"
#include "../common/fp_os.h"
#include "../common/fp_time.h"
#include "../fltsim/internal.h" /* fsim_server_retain / release */

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RLX memory_order_relaxed
#define POOL_SLACK_WORDS 16384u     /* 64 KiB of offsets to cut messages from */
#define MAX_SLEEP_NS 50000000ull    /* an open-loop sender looks at stop this often */
#define PICK_CAP 64u                /* clients looked at per pick (server mode) */

/* In-flight mode: one asynchronous send and what its reply must be. */
typedef struct slot {
    fsim_send_req req;
    uint8_t *msg;
    uint8_t reply[16];
    BENCH_REPLY exp_b;
    uint8_t exp_s;
    int measured;
    uint64_t start;
    fsim_client *client; /* the target (not retained: the request holds its own reference) */
} slot;

typedef struct sender {
    fp_driver *d;
    uint32_t index;
    uint32_t seq;
    uint64_t rng;
    uint64_t rr;          /* server mode: round-robin counter */
    fsim_client *client;  /* server mode: the client in use (retained) */
    uint8_t *msg;         /* payload buffer, allocated once (thread-per-message mode) */
    struct slot *slots;   /* in-flight mode: this thread's sends, allocated once */
    struct slot **free_slots;
    uint32_t nslots;
    fsim_sendq *q;        /* in-flight mode: where this thread's sends complete */
    fp_hist *hist;
    pthread_t thread;
    int created;
    uint64_t last_done_ns; /* completion of the last measured send; read after join */
    /* Written by the sender only (relaxed store of load + 1: no locked instruction), read by
     * progress snapshots. */
    _Atomic uint64_t sent, ok, bad, timeouts, disconnects, overflows, errors, warmup;
    _Atomic uint64_t wrong_size;      /* of bad: a reply of the wrong length */
    _Atomic uint32_t wrong_len_plus1; /* first such length + 1 (0: none yet) */
    _Atomic int32_t first_error;
} __attribute__((aligned(64))) sender;

struct fp_driver {
    fp_driver_config cfg;
    fsim_client *client; /* client mode: retained */
    fsim_server *server; /* server mode: retained */
    uint32_t reply_size;
    uint32_t msg_cap;

    /* The shared random pool, read-only once the senders run. bench: words (little-endian) and
     * their prefix sums s1[j] = sum_{k<j} w[k], s2[j] = sum_{k<j} k * w[k] (mod 2^32). scanner:
     * the same bytes with every "foul" broken. */
    uint8_t *pool;
    uint32_t pool_words;
    uint32_t *s1, *s2;

    uint64_t t0_ns;     /* senders start */
    uint64_t window_ns; /* measured window starts */
    uint64_t end_ns;    /* measured window ends (UINT64_MAX: no time limit) */
    double gap_mean_ns; /* open loop: mean gap per sender; 0 = closed loop */

    _Atomic int stop;
    _Atomic uint64_t tickets __attribute__((aligned(64)));

    pthread_mutex_t lock __attribute__((aligned(64)));
    pthread_cond_t cv;  /* CLOCK_MONOTONIC: gate opened, a sender finished */
    int gate_open;
    uint32_t running;   /* senders not finished; guarded by lock */
    uint64_t finish_ns; /* when the last sender finished; guarded by lock */

    pthread_mutex_t join_lock;
    _Atomic int joined; /* set once every thread is joined and `merged` is final */
    fp_hist *merged;
    fp_driver_result final;

    pthread_mutex_t snap_lock;
    fp_hist *snap;

    uint32_t nsenders;
    sender *senders;
};

static inline void bump(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, RLX) + 1, RLX);
}

void fp_driver_config_init(fp_driver_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->senders = 1;
    cfg->protocol = FP_PROTO_BENCH;
    cfg->payload_min = 1024;
    cfg->payload_max = 1024;
    cfg->seconds = 1.0;
    cfg->timeout_ns = -1;
    cfg->seed = 1;
}

static int config_valid(const fp_driver_config *c)
{
    if (!c || c->senders < 1 || c->senders > FP_DRIVER_MAX_SENDERS)
        return 0;
    if (c->protocol != FP_PROTO_BENCH && c->protocol != FP_PROTO_SCANNER)
        return 0;
    if (c->protocol == FP_PROTO_BENCH &&
        (c->payload_min < BENCH_HEADER_BYTES || c->payload_min > c->payload_max ||
         c->payload_max > FP_DRIVER_MAX_PAYLOAD))
        return 0;
    if (!isfinite(c->seconds) || c->seconds < 0 || c->seconds > 1e9)
        return 0;
    if (!isfinite(c->rate) || c->rate < 0)
        return 0;
    if (!isfinite(c->warmup) || c->warmup < 0 || c->warmup > 1e9)
        return 0;
    if (c->seconds == 0 && c->messages == 0)
        return 0;
    if (c->inflight && (c->inflight < c->senders || c->inflight > FP_DRIVER_MAX_INFLIGHT ||
                        (uint64_t)c->inflight * c->payload_max > FP_DRIVER_MAX_INFLIGHT_BYTES))
        return 0;
    return 1;
}

/* ---- the random pool ---- */

static int pool_build(fp_driver *d)
{
    uint32_t data_max = d->msg_cap; /* bench: payload_max - 16 is enough; keep it simple */
    d->pool_words = (data_max + 3u) / 4u + POOL_SLACK_WORDS;
    d->pool = malloc((size_t)d->pool_words * 4u + 4u); /* + 4: scanner's "foul" breaking reads p[i+3] */
    if (!d->pool)
        return -1;
    uint64_t st = d->cfg.seed ^ 0x5EEDB0011ull;
    for (uint32_t i = 0; i < d->pool_words; i++) {
        uint64_t r = fp_splitmix64(&st);
        memcpy(d->pool + 4u * (size_t)i, &r, 4); /* byte order is irrelevant: random bytes */
    }
    memset(d->pool + 4u * (size_t)d->pool_words, 0, 4);
    if (d->cfg.protocol == FP_PROTO_SCANNER) {
        /* No "foul" anywhere, so no window of the pool has one. 'g' is in no position of
         * "foul", so breaking one occurrence cannot make another. */
        size_t n = (size_t)d->pool_words * 4u;
        long at;
        size_t from = 0;
        while ((at = scanner_find_foul(d->pool + from, n - from)) >= 0) {
            d->pool[from + (size_t)at] = 'g';
            from += (size_t)at + 1;
        }
        return 0;
    }
    d->s1 = malloc(((size_t)d->pool_words + 1u) * sizeof(uint32_t));
    d->s2 = malloc(((size_t)d->pool_words + 1u) * sizeof(uint32_t));
    if (!d->s1 || !d->s2)
        return -1;
    uint32_t a = 0, b = 0;
    d->s1[0] = d->s2[0] = 0;
    for (uint32_t k = 0; k < d->pool_words; k++) {
        uint32_t w = bench_load_le32(d->pool + 4u * (size_t)k);
        a += w;
        b += k * w;
        d->s1[k + 1] = a;
        d->s2[k + 1] = b;
    }
    return 0;
}

/* ---- one message ---- */

/* Builds a bench message of a random length into buf; returns its length, *exp = the reply. */
static uint32_t make_bench(fp_driver *d, sender *s, uint8_t *buf, BENCH_REPLY *exp)
{
    uint64_t r = fp_splitmix64(&s->rng);
    uint64_t r2 = fp_splitmix64(&s->rng);
    uint32_t lo = d->cfg.payload_min, hi = d->cfg.payload_max;
    uint32_t L = lo == hi ? lo : lo + (uint32_t)(r % ((uint64_t)(hi - lo) + 1u));
    uint32_t n = L - BENCH_HEADER_BYTES, f = n / 4u, rem = n % 4u;
    uint32_t need = f + (rem ? 1u : 0u);
    uint32_t o = (uint32_t)((r2 >> 32) % ((uint64_t)(d->pool_words - need) + 1u));
    uint32_t marker = (uint32_t)r2;
    if (((r >> 40) & 15u) == 0)
        marker = (marker & ~0xFFu) | BENCH_MARKER_INFECTED;
    else if ((marker & 0xFFu) == BENCH_MARKER_INFECTED)
        marker ^= 1u;
    BENCH_MESSAGE h = {s->index, s->seq++, L, marker};
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    h.sender = __builtin_bswap32(h.sender);
    h.seq = __builtin_bswap32(h.seq);
    h.length = __builtin_bswap32(h.length);
    h.marker = __builtin_bswap32(h.marker);
#endif
    memcpy(buf, &h, sizeof h);
    if (n)
        memcpy(buf + BENCH_HEADER_BYTES, d->pool + 4u * (size_t)o, n);
    /* sum_{j<f} (j+5) w[o+j] = (s2[o+f]-s2[o]) + (5-o) (s1[o+f]-s1[o]), all mod 2^32 */
    uint32_t c = s->index + 2u * (s->seq - 1u) + 3u * L + 4u * marker;
    c += (d->s2[o + f] - d->s2[o]) + (5u - o) * (d->s1[o + f] - d->s1[o]);
    if (rem) {
        uint32_t w = bench_load_le32(d->pool + 4u * (size_t)(o + f));
        c += (f + 5u) * (w & ((1u << (8u * rem)) - 1u));
    }
    exp->checksum = c;
    exp->verdict = bench_verdict(marker);
    return L;
}

/* Builds a scanner message into buf; returns the expected SafeToOpen. */
static uint8_t make_scanner(fp_driver *d, sender *s, uint8_t *buf)
{
    SCANNER_NOTIFICATION *m = (SCANNER_NOTIFICATION *)(void *)buf;
    uint64_t r = fp_splitmix64(&s->rng);
    uint64_t r2 = fp_splitmix64(&s->rng);
    uint32_t bytes = 1u + (uint32_t)(r % SCANNER_READ_BUFFER_SIZE);
    size_t room = (size_t)d->pool_words * 4u - bytes;
    size_t off = (size_t)((r2 >> 32) % (room + 1u));
    m->BytesToScan = bytes;
    m->Reserved = 0;
    memcpy(m->Contents, d->pool + off, bytes);
    if (bytes < SCANNER_READ_BUFFER_SIZE)
        memset(m->Contents + bytes, 0, SCANNER_READ_BUFFER_SIZE - bytes);
    if (((r >> 40) & 15u) == 0 && bytes >= 4u) {
        uint32_t pos = (uint32_t)(r2 % (bytes - 3u));
        memcpy(m->Contents + pos, SCANNER_FOUL, 4);
        return 0;
    }
    return 1;
}

/* ---- the sender thread ---- */

static fsim_client *pick_client(fp_driver *d, sender *s)
{
    fsim_client *arr[PICK_CAP];
    size_t n = fsim_server_clients(d->server, arr, PICK_CAP);
    if (n > PICK_CAP)
        n = PICK_CAP;
    if (!n)
        return NULL;
    size_t k = (size_t)((s->index + s->rr++) % n);
    for (size_t i = 0; i < n; i++)
        if (i != k)
            fsim_client_release(arr[i]);
    return arr[k];
}

static void sleep_until(fp_driver *d, uint64_t t)
{
    for (;;) {
        uint64_t now = fp_now_ns();
        if (now >= t || atomic_load_explicit(&d->stop, RLX))
            return;
        uint64_t until = t - now > MAX_SLEEP_NS ? now + MAX_SLEEP_NS : t;
        struct timespec ts;
        ts = fp_timespec_at(until);
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    }
}

static uint64_t exp_gap(fp_driver *d, sender *s)
{
    /* u in (0, 1]: -ln(u) is exponential with mean 1 */
    double u = (double)((fp_splitmix64(&s->rng) >> 11) + 1u) * (1.0 / 9007199254740992.0);
    double g = -log(u) * d->gap_mean_ns;
    return g >= 1e18 ? (uint64_t)1e18 : (uint64_t)g;
}

static void sender_gate(fp_driver *d)
{
    pthread_mutex_lock(&d->lock);
    while (!d->gate_open)
        pthread_cond_wait(&d->cv, &d->lock);
    pthread_mutex_unlock(&d->lock);
}

static void sender_finished(fp_driver *d, sender *s)
{
    if (s->client) {
        fsim_client_release(s->client);
        s->client = NULL;
    }
    uint64_t fin = fp_now_ns();
    pthread_mutex_lock(&d->lock);
    if (fin > d->finish_ns)
        d->finish_ns = fin;
    if (--d->running == 0)
        pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->lock);
}

/* Counts one send's outcome (every send exactly once) and records an answer's latency. */
static void record(fp_driver *d, sender *s, int measured, fp_ntstatus st, uint32_t rlen,
                   const uint8_t *reply, int bench, const BENCH_REPLY *exp_b, uint8_t exp_s,
                   uint64_t start, uint64_t done)
{
    if (!measured) {
        bump(&s->warmup);
        return;
    }
    s->last_done_ns = done;
    bump(&s->sent);
    if (st == FP_STATUS_SUCCESS) {
        int good = rlen == d->reply_size &&
                   (bench ? memcmp(reply, exp_b, sizeof *exp_b) == 0
                          : (reply[0] != 0) == (exp_s != 0));
        bump(good ? &s->ok : &s->bad);
        if (rlen != d->reply_size) {
            bump(&s->wrong_size);
            uint32_t none = 0;
            atomic_compare_exchange_strong(&s->wrong_len_plus1, &none, rlen + 1);
        }
        fp_hist_record(s->hist, done > start ? done - start : 0);
    } else if (st == FP_STATUS_TIMEOUT) {
        bump(&s->timeouts);
    } else if (st == FP_STATUS_PORT_DISCONNECTED) {
        bump(&s->disconnects);
    } else if (st == FP_STATUS_BUFFER_OVERFLOW) {
        bump(&s->overflows);
    } else {
        bump(&s->errors);
        int32_t none = 0;
        atomic_compare_exchange_strong(&s->first_error, &none, st);
    }
}

static void *sender_main(void *arg)
{
    sender *s = arg;
    fp_driver *d = s->d;
    fp_thread_name("fp-send-", s->index);
    int bench = d->cfg.protocol == FP_PROTO_BENCH;
    int open_loop = d->gap_mean_ns > 0;
    uint8_t reply[16];

    sender_gate(d);

    uint64_t next = d->t0_ns;
    if (open_loop)
        next += exp_gap(d, s);
    fsim_client *client = d->client;
    for (;;) {
        if (atomic_load_explicit(&d->stop, RLX))
            break;
        uint64_t intended;
        if (open_loop) {
            if (next >= d->end_ns)
                break;
            sleep_until(d, next);
            if (atomic_load_explicit(&d->stop, RLX))
                break;
            intended = next;
            next += exp_gap(d, s);
        } else {
            intended = fp_now_ns();
            if (intended >= d->end_ns)
                break;
        }
        if (d->server) {
            if (!s->client && !(s->client = pick_client(d, s)))
                break; /* no client connected */
            client = s->client;
        }
        int measured = intended >= d->window_ns;
        if (measured && d->cfg.messages &&
            atomic_fetch_add_explicit(&d->tickets, 1, RLX) >= d->cfg.messages) {
            atomic_store(&d->stop, 1); /* wakes open-loop senders sleeping to far arrivals */
            break;
        }

        uint32_t len;
        BENCH_REPLY exp_b;
        uint8_t exp_s = 0;
        if (bench) {
            len = make_bench(d, s, s->msg, &exp_b);
        } else {
            exp_s = make_scanner(d, s, s->msg);
            len = (uint32_t)sizeof(SCANNER_NOTIFICATION);
        }
        uint32_t rlen = d->reply_size;
        uint64_t start = open_loop ? intended : fp_now_ns();
        fp_ntstatus st = fsim_send(client, s->msg, len, reply, &rlen, d->cfg.timeout_ns, NULL);
        uint64_t done = fp_now_ns();

        record(d, s, measured, st, rlen, reply, bench, &exp_b, exp_s, start, done);
        if (st == FP_STATUS_PORT_DISCONNECTED) {
            if (!d->server)
                break;
            fsim_client_release(s->client);
            s->client = NULL;
        }
    }
    sender_finished(d, s);
    return NULL;
}

/* In-flight mode: this thread keeps its nslots sends in flight through fsim_send_async (closed
 * loop: a slot is refilled as soon as its send is handed back; open loop: arrivals are sent at
 * their intended time when a slot is free, else as soon as one is, latency still counted from
 * the intended time). */
static void *async_main(void *arg)
{
    sender *s = arg;
    fp_driver *d = s->d;
    fp_thread_name("fp-send-", s->index);
    int bench = d->cfg.protocol == FP_PROTO_BENCH;
    int open_loop = d->gap_mean_ns > 0;
    fsim_send_req **out = (fsim_send_req **)(void *)s->free_slots + s->nslots;
    uint32_t nfree = s->nslots, inflight = 0;
    for (uint32_t i = 0; i < s->nslots; i++)
        s->free_slots[i] = &s->slots[s->nslots - 1u - i];

    sender_gate(d);
    uint64_t next = d->t0_ns;
    if (open_loop)
        next += exp_gap(d, s);
    int ending = 0;
    for (;;) {
        uint64_t now = fp_now_ns();
        while (!ending && nfree) {
            if (atomic_load_explicit(&d->stop, RLX)) {
                ending = 1;
                break;
            }
            uint64_t intended;
            if (open_loop) {
                if (next >= d->end_ns) {
                    ending = 1;
                    break;
                }
                if (now < next)
                    break; /* wait for the arrival (or a completion) */
                intended = next;
                next += exp_gap(d, s);
            } else {
                intended = now;
                if (intended >= d->end_ns) {
                    ending = 1;
                    break;
                }
            }
            fsim_client *client = d->client;
            if (d->server) {
                if (!s->client && !(s->client = pick_client(d, s))) {
                    ending = 1; /* no client connected */
                    break;
                }
                client = s->client;
            }
            int measured = intended >= d->window_ns;
            if (measured && d->cfg.messages &&
                atomic_fetch_add_explicit(&d->tickets, 1, RLX) >= d->cfg.messages) {
                atomic_store(&d->stop, 1);
                ending = 1;
                break;
            }
            slot *sl = s->free_slots[--nfree];
            uint32_t len;
            if (bench) {
                len = make_bench(d, s, sl->msg, &sl->exp_b);
            } else {
                sl->exp_s = make_scanner(d, s, sl->msg);
                len = (uint32_t)sizeof(SCANNER_NOTIFICATION);
            }
            sl->measured = measured;
            sl->client = client;
            sl->start = open_loop ? intended : now;
            sl->req.data = sl->msg;
            sl->req.length = len;
            sl->req.reply = sl->reply;
            sl->req.reply_cap = d->reply_size;
            sl->req.timeout_ns = d->cfg.timeout_ns;
            sl->req.user = sl;
            fsim_send_async(client, &sl->req, s->q); /* arguments valid: STATUS_SUCCESS */
            inflight++;
            now = fp_now_ns();
        }
        if (!inflight && (ending || atomic_load_explicit(&d->stop, RLX)))
            break;
        int64_t wait = (int64_t)MAX_SLEEP_NS;
        if (open_loop && !ending && nfree)
            wait = next > now ? (int64_t)(next - now < MAX_SLEEP_NS ? next - now : MAX_SLEEP_NS) : 0;
        uint32_t n = fsim_sendq_wait(s->q, out, s->nslots, wait);
        uint64_t done = fp_now_ns();
        for (uint32_t i = 0; i < n; i++) {
            slot *sl = out[i]->user;
            fp_ntstatus st = out[i]->status;
            record(d, s, sl->measured, st, out[i]->reply_length, sl->reply, bench, &sl->exp_b,
                   sl->exp_s, sl->start, done);
            if (st == FP_STATUS_PORT_DISCONNECTED) {
                if (!d->server) {
                    ending = 1;
                } else if (s->client == sl->client) {
                    fsim_client_release(s->client);
                    s->client = NULL;
                }
            }
            s->free_slots[nfree++] = sl;
            inflight--;
        }
    }
    sender_finished(d, s);
    return NULL;
}

/* ---- lifecycle ---- */

static void driver_free(fp_driver *d)
{
    if (!d)
        return;
    if (d->senders) {
        for (uint32_t i = 0; i < d->nsenders; i++) {
            sender *s = &d->senders[i];
            free(s->msg);
            fp_hist_free(s->hist);
            for (uint32_t k = 0; s->slots && k < s->nslots; k++)
                free(s->slots[k].msg);
            free(s->slots);
            free(s->free_slots);
            fsim_sendq_destroy(s->q);
        }
        free(d->senders);
    }
    free(d->pool);
    free(d->s1);
    free(d->s2);
    fp_hist_free(d->merged);
    fp_hist_free(d->snap);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->join_lock);
    pthread_mutex_destroy(&d->snap_lock);
    if (d->client)
        fsim_client_release(d->client);
    if (d->server)
        fsim_server_release(d->server);
    free(d);
}

static fp_hresult driver_start(const fp_driver_config *cfg, fsim_client *client,
                               fsim_server *server, fp_driver **out)
{
    if (!out)
        return FP_E_INVALIDARG;
    *out = NULL;
    if ((!client && !server) || !config_valid(cfg))
        return FP_E_INVALIDARG;
    fp_driver *d = calloc(1, sizeof *d);
    if (!d)
        return FP_E_OUTOFMEMORY;
    d->cfg = *cfg;
    if (cfg->protocol == FP_PROTO_SCANNER)
        d->cfg.payload_min = d->cfg.payload_max = (uint32_t)sizeof(SCANNER_NOTIFICATION);
    pthread_mutex_init(&d->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&d->join_lock, NULL);
    pthread_mutex_init(&d->snap_lock, NULL);
    if (client) {
        fsim_client_retain(client);
        d->client = client;
    }
    if (!client) {
        fsim_server_retain(server);
        d->server = server;
    }
    d->reply_size = fp_protocol_reply_size(d->cfg.protocol);
    d->msg_cap = d->cfg.payload_max;
    d->nsenders = cfg->senders;
    d->gap_mean_ns = cfg->rate > 0 ? 1e9 * (double)cfg->senders / cfg->rate : 0;

    fp_hresult hr = FP_E_OUTOFMEMORY;
    if (pool_build(d) != 0)
        goto fail;
    d->merged = fp_hist_new();
    d->snap = fp_hist_new();
    d->senders = aligned_alloc(64, sizeof(sender) * d->nsenders);
    if (!d->merged || !d->snap || !d->senders)
        goto fail;
    memset(d->senders, 0, sizeof(sender) * d->nsenders);
    for (uint32_t i = 0; i < d->nsenders; i++) {
        sender *s = &d->senders[i];
        s->d = d;
        s->index = i;
        /* Each sender's splitmix64 state starts at a HASH of (seed, index): states seed + i*k
         * would make the senders' streams shifted copies of one another (splitmix64 steps its
         * state by a constant). */
        uint64_t h = cfg->seed ^ ((uint64_t)i * 0xD1B54A32D192ED03ull);
        s->rng = fp_splitmix64(&h);
        size_t cap = ((size_t)d->msg_cap + 63u) & ~(size_t)63u;
        s->hist = fp_hist_new();
        if (!s->hist)
            goto fail;
        if (!cfg->inflight) {
            if (!(s->msg = aligned_alloc(64, cap)))
                goto fail;
            continue;
        }
        /* the first inflight % senders threads take one more */
        s->nslots = cfg->inflight / cfg->senders + (i < cfg->inflight % cfg->senders);
        s->slots = calloc(s->nslots, sizeof *s->slots);
        s->free_slots = calloc(2u * (size_t)s->nslots, sizeof(void *)); /* + the wait's out[] */
        if (!s->slots || !s->free_slots || fsim_sendq_create(&s->q) != FP_STATUS_SUCCESS)
            goto fail;
        for (uint32_t k = 0; k < s->nslots; k++)
            if (!(s->slots[k].msg = aligned_alloc(64, cap)))
                goto fail;
    }

    pthread_attr_t ta;
    pthread_attr_init(&ta);
    pthread_attr_setstacksize(&ta, 1u << 20);
    d->running = d->nsenders;
    uint32_t made = 0;
    for (; made < d->nsenders; made++) {
        if (pthread_create(&d->senders[made].thread, &ta, cfg->inflight ? async_main : sender_main,
                           &d->senders[made]) != 0)
            break;
        d->senders[made].created = 1;
    }
    pthread_attr_destroy(&ta);

    pthread_mutex_lock(&d->lock);
    if (made < d->nsenders) {
        atomic_store(&d->stop, 1);
        d->running -= d->nsenders - made;
    }
    d->t0_ns = fp_now_ns();
    d->window_ns = d->t0_ns + (uint64_t)(cfg->warmup * 1e9);
    d->end_ns = cfg->seconds > 0 ? d->window_ns + (uint64_t)(cfg->seconds * 1e9) : UINT64_MAX;
    d->finish_ns = d->t0_ns;
    d->gate_open = 1;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->lock);

    if (made < d->nsenders) {
        fp_driver_wait(d, -1);
        hr = FP_E_OUTOFMEMORY;
        goto fail;
    }
    *out = d;
    return FP_S_OK;
fail:
    driver_free(d);
    return hr;
}

fp_hresult fp_driver_start(const fp_driver_config *cfg, fsim_client *client, fp_driver **out)
{
    if (!client) {
        if (out)
            *out = NULL;
        return FP_E_INVALIDARG;
    }
    return driver_start(cfg, client, NULL, out);
}

fp_hresult fp_driver_start_server(const fp_driver_config *cfg, fsim_server *server,
                                  fp_driver **out)
{
    if (!server) {
        if (out)
            *out = NULL;
        return FP_E_INVALIDARG;
    }
    return driver_start(cfg, NULL, server, out);
}

void fp_driver_stop(fp_driver *d)
{
    if (d)
        atomic_store(&d->stop, 1);
}

void fp_driver_abort(fp_driver *d)
{
    if (!d)
        return;
    fp_driver_stop(d);
    if (atomic_load(&d->joined))
        return;
    if (d->client)
        fsim_close_client(d->client);
    else if (d->server)
        fsim_disconnect_all(d->server);
}

/* Sums the senders' counters into out (no latency). */
static void sum_counts(fp_driver *d, fp_driver_result *out)
{
    memset(out, 0, sizeof *out);
    out->reply_size = d->reply_size;
    int have_wrong_len = 0;
    for (uint32_t i = 0; i < d->nsenders; i++) {
        sender *s = &d->senders[i];
        out->sent += atomic_load_explicit(&s->sent, RLX);
        out->replies_ok += atomic_load_explicit(&s->ok, RLX);
        out->bad_replies += atomic_load_explicit(&s->bad, RLX);
        out->timeouts += atomic_load_explicit(&s->timeouts, RLX);
        out->disconnects += atomic_load_explicit(&s->disconnects, RLX);
        out->overflows += atomic_load_explicit(&s->overflows, RLX);
        out->errors += atomic_load_explicit(&s->errors, RLX);
        out->warmup_messages += atomic_load_explicit(&s->warmup, RLX);
        out->wrong_size += atomic_load_explicit(&s->wrong_size, RLX);
        uint32_t wl = atomic_load_explicit(&s->wrong_len_plus1, RLX);
        if (wl && !have_wrong_len) {
            out->wrong_size_length = wl - 1;
            have_wrong_len = 1;
        }
        int32_t fe = atomic_load_explicit(&s->first_error, RLX);
        if (fe && !out->first_error)
            out->first_error = fe;
    }
}

static void set_rate(fp_driver_result *r, uint64_t window_ns, uint64_t until_ns)
{
    r->in_warmup = until_ns < window_ns;
    r->seconds = until_ns > window_ns ? (double)(until_ns - window_ns) / 1e9 : 0.0;
    r->throughput = r->seconds > 0 ? (double)(r->replies_ok + r->bad_replies) / r->seconds : 0.0;
}

int fp_driver_wait(fp_driver *d, int64_t timeout_ns)
{
    if (atomic_load(&d->joined))
        return FP_DRIVER_DONE;
    struct timespec dl;
    if (timeout_ns >= 0)
        dl = fp_timespec_at(fp_now_ns() + (uint64_t)timeout_ns);
    pthread_mutex_lock(&d->lock);
    while (d->running > 0) {
        if (timeout_ns < 0)
            pthread_cond_wait(&d->cv, &d->lock);
        else if (pthread_cond_timedwait(&d->cv, &d->lock, &dl) == ETIMEDOUT && d->running > 0) {
            pthread_mutex_unlock(&d->lock);
            return FP_DRIVER_RUNNING;
        }
    }
    uint64_t fin = d->finish_ns;
    pthread_mutex_unlock(&d->lock);

    pthread_mutex_lock(&d->join_lock);
    if (!atomic_load(&d->joined)) {
        for (uint32_t i = 0; i < d->nsenders; i++)
            if (d->senders[i].created) {
                pthread_join(d->senders[i].thread, NULL);
                d->senders[i].created = 0;
            }
        fp_hist_reset(d->merged);
        for (uint32_t i = 0; i < d->nsenders; i++)
            fp_hist_merge(d->merged, d->senders[i].hist);
        /* The window ends with the last measured completion (not when the last sender noticed
         * the end: an open-loop sender may sleep towards an arrival that never comes). */
        uint64_t last = 0;
        for (uint32_t i = 0; i < d->nsenders; i++)
            if (d->senders[i].last_done_ns > last)
                last = d->senders[i].last_done_ns;
        fp_driver_result *r = &d->final;
        sum_counts(d, r);
        set_rate(r, d->window_ns, r->sent ? last : fin);
        r->in_warmup = 0;
        r->running = 0;
        r->senders_running = 0;
        fp_hist_summarize(d->merged, &r->latency);
        atomic_store(&d->joined, 1);
    }
    pthread_mutex_unlock(&d->join_lock);
    return FP_DRIVER_DONE;
}

void fp_driver_progress(fp_driver *d, fp_driver_result *out)
{
    if (atomic_load(&d->joined)) {
        *out = d->final;
        return;
    }
    pthread_mutex_lock(&d->lock);
    uint32_t running = d->running;
    uint64_t fin = d->finish_ns;
    pthread_mutex_unlock(&d->lock);
    sum_counts(d, out);
    set_rate(out, d->window_ns, running ? fp_now_ns() : fin);
    out->running = running > 0;
    out->senders_running = running;
    pthread_mutex_lock(&d->snap_lock);
    fp_hist_reset(d->snap);
    for (uint32_t i = 0; i < d->nsenders; i++)
        fp_hist_merge(d->snap, d->senders[i].hist);
    fp_hist_summarize(d->snap, &out->latency);
    pthread_mutex_unlock(&d->snap_lock);
}

int fp_driver_get_result(fp_driver *d, fp_driver_result *out)
{
    if (!atomic_load(&d->joined))
        return -1;
    *out = d->final;
    return 0;
}

const fp_hist *fp_driver_histogram(fp_driver *d)
{
    return atomic_load(&d->joined) ? d->merged : NULL;
}

size_t fp_driver_histogram_rows(fp_driver *d, fp_hist_row *rows, size_t cap)
{
    if (!atomic_load(&d->joined))
        return 0;
    size_t n = 0;
    for (uint32_t b = 0; b < FP_HIST_BUCKETS; b++) {
        uint64_t c = atomic_load_explicit(&d->merged->buckets[b], RLX);
        if (!c)
            continue;
        if (n < cap) {
            rows[n].low = fp_hist_bucket_low(b);
            rows[n].high = fp_hist_bucket_high(b);
            rows[n].count = c;
        }
        n++;
    }
    return n;
}

void fp_driver_destroy(fp_driver *d)
{
    if (!d)
        return;
    fp_driver_stop(d);
    fp_driver_wait(d, -1);
    driver_free(d);
}
