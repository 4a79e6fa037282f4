/* Internals shared by the emulated Filter Manager's files: the kernel-side objects (core.c), the
 * user-side handle table (handles.c, user.c) and the socket transport (sock_*.c). */
#ifndef FLTSIM_INTERNAL_H
#define FLTSIM_INTERNAL_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include "fltsim.h"
#include "../common/fp_time.h"

/* One FltSendMessage in flight. Lives on the sender's stack (or in an fsim_send_req); every field after `id` is guarded by
 * the client's lock. */
typedef struct fsim_msg {
    struct fsim_msg *next;  /* pending queue, or reply-table chain */
    struct fsim_msg *prev;  /* pending queue only */
    uint64_t id;
    const void *data;
    uint32_t length;
    uint32_t reply_cap;     /* reply payload capacity; meaningful when wants_reply */
    void *reply;
    uint32_t reply_len;
    int32_t reply_status;
    int wants_reply;
    int state;              /* FSIM_MSG_* */
    fp_ntstatus result;
    sem_t *sem;             /* the sender's wake-up (fsim_thread_sem), posted once when DONE */
    struct fsim_areq *async; /* instead of sem: an fsim_send_async request (core.c) */
} fsim_msg;

enum { FSIM_MSG_QUEUED = 1, FSIM_MSG_DELIVERED, FSIM_MSG_DONE };

/* Completed gets whose done() runs once every emulator lock is released, in completion order
 * (linked through fsim_io._next). */
typedef struct fsim_done_list {
    fsim_io *head, *tail;
} fsim_done_list;
/* Records the outcome of io (unlinked from any list) and appends it. */
void fsim_done_add(fsim_done_list *l, fsim_io *io, fp_hresult hr, uint32_t bytes);
/* Calls done() of every io on the list; the list is empty afterwards. No lock may be held. */
void fsim_done_run(fsim_done_list *l);

/* A kernel-side transport (the socket one: sock_kernel.c): how its server ports listen, and how
 * core.c reaches a client in another process. core.c knows transports only through this table. */
typedef struct fsim_kernel_transport {
    /* fsim_create_port / fsim_close_server of a port on this transport. */
    fp_ntstatus (*listen)(fsim_server *s);
    void (*unlisten)(fsim_server *s);
    /* fsim_close_server in a process forked from the one that created the port: drop this
     * process's copies of the listener's descriptors and nothing else (no lock taken, no thread
     * woken or joined, the socket file left to the parent). */
    void (*forsake)(fsim_server *s);
    /* Called with the client's lock held, once per batch of messages newly delivered against the
     * peer's credits. Returns 0, or -1 if the peer is gone (the core then disconnects). */
    int (*deliver)(void *remote, fsim_msg *const *msgs, uint32_t n);
    /* The connection ended (either side): stop the transport's I/O. Called once, no lock held. */
    void (*disconnected)(void *remote);
    /* The client is being freed. */
    void (*release)(void *remote);
    /* Optional. Called with the client's lock held when a message had to be queued (no credits)
     * and the queue was empty before: lets the peer know there is something to get. */
    void (*queued)(void *remote);
} fsim_kernel_transport;
extern const fsim_kernel_transport fsim_sock_kernel_transport;

#define FSIM_REPLY_BUCKETS 256u

struct fsim_client {
    atomic_int refs;
    uint64_t id;
    fsim_server *server;
    void *cookie;                 /* from connect_notify */
    uint32_t peer_pid, peer_uid;
    pthread_mutex_t lock;
    int connected;                /* guarded by lock */
    fsim_msg *q_head, *q_tail;    /* queued, not delivered */
    fsim_io *io_head, *io_tail;   /* inproc gets waiting, oldest first */
    uint32_t io_pending;
    uint32_t credits;             /* remote gets waiting at the peer */
    uint32_t in_reply_table;
    fsim_msg *replies[FSIM_REPLY_BUCKETS]; /* delivered, waiting for a reply, by MessageId */
    const fsim_kernel_transport *kt; /* NULL: an in-process client */
    void *remote;
    struct fsim_client *srv_next, *srv_prev; /* server's client list (server lock) */
};

struct fsim_server {
    atomic_int refs;
    uint32_t fork_gen; /* fsim_fork_generation() of the process that created it */
    char name[FSIM_MAX_NAME + 1];
    enum fsim_transport transport;
    uint32_t max_connections;
    enum fsim_access access;
    uint32_t owner_uid;
    fsim_callbacks cb;
    atomic_uint_fast64_t next_message_id;
    pthread_mutex_t lock;
    int open;                     /* accepting connections; guarded by lock */
    uint32_t nclients;            /* connected + connecting; guarded by lock */
    fsim_client *clients;         /* guarded by lock */
    struct fsim_server *reg_next; /* registry list (registry lock) */
    const fsim_kernel_transport *kt; /* NULL: in-process only */
    void *listener;               /* the transport's listener */
    /* fsim_server_stats (the socket transport counts them) */
    atomic_uint_fast64_t peers_timed_out, connections_refused, sends_dropped, slow_peers_dropped;
};

/* core.c */
void fsim_server_retain(fsim_server *s);
void fsim_server_release(fsim_server *s);
/* Finds an open server of this process by name (any transport), retained. */
fsim_server *fsim_registry_find(const char *name);
/* Admits a connection: access rule, MaxConnections, ConnectNotify. Returns an HRESULT; on success
 * *out holds one reference for the caller (the user handle / the transport). */
