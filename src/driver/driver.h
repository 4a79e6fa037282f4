/* The load-generating test driver: the kernel side of a communication port driven hard.
 *
 * K sender threads call fsim_send (FltSendMessage) with bench or scanner messages
 * (src/protocols/bench.h), check every reply against the expected reply of its own message, and
 * record each answered message's latency into a per-thread fp_hist (no locks on the hot path).
 *
 * Target
 *   fp_driver_start:        every sender sends on one client port (retained by the driver).
 *   fp_driver_start_server: each sender picks a connected client of the server with
 *     fsim_server_clients (round-robin by sender index) when it needs one: at start and after its
 *     client disconnected. A sender stops when the server has no connected client. The driver
 *     holds a reference on the server, so fsim_close_server during a run is safe (the live
 *     connections go on being driven, as on Windows).
 *
 * Modes
 *   thread per message (inflight 0): each of the K senders blocks in fsim_send (FltSendMessage),
 *     as a kernel's threads do: K messages in flight at most, and a sleep and a wake-up of a
 *     driver thread per message.
 *   in flight (inflight N): the K threads keep N messages in flight between them with
 *     fsim_send_async (the same path for the client), each thread waiting on its own completion
 *     queue; far cheaper per message, so the driver does not take the CPU the client needs.
 *
 * Load
 *   closed loop (rate 0): each sender sends its next message when the previous one's reply came;
 *     latency = reply time - send time.
 *   open loop (rate > 0): each sender draws Poisson arrivals at rate/K messages/s; latency is
 *     measured from the INTENDED send time, so time a message spends waiting behind a slow one is
 *     counted (no coordinated omission); a sender that is behind sends at once.
 *
 * Windows
 *   warmup seconds first (messages sent then only count as warmup_messages), then the measured
 *   window, which ends after `seconds` (0 = no time limit), after `messages` measured sends in
 *   total (0 = no limit), on fp_driver_stop, or when every sender stopped (disconnects). At least
 *   one of seconds / messages must be set. A message belongs to the window its (intended) send
 *   time falls in. The window's length (result.seconds) runs from its start to the completion
 *   of the last measured send.
 *
 * Outcomes of a measured send (every one counts exactly once):
 *   sent = replies_ok + bad_replies + timeouts + disconnects + overflows + errors
 *   replies_ok   STATUS_SUCCESS and the reply equals the expected reply, with the right length
 *   bad_replies  STATUS_SUCCESS but a wrong reply or a wrong length (wrong_size of them: a
 *                length other than reply_size, i.e. shorter, since a longer reply is an
 *                overflow; wrong_size_length is the first such length seen)
 *   timeouts     STATUS_TIMEOUT (timeout_ns >= 0)
 *   disconnects  STATUS_PORT_DISCONNECTED: the sender stops (server mode: re-picks a client)
 *   overflows    STATUS_BUFFER_OVERFLOW: the reply was longer than the protocol's reply struct
 *   errors       any other status (first_error keeps the first one)
 * Latency is recorded for answered messages (replies_ok + bad_replies) only.
 *
 * Memory: per-sender message buffer, reply buffer, RNG and histogram are allocated at start; one
 * read-only random pool is shared; nothing is allocated per message. Message contents are cut
 * from the pool at a random word offset per message (bench: after a fresh 16-byte header; the
 * expected checksum comes from prefix sums of the pool in O(1)), so the driver's cost per
 * message is one copy of the payload, whatever its size.
 *
 * Threads: start/stop/wait/progress/result may be called from any thread; destroy once, after
 * wait returned FP_DRIVER_DONE. No Python here.
 */
#ifndef FP_DRIVER_H
#define FP_DRIVER_H

#include <stddef.h>
#include <stdint.h>
#include "../common/fp_status.h"
#include "../fltsim/fltsim.h"
#include "../protocols/bench.h"
#include "../common/histogram.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FP_DRIVER_MAX_SENDERS 4096u
#define FP_DRIVER_MAX_PAYLOAD FSIM_MAX_MESSAGE /* 1 MiB */
#define FP_DRIVER_MAX_INFLIGHT 65536u
#define FP_DRIVER_MAX_INFLIGHT_BYTES (1ull << 30) /* inflight * payload_max: message buffers */

typedef struct fp_driver fp_driver;

