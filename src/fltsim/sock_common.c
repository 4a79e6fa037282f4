/* Shared by both sides of the socket transport: records and frames, socket buffers, the runtime
 * directory and the mapping of port names to socket files. See sock_proto.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sock_proto.h"

#define SK_IOV_MAX 256 /* iovecs per record (UIO_MAXIOV is 1024) */

uint32_t sk_tune_socket(int fd)
{
    /* Ask for 4 MiB; the kernel silently caps it at net.core.[wr]mem_max. */
    int want = 4 << 20;
    const char *e = getenv("FASTPORT_SOCK_BUFSIZE");
    if (e && *e) {
        long v = strtol(e, NULL, 0);
        if (v >= 4096 && v <= INT_MAX / 2)
            want = (int)v;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
    int got = 0;
    socklen_t len = sizeof got;
    uint32_t rec = SK_REC_MAX;
    /* getsockopt reports the kernel's doubled value; a record must be below it (minus overhead).
     * Half of it keeps at least two records in flight. */
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &len) == 0 && got > 0 &&
        (uint32_t)got / 2 < rec)
        rec = (uint32_t)got / 2;
    if (rec < 2048)
        rec = 2048;
    return rec;
}

int sk_send_records(int fd, const struct iovec *iov, int iovcnt, size_t total, uint32_t rec_max,
                    int flags, size_t *done)
{
    int i = 0;
    size_t off = *done;
    while (i < iovcnt && off >= iov[i].iov_len) {
        off -= iov[i].iov_len;
        i++;
    }
    while (*done < total) {
        struct iovec part[SK_IOV_MAX];
        int np = 0;
        size_t n = 0;
        int j = i;
        size_t o = off;
        while (j < iovcnt && np < SK_IOV_MAX && n < rec_max) {
            size_t avail = iov[j].iov_len - o;
            if (avail == 0) {
                j++;
                o = 0;
                continue;
            }
            size_t take = avail < rec_max - n ? avail : rec_max - n;
            part[np].iov_base = (char *)iov[j].iov_base + o;
            part[np].iov_len = take;
            np++;
            n += take;
            o += take;
            if (o == iov[j].iov_len) {
                j++;
                o = 0;
            }
        }
        if (n == 0) { /* iov holds fewer than total bytes */
            errno = EINVAL;
            return -1;
        }
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = part;
        mh.msg_iovlen = (size_t)np;
        ssize_t r;
        do
            r = sendmsg(fd, &mh, flags | MSG_NOSIGNAL);
        while (r < 0 && errno == EINTR);
        if (r < 0)
            return -1;
        if ((size_t)r != n) { /* SEQPACKET sends a record whole or not at all */
            errno = EPROTO;
            return -1;
        }
        *done += n;
        i = j;
        off = o;
    }
    return 0;
}

static ssize_t recv_retry(int fd, void *buf, size_t len)
{
    ssize_t r;
    do
        r = recv(fd, buf, len, MSG_TRUNC); /* returns the record's real length */
    while (r < 0 && errno == EINTR);
    return r;
}

int sk_wait_fd(int fd, short events, uint64_t end_ns, int (*stop)(void), uint32_t slice_ms)
{
    for (;;) {
        uint64_t now = fp_now_ns();
        if (now >= end_ns)
            break;
        uint64_t ms = (end_ns - now + FP_NS_PER_MS - 1) / FP_NS_PER_MS;
        if (stop && ms > slice_ms)
            ms = slice_ms;
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, ms > INT_MAX ? INT_MAX : (int)ms);
        if (r > 0 || (r < 0 && errno != EINTR))
            return 1; /* (an error: let the I/O call report it) */
        if (r == 0 && stop && stop())
            return -1;
    }
    errno = ETIMEDOUT;
    return 0;
}

int sk_read_frame(sk_reader *r, sk_hdr **out)
{
    if (!r->buf) {
        r->buf = malloc(SK_REC_MAX);
        if (!r->buf)
            return -1;
        r->cap = SK_REC_MAX;
    }
    ssize_t n = recv_retry(r->fd, r->buf, SK_REC_MAX);
    if (n <= 0)
        return (int)n;
    uint32_t len = sk_frame_start(r->buf, (size_t)n);
    if (len == 0)
        goto bad;
    if (len > r->cap) {
        uint8_t *nb = realloc(r->buf, len);
        if (!nb)
            return -1;
        r->buf = nb;
        r->cap = len;
    }
    uint64_t end = r->rest_timeout_ms ? fp_now_ns() + r->rest_timeout_ms * FP_NS_PER_MS : 0;
    size_t got = (size_t)n;
    while (got < len) {
        if (end && !sk_wait_fd(r->fd, POLLIN, end, NULL, 0))
            return -1;
        n = recv_retry(r->fd, r->buf + got, len - got);
        if (n < 0)
            return -1;
        if (n == 0 || (size_t)n > len - got) /* EOF inside a frame, or a record too long */
            goto bad;
        got += (size_t)n;
    }
    *out = (sk_hdr *)(void *)r->buf;
    return 1;
bad:
    errno = EPROTO;
    return -1;
}

void sk_reader_free(sk_reader *r)
{
    free(r->buf);
    r->buf = NULL;
    r->cap = 0;
}

/* ---- names and places ---- */

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

