/* The pump's backend over a fanotify group (Linux): permission events read into the pump's slots,
 * verdicts written back as struct fanotify_response. See fanotify.c for the rules it keeps. */
#ifndef FP_BACKEND_FANOTIFY_H
#define FP_BACKEND_FANOTIFY_H
#include <stdint.h>
#include "backend.h"

/* The payload of one event in a slot (after the 16-byte header area): what `port.message`
 * describes. path: present when path_bytes > 0 (NUL-padded, truncated to fit). */
typedef struct fp_fan_message {
    uint64_t mask; /* FAN_* bits of the event */
    uint64_t id;   /* the backend's per-group event id (also the header's MessageId) */
    int32_t pid;   /* the process that caused it */
    int32_t fd;    /* the event's open fd, valid in this process until its reply is written */
} fp_fan_message;

#define FP_FAN_MESSAGE_FIXED ((uint32_t)sizeof(fp_fan_message)) /* 24 */

/* Reply payload: a uint32 verdict first. Any value without FP_FAN_DENY allows (fail open: a
 * zeroed reply allows); FP_FAN_AUDIT asks the kernel for an audit record (FAN_ENABLE_AUDIT). */
#define FP_FAN_ALLOW 0x01u
#define FP_FAN_DENY 0x02u
#define FP_FAN_AUDIT 0x10u

typedef struct fp_fan_stats {
    uint64_t read;       /* permission events read from the group */
    uint64_t delivered;  /* put into slots */
    uint64_t excluded;   /* answered FAN_ALLOW in C (own process, listed pids/uids) */
    uint64_t replied;    /* responses the kernel accepted */
    uint64_t stale;      /* replies for ids not (or no longer) held */
    uint64_t overflows;  /* FAN_Q_OVERFLOW events (the kernel dropped events) */
    uint64_t notify;     /* non-permission events (closed, not answered) */
    uint64_t overflowed; /* answered with overflow_verdict in C: the fd budget was spent */
    uint64_t audit_refused; /* verdicts the kernel refused with FAN_AUDIT (no FAN_ENABLE_AUDIT)
                               and accepted without it */
    uint32_t held;       /* event fds held now */
    uint32_t budget;     /* the fd budget in force */
} fp_fan_stats;

typedef struct fp_fan_config {
    int fd;                   /* the fanotify group (borrowed: close it after destroy) */
    uint32_t reply_size;      /* reply payload bytes the pump sends (its ReplyLength is 16 + it) */
    uint32_t path_bytes;      /* 0: no path; else bytes of the path field (/proc/self/fd lookup) */
    uint32_t fd_budget;       /* most event fds held at once; 0: from RLIMIT_NOFILE */
    uint32_t deny_errno;      /* 0, or the errno a DENY carries (FAN_DENY_ERRNO, pre-content) */
    uint32_t overflow_verdict; /* 0: with the fd budget spent, events wait in the kernel until a
                                  reply frees an fd; else FP_FAN_ALLOW or FP_FAN_DENY: they are
                                  read and answered so at once, in C (stats.overflowed) */
    int exclude_self;         /* events of this process are allowed in C */
    const int32_t *exclude_pids;
    uint32_t n_exclude_pids;
    const uint32_t *exclude_uids; /* real uid of the process (/proc/PID/status), checked in C */
    uint32_t n_exclude_uids;
    fp_fan_stats *stats;      /* NULL, or where the counters go (the caller's, kept across
                                 backends; written under the backend's lock, read racily) */
} fp_fan_config;

/* NULL on failure, *hr says why (HRESULT_FROM_WIN32-style 0x8007xxxx of the errno is not used:
 * FP_E_OUTOFMEMORY or FP_E_INVALIDARG). The lists are copied. */
fp_backend *fp_fan_backend_new(const fp_fan_config *cfg, fp_hresult *hr);
void fp_fan_backend_stats(fp_backend *b, fp_fan_stats *out);
/* The budget fp_fan_backend_new chooses when cfg->fd_budget is 0. */
uint32_t fp_fan_default_budget(void);

#endif