typedef struct fp_driver_config {
    uint32_t senders;     /* K >= 1 */
    int protocol;         /* FP_PROTO_BENCH or FP_PROTO_SCANNER (forces 1032-byte payloads) */
    uint32_t payload_min; /* bench: payload bytes uniform in [min, max]; 16 <= min <= max <= 1 MiB */
    uint32_t payload_max;
    double seconds;       /* measured window length; 0 = until `messages` */
    uint64_t messages;    /* measured sends in total; 0 = until `seconds` */
    double rate;          /* open loop: messages/s over all senders; 0 = closed loop */
    int64_t timeout_ns;   /* per send (delivery + reply); < 0 = none */
    uint64_t seed;
    double warmup;        /* seconds before the measured window */
    uint32_t inflight;    /* 0: thread per message (each of the K senders blocks in fsim_send);
                             N >= K: N messages in flight through fsim_send_async, shared by the
                             K sender threads */
} fp_driver_config;

/* Defaults: 1 sender, bench, 1024-byte payloads, 1 second, closed loop, no timeout, seed 1. */
void fp_driver_config_init(fp_driver_config *cfg);

typedef struct fp_driver_result {
    uint64_t sent;        /* measured sends (each outcome below counts once) */
    uint64_t replies_ok;
    uint64_t bad_replies;
    uint64_t timeouts;
    uint64_t disconnects;
    uint64_t overflows;
    uint64_t errors;
    uint64_t warmup_messages; /* sends before the window (not in the counts above) */
    uint64_t wrong_size;      /* of bad_replies: replies whose length was not reply_size */
    uint32_t wrong_size_length; /* the first such reply's length (when wrong_size > 0) */
    uint32_t reply_size;      /* reply payload bytes the protocol expects (and the buffer) */
    fp_ntstatus first_error;  /* first status counted in errors, 0 if none */
    uint32_t senders_running; /* senders not yet finished (0 in a final result) */
    int in_warmup;            /* 1 while the window has not started */
    int running;              /* 1 until every sender finished */
    double seconds;           /* measured window so far / in total */
    double throughput;        /* answered messages (replies_ok + bad_replies) per second */
    fp_hist_summary latency;  /* ns, answered messages */
} fp_driver_result;

/* FP_S_OK; FP_E_INVALIDARG (bad config, NULL client); FP_E_OUTOFMEMORY; or the HRESULT of a
 * failed thread creation (FP_E_OUTOFMEMORY). */
fp_hresult fp_driver_start(const fp_driver_config *cfg, fsim_client *client, fp_driver **out);
fp_hresult fp_driver_start_server(const fp_driver_config *cfg, fsim_server *server,
                                  fp_driver **out);

/* Ask the senders to stop (any thread, any number of times): no new sends start. A send already
 * waiting goes on until its reply, timeout or disconnect. */
void fp_driver_stop(fp_driver *d);

/* Stop, and also disconnect the target (fsim_close_client on the client, or on every client of
 * the server), so that senders blocked in a send without a timeout return. For Ctrl-C twice. */
void fp_driver_abort(fp_driver *d);

/* Wait up to timeout_ns (< 0: forever) for every sender to finish, then join them.
 * Returns FP_DRIVER_DONE or FP_DRIVER_RUNNING (timed out). */
enum { FP_DRIVER_DONE = 0, FP_DRIVER_RUNNING = 1 };
int fp_driver_wait(fp_driver *d, int64_t timeout_ns);

/* Live snapshot while running (or final once done): counts and percentiles so far. */
void fp_driver_progress(fp_driver *d, fp_driver_result *out);

/* Final result (the brief's fp_driver_result(); renamed because C gives a function and the
 * typedef fp_driver_result one namespace). Returns 0, or -1 (out untouched) if the senders have
 * not finished: call fp_driver_wait first. */
int fp_driver_get_result(fp_driver *d, fp_driver_result *out);

/* The merged latency histogram of the measured window (ns, answered messages); valid after
 * fp_driver_wait returned FP_DRIVER_DONE, until fp_driver_destroy. NULL before. */
const fp_hist *fp_driver_histogram(fp_driver *d);

/* The non-empty buckets of that histogram, for plotting: fills up to cap rows (lowest values
 * first) and returns how many non-empty buckets there are (may exceed cap); 0 before done. */
typedef struct fp_hist_row {
    uint64_t low, high; /* ns, inclusive */
    uint64_t count;
} fp_hist_row;
size_t fp_driver_histogram_rows(fp_driver *d, fp_hist_row *rows, size_t cap);

/* Stop, wait for the senders (forever), free everything, release the client / server. */
void fp_driver_destroy(fp_driver *d);

/* ---- message generation, exposed for the tests and for other load sources ---- */

/* splitmix64: the driver's PRNG (state advanced in place). */
static inline uint64_t fp_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#ifdef __cplusplus
}
#endif
#endif