fp_hresult fsim_server_connect(fsim_server *s, const void *ctx, uint32_t ctx_size, uint32_t pid,
                               uint32_t uid, const fsim_kernel_transport *kt, void *remote,
                               fsim_client **out);
/* Submits n gets (ios[0..n), oldest first), all or none: FP_E_IO_PENDING or a failure. */
fp_hresult fsim_client_get_async(fsim_client *c, fsim_io *ios, uint32_t n);
fp_hresult fsim_client_reply(fsim_client *c, SIM_REPLY_ENTRY *e, uint32_t n);
fp_hresult fsim_client_user_send(fsim_client *c, const void *in, uint32_t in_size, void *out,
                                 uint32_t out_size, uint32_t *returned);
fp_hresult fsim_client_cancel(fsim_client *c, const void *key); /* S_OK or FP_E_NOT_FOUND */
/* Remote credits: the peer has n more gets waiting (delivers queued messages at once). */
void fsim_client_grant(fsim_client *c, uint32_t n);
/* Copies a message (header + what fits) into a get's buffer; returns S_OK or
 * FP_E_INSUFFICIENT_BUFFER and sets *bytes (header included). */
fp_hresult fsim_copy_to(FP_MESSAGE_HEADER *buf, uint32_t size, uint32_t reply_length, uint64_t id,
                        const void *data, uint32_t length, uint32_t *bytes);
uint32_t fsim_message_reply_length(const fsim_msg *m);
fp_hresult fsim_hresult_from_ntstatus(fp_ntstatus st);
int fsim_name_valid(const char *name);

/* handles.c */
typedef struct fsim_handle_ops fsim_handle_ops;
/* What a handle names. Ports have the port ops below; the Win32 face's objects (win32.c) only
 * close and release. */
enum fsim_htype { FSIM_H_PORT = 1, FSIM_H_IOCP, FSIM_H_EVENT, FSIM_H_THREAD };
typedef struct fsim_hobj {
    atomic_int refs;
    const fsim_handle_ops *ops;
    void *impl;
    uint32_t options;          /* port: FLT_PORT_FLAG_SYNC_HANDLE */
    _Atomic(void *) iocp;      /* port: the completion port it joined (win32.c), retained */
    uintptr_t iocp_key;        /* written once, before iocp is published */
} fsim_hobj;
struct fsim_handle_ops {
    enum fsim_htype type;
    enum fsim_transport transport;
    /* ports only */
    fp_hresult (*get_async)(void *impl, fsim_io *ios, uint32_t n); /* all or none */
    fp_hresult (*cancel)(void *impl, const void *key);
    /* Optional: 1 when the transport knows nothing is queued at the kernel now, so a poll
     * (timeout 0) can time out without asking. */
    int (*idle)(void *impl);
    fp_hresult (*reply)(void *impl, SIM_REPLY_ENTRY *e, uint32_t n);
    fp_hresult (*send)(void *impl, const void *in, uint32_t in_size, void *out, uint32_t out_size,
                       uint32_t *returned);
    /* Optional: takes the completion (posted on sem) of a get just cancelled; NULL: waits for
     * it. */
    void (*settle)(void *impl, sem_t *sem);
    /* all */
    void (*close)(fsim_hobj *o); /* the handle was closed (a port disconnects) */
    void (*release)(fsim_hobj *o); /* last reference gone */
};
SIM_HANDLE fsim_handle_new(const fsim_handle_ops *ops, void *impl);
fsim_hobj *fsim_handle_ref(SIM_HANDLE h); /* NULL if not a live handle */
fsim_hobj *fsim_handle_ref_type(SIM_HANDLE h, enum fsim_htype type); /* NULL: not one of that type */
void fsim_handle_unref(fsim_hobj *o);
int fsim_handle_close(SIM_HANDLE h);      /* 0, or -1 if not a live handle */
/* How many fork()s this process descends through since the first handle (or call): a connection
 * that recorded another value was inherited from the parent, whose it remains. */
uint32_t fsim_fork_generation(void);

/* user.c: SimFilterGetMessageAsync on a port handle already referenced (checked arguments). */
fp_hresult fsim_port_get_async(fsim_hobj *o, fsim_io *io);

/* win32.c: drops a reference on a completion port (a port handle's binding). */
void fsim_iocp_put(void *iocp);
/* win32.c, for tests: threads blocked in the completion port `h` now (0 if not one). */
uint32_t fsim_iocp_waiting(SIM_HANDLE h);

/* sock_*.c */
/* Empties this thread's fsim_error_detail() (at the start of every call that may set it). */
void fsim_error_detail_clear(void);
/* Connects over the socket transport; FP_E_FILE_NOT_FOUND if no such socket port. */
fp_hresult fsim_sock_connect(const char *name, const void *ctx, uint32_t ctx_size, SIM_HANDLE *out);

/* A thread-local condition variable on CLOCK_MONOTONIC. */
pthread_cond_t *fsim_thread_cond(void);

/* A condition variable whose timed waits take CLOCK_MONOTONIC deadlines (fp_timespec_at). */
static inline void fsim_cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}
/* Takes one post of s, waiting until the CLOCK_MONOTONIC time deadline_ns (0 = none).
 * Returns 0, or ETIMEDOUT. */
int fsim_sem_take(sem_t *s, uint64_t deadline_ns);
/* A thread-local semaphore (count 0 between operations): what an inproc sender or get sleeps on
 * without holding the client lock, so a waker never hands it a lock it must fight for. */
sem_t *fsim_thread_sem(void);

#endif