int sk_port_path(const char *dir, const char *name, struct sockaddr_un *addr)
{
    static const char hex[] = "0123456789ABCDEF";
    char esc[3 * FSIM_MAX_NAME + 1];
    size_t k = 0;
    for (size_t i = 0; name[i] && k + 3 < sizeof esc; i++) {
        unsigned char ch = (unsigned char)name[i];
        int plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || (ch == '.' && i > 0);
        if (plain) {
            esc[k++] = (char)ch;
        } else { /* a leading '.' too: "." and ".." must not name the directories */
            esc[k++] = '%';
            esc[k++] = hex[ch >> 4];
            esc[k++] = hex[ch & 15];
        }
    }
    esc[k] = 0;
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    size_t cap = sizeof addr->sun_path;
    int n = snprintf(addr->sun_path, cap, "%s/%s", dir, esc);
    if (n > 0 && (size_t)n < cap)
        return 0;
    n = snprintf(addr->sun_path, cap, "%s/h-%016llx", dir, (unsigned long long)fnv1a64(name));
    if (n > 0 && (size_t)n < cap)
        return 0;
    addr->sun_path[0] = 0;
    return -1;
}

void sk_default_dir(uint32_t uid, char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/fastport-%u", uid);
}

int sk_own_dirs(char dirs[2][SK_DIR_MAX])
{
    const char *e = getenv("FASTPORT_RUNTIME_DIR");
    if (e && *e) {
        snprintf(dirs[0], SK_DIR_MAX, "%s", e);
        return strlen(e) < SK_DIR_MAX ? 1 : -1;
    }
    int n = 0;
    const char *x = getenv("XDG_RUNTIME_DIR");
    if (x && x[0] == '/') { /* the spec: an absolute path, else ignored */
        int w = snprintf(dirs[0], SK_DIR_MAX, "%s/fastport", x);
        if (w > 0 && w < SK_DIR_MAX)
            n++;
    }
    sk_default_dir((uint32_t)geteuid(), dirs[n], SK_DIR_MAX);
    return n + 1;
}

static __thread char tl_dir[PATH_MAX];
static __thread char tl_detail[PATH_MAX + 200];

const char *fsim_runtime_dir(void)
{
    const char *e = getenv("FASTPORT_RUNTIME_DIR");
    char dirs[2][SK_DIR_MAX];
    if (e && *e)
        snprintf(tl_dir, sizeof tl_dir, "%s", e);
    else if (sk_own_dirs(dirs) > 0)
        snprintf(tl_dir, sizeof tl_dir, "%s", dirs[0]);
    return tl_dir;
}

const char *fsim_error_detail(void) { return tl_detail; }
void fsim_error_detail_clear(void) { tl_detail[0] = 0; }

void sk_set_detail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_detail, sizeof tl_detail, fmt, ap);
    va_end(ap);
}

fp_ntstatus sk_check_dir(const char *dir, int64_t uid, int nofollow, uint32_t *owner)
{
    /* O_PATH: no read permission needed (a 0711 directory of another user) */
    int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0));
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (e == ENOENT)
            return FP_STATUS_OBJECT_NAME_NOT_FOUND;
        if (e == ELOOP || e == ENOTDIR) /* O_NOFOLLOW on a symlink gives ELOOP */
            sk_set_detail("refusing the runtime directory %s: it is not a directory (a symlink "
                          "or a file)", dir);
        else
            sk_set_detail("refusing the runtime directory %s: %s", dir, strerror(e));
        return FP_STATUS_ACCESS_DENIED;
    }
    close(fd);
    if (uid >= 0 && st.st_uid != (uid_t)uid) {
        sk_set_detail("refusing the runtime directory %s: it is owned by uid %u, not by uid %lld "
                      "(someone else may have created it to plant a fake port)",
                      dir, (unsigned)st.st_uid, (long long)uid);
        return FP_STATUS_ACCESS_DENIED;
    }
    if (st.st_mode & 022) {
        sk_set_detail("refusing the runtime directory %s: its mode %04o lets others write to it "
                      "(it must not be group or world writable; 0711 or 0700)",
                      dir, (unsigned)(st.st_mode & 07777));
        return FP_STATUS_ACCESS_DENIED;
    }
    if (owner)
        *owner = (uint32_t)st.st_uid;
    return FP_STATUS_SUCCESS;
}

fp_ntstatus sk_prepare_dir(char *dir, size_t cap)
{
    char dirs[2][SK_DIR_MAX];
    int n = sk_own_dirs(dirs);
    if (n < 0 || strlen(dirs[0]) >= cap) {
        sk_set_detail("the runtime directory %s is too long for a socket path", dirs[0]);
        return FP_STATUS_OBJECT_NAME_INVALID;
    }
    snprintf(dir, cap, "%s", dirs[0]); /* the first: where our ports go */
    int from_env = getenv("FASTPORT_RUNTIME_DIR") && *getenv("FASTPORT_RUNTIME_DIR");
    int created = mkdir(dir, 0711) == 0;
    if (!created && errno != EEXIST) {
        int e = errno;
        sk_set_detail("cannot create the runtime directory %s: %s", dir, strerror(e));
        return e == EACCES || e == EPERM ? FP_STATUS_ACCESS_DENIED
               : e == ENOENT || e == ENOTDIR ? FP_STATUS_OBJECT_NAME_NOT_FOUND
                                             : FP_STATUS_INSUFFICIENT_RESOURCES;
    }
    /* The default directory in /tmp is a predictable name anyone may have created first: never
     * follow a symlink there, and accept only a directory of ours that nobody else can write to. */
    fp_ntstatus st = sk_check_dir(dir, geteuid(), !from_env, NULL);
    if (st == FP_STATUS_OBJECT_NAME_NOT_FOUND) { /* removed meanwhile */
        sk_set_detail("the runtime directory %s disappeared", dir);
        st = FP_STATUS_ACCESS_DENIED;
    }
    if (FP_NT_SUCCESS(st) && created)
        (void)chmod(dir, 0711); /* exactly 0711 whatever the umask: others traverse, not list */
    return st;
}

int sk_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    /* Transport threads take no asynchronous signals: they belong to the application's threads
     * (Python's main thread, for one). The new thread inherits the blocked mask. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int r = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r;
}
