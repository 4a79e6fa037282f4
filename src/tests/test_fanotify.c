/* The fanotify backend on the real kernel (needs CAP_SYS_ADMIN: without it the test says so and
 * passes nothing, as CI runs as root). Opens come from child processes, whose open() blocks until
 * the backend writes the verdict; each child exits with 0 or the errno its open() got. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backends/fanotify.h"
#include "common/fp_wire.h"
#include "check.h"

#define SLOT (FP_SLOT_HEADER + FP_FAN_MESSAGE_FIXED + 256u)
static uint8_t slots[8][SLOT];
static char dir[] = "/tmp/fp-fan-XXXXXX";
static char file[300];

static pid_t opener(void)
{
    pid_t p = fork();
    if (p == 0) {
        int fd = open(file, O_RDONLY);
        _exit(fd < 0 ? errno : 0);
    }
    return p;
}

static int exit_code(pid_t p)
{
    int st = 0;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int group(void)
{
    int fd = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY);
    if (fd >= 0 && fanotify_mark(fd, FAN_MARK_ADD, FAN_OPEN_PERM | FAN_EVENT_ON_CHILD, AT_FDCWD,
                                 dir) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static fp_hresult send_verdict(fp_backend *b, uint64_t id, uint32_t v)
{
    uint8_t buf[FP_REPLY_HEADER_AREA + 4];
    memcpy(buf + FP_REPLY_HEADER_AREA, &v, 4);
    fp_reply r = {buf, sizeof buf, 0, id, 0, 0};
    CHECK_EQ(b->ops->reply(b, &r, 1), FP_S_OK);
    return r.hr;
}

/* One child's open, reaped and answered with v; returns the child's exit code. */
static int one_open(fp_backend *b, uint32_t v, fp_completion *c)
{
    pid_t p = opener();
    uint32_t n = 0;
    CHECK_EQ(b->ops->post(b, 0, slots[0], SLOT), FP_S_OK);
    CHECK_EQ(b->ops->reap(b, c, 1, 10000, &n), FP_S_OK);
    CHECK_EQ(n, 1);
    const fp_fan_message *m = (const void *)(slots[0] + FP_SLOT_HEADER);
    CHECK_EQ(m->pid, p);
    CHECK_EQ(send_verdict(b, c->id, v), FP_S_OK);
    return exit_code(p);
}

static void test_verdicts(int g)
{
    fp_fan_config cfg = {.fd = g, .reply_size = 4, .path_bytes = 256, .exclude_self = 1};
    fp_hresult hr;
    fp_backend *b = fp_fan_backend_new(&cfg, &hr);
    CHECK(b != NULL);
    CHECK_EQ(b->ops->attach(b, 8), FP_S_OK);
    fp_completion c;
    CHECK_EQ(one_open(b, FP_FAN_DENY, &c), EPERM);
    CHECK_EQ(c.hr, FP_S_OK);
    CHECK_EQ(c.slot, 0);
    CHECK_EQ(c.length, SLOT);
    CHECK_EQ(c.reply_length, FP_SLOT_HEADER + 4);
    FP_MESSAGE_HEADER h;
    memcpy(&h, slots[0], sizeof h);
    const fp_fan_message *m = (const void *)(slots[0] + FP_SLOT_HEADER);
    CHECK_EQ(h.MessageId, c.id);
    CHECK_EQ(h.ReplyLength, FP_SLOT_HEADER + 4);
    CHECK_EQ(m->id, c.id);
    CHECK(m->mask & FAN_OPEN_PERM);
    CHECK(strcmp((const char *)(m + 1), file) == 0);
    /* answered once: the id is no longer held */
    CHECK_EQ(send_verdict(b, c.id, FP_FAN_ALLOW), FP_E_FLT_NO_WAITER_FOR_REPLY);
    CHECK_EQ(one_open(b, FP_FAN_ALLOW, &c), 0);
    CHECK_EQ(one_open(b, 0, &c), 0); /* a zeroed reply allows: fail open */
    fp_fan_stats st;
    fp_fan_backend_stats(b, &st);
    CHECK_EQ(st.delivered, 3);
    CHECK_EQ(st.replied, 3);
    CHECK_EQ(st.stale, 1);
    CHECK_EQ(st.held, 0);
    b->ops->destroy(b);
}

typedef struct reaper {
    fp_backend *b;
    fp_completion c[8];
    uint32_t n;
    fp_hresult hr;
    volatile int done;
} reaper;

static void *reap_thread(void *arg)
{
    reaper *r = arg;
    r->hr = r->b->ops->reap(r->b, r->c, 8, FP_INFINITE_MS, &r->n);
    r->done = 1;
    return NULL;
}

/* The process's own opens are allowed by the reaping thread without a slot; wake and cancel. */
static void test_self_wake_cancel(int g)
{
    fp_fan_config cfg = {.fd = g, .reply_size = 4, .exclude_self = 1};
    fp_hresult hr;
    fp_backend *b = fp_fan_backend_new(&cfg, &hr);
    CHECK_EQ(b->ops->attach(b, 8), FP_S_OK);
    CHECK_EQ(b->ops->post(b, 3, slots[3], SLOT), FP_S_OK);
    reaper r = {.b = b};
    pthread_t t;
    pthread_create(&t, NULL, reap_thread, &r);
    int fd = open(file, O_RDONLY); /* would wait forever if the reaper did not answer it */
    CHECK(fd >= 0);
    close(fd);
    fp_fan_stats st;
    CHECK(WAIT_UNTIL((fp_fan_backend_stats(b, &st), st.excluded == 1), 10000));
    CHECK(!r.done);
    b->ops->wake(b);
    pthread_join(t, NULL);
    CHECK_EQ(r.hr, FP_S_OK);
    CHECK_EQ(r.n, 0);
    /* cancel completes the posted slot, once */
    CHECK_EQ(b->ops->cancel(b, FP_SLOT_ALL), FP_S_OK);
    uint32_t n = 0;
    fp_completion c[8];
    CHECK_EQ(b->ops->reap(b, c, 8, 1000, &n), FP_S_OK);
    CHECK_EQ(n, 1);
    CHECK_EQ(c[0].slot, 3);
    CHECK_EQ(c[0].hr, FP_E_OPERATION_ABORTED);
    CHECK_EQ(b->ops->reap(b, c, 8, 0, &n), FP_E_TIMEOUT);
    fp_fan_backend_stats(b, &st);
    CHECK_EQ(st.delivered, 0);
    b->ops->destroy(b);
}

/* With a budget of one fd, the second event waits in the kernel until the first is answered;
 * destroy allows what nobody answered. */
static void test_budget_destroy(int g)
{
    fp_fan_config cfg = {.fd = g, .reply_size = 4, .fd_budget = 1, .exclude_self = 1};
    fp_hresult hr;
    fp_backend *b = fp_fan_backend_new(&cfg, &hr);
    CHECK_EQ(b->ops->attach(b, 8), FP_S_OK);
    for (uint32_t s = 0; s < 4; s++)
        CHECK_EQ(b->ops->post(b, s, slots[s], SLOT), FP_S_OK);
    pid_t p1 = opener(), p2 = opener();
    fp_completion c[8];
    uint32_t n = 0, got = 0;
    while (got < 1 && b->ops->reap(b, c, 8, 10000, &n) == FP_S_OK)
        got += n;
    CHECK_EQ(got, 1);
    CHECK_EQ(c[0].slot, 0); /* oldest posted first */
    fp_fan_stats st;
    fp_fan_backend_stats(b, &st);
    CHECK_EQ(st.held, 1);
    CHECK_EQ(b->ops->reap(b, c + 1, 7, 50, &n), FP_E_TIMEOUT); /* over budget: nothing read */
    CHECK_EQ(send_verdict(b, c[0].id, FP_FAN_DENY), FP_S_OK);
    CHECK_EQ(b->ops->reap(b, c + 1, 7, 10000, &n), FP_S_OK);
    CHECK_EQ(n, 1);
    CHECK_EQ(c[1].slot, 1);
    fp_fan_backend_stats(b, &st);
    CHECK_EQ(st.held, 1);
    b->ops->cancel(b, FP_SLOT_ALL);
    CHECK_EQ(b->ops->reap(b, c, 8, 1000, &n), FP_S_OK);
    CHECK_EQ(n, 2);
    b->ops->destroy(b); /* the second opener, never answered, is allowed here */
    int e1 = exit_code(p1), e2 = exit_code(p2);
    CHECK((e1 == EPERM && e2 == 0) || (e1 == 0 && e2 == EPERM));
}

/* The queue-full policy: with the fd budget spent and overflow_verdict set, what comes is read
 * and answered with that verdict at once, in C, while the held event still waits for its reply. */
static void test_budget_spent_overflow_verdict(int g)
{
    fp_fan_config cfg = {.fd = g, .reply_size = 4, .fd_budget = 1, .exclude_self = 1,
                         .overflow_verdict = FP_FAN_DENY};
    fp_hresult hr;
    fp_backend *b = fp_fan_backend_new(&cfg, &hr);
    CHECK_EQ(b->ops->attach(b, 8), FP_S_OK);
    for (uint32_t s = 0; s < 4; s++)
        CHECK_EQ(b->ops->post(b, s, slots[s], SLOT), FP_S_OK);
    pid_t p1 = opener();
    fp_completion c[8];
    uint32_t n = 0;
    CHECK_EQ(b->ops->reap(b, c, 8, 10000, &n), FP_S_OK);
    CHECK_EQ(n, 1);
    pid_t p2 = opener(), p3 = opener();
    fp_fan_stats st;
    for (int i = 0; i < 200 && (fp_fan_backend_stats(b, &st), st.overflowed < 2); i++)
        b->ops->reap(b, c + 1, 7, 50, &n); /* reads and answers them, nothing completes */
    fp_fan_backend_stats(b, &st);
    CHECK_EQ(st.overflowed, 2);
    CHECK_EQ(st.delivered, 1);
    CHECK_EQ(st.held, 1);
    CHECK_EQ(exit_code(p2), EPERM); /* answered without us */
    CHECK_EQ(exit_code(p3), EPERM);
    CHECK_EQ(send_verdict(b, c[0].id, FP_FAN_ALLOW), FP_S_OK);
    CHECK_EQ(exit_code(p1), 0);
    b->ops->cancel(b, FP_SLOT_ALL);
    CHECK_EQ(b->ops->reap(b, c, 8, 1000, &n), FP_S_OK);
    CHECK_EQ(n, 3);
    b->ops->destroy(b);
}

/* A verdict with FP_FAN_AUDIT on a group without FAN_ENABLE_AUDIT: the kernel refuses the
 * response, the backend sends it again without the bit, and the opener gets the verdict. */
static void test_audit_refused_resent(int g)
{
    fp_fan_config cfg = {.fd = g, .reply_size = 4, .exclude_self = 1};
    fp_hresult hr;
    fp_backend *b = fp_fan_backend_new(&cfg, &hr);
    CHECK_EQ(b->ops->attach(b, 8), FP_S_OK);
    fp_completion c;
    CHECK_EQ(one_open(b, FP_FAN_DENY | FP_FAN_AUDIT, &c), EPERM);
    fp_fan_stats st;
    fp_fan_backend_stats(b, &st);
    CHECK_EQ(st.audit_refused, 1);
    CHECK_EQ(st.replied, 1);
    CHECK_EQ(st.held, 0);
    b->ops->destroy(b);
}

/* More events than the kernel queues (max_queued_events, 16384 by default): the kernel drops
 * the rest and queues one FAN_Q_OVERFLOW, which the backend counts. Notification events (FAN_OPEN
 * on a directory while files are created in it) fill the queue without blocking anyone. */
static void test_queue_overflow_counted(void)
{
    char sub[320], path[400];
    snprintf(sub, sizeof sub, "%s/flood", dir);
    CHECK_EQ(mkdir(sub, 0700), 0);
    int g = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY);
    CHECK(g >= 0);
    CHECK_EQ(fanotify_mark(g, FAN_MARK_ADD, FAN_OPEN | FAN_EVENT_ON_CHILD, AT_FDCWD, sub), 0);
    unsigned max = 16384;
    FILE *q = fopen("/proc/sys/fs/fanotify/max_queued_events", "r");
    if (q) {
        if (fscanf(q, "%u", &max) != 1)
            max = 16384;
        fclose(q);
    }
    unsigned files = max + 64, made = 0; /* distinct files: events on one file would merge */
    for (unsigned i = 0; i < files; i++) {
        snprintf(path, sizeof path, "%s/%u", sub, i);
        int fd = open(path, O_CREAT | O_WRONLY, 0600);
        made += fd >= 0;
        if (fd >= 0)
            close(fd);
    }
    CHECK_EQ(made, files);
    fp_fan_config cfg = {.fd = g, .reply_size = 4, .exclude_self = 1};
    fp_hresult hr;
    fp_backend *b = fp_fan_backend_new(&cfg, &hr);
    CHECK_EQ(b->ops->attach(b, 8), FP_S_OK);
    CHECK_EQ(b->ops->post(b, 0, slots[0], SLOT), FP_S_OK);
    fp_completion c[8];
    uint32_t n = 0;
    CHECK_EQ(b->ops->reap(b, c, 8, 0, &n), FP_E_TIMEOUT); /* reads all, completes nothing */
    fp_fan_stats st;
    fp_fan_backend_stats(b, &st);
    CHECK_EQ(st.overflows, 1);
    CHECK_EQ(st.notify, max);
    CHECK_EQ(st.delivered, 0);
    b->ops->destroy(b);
    close(g);
    for (unsigned i = 0; i < files; i++) {
        snprintf(path, sizeof path, "%s/%u", sub, i);
        unlink(path);
    }
    rmdir(sub);
}

int main(void)
{
    int g = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY);
    if (g < 0) {
        printf("test_fanotify: skipped: fanotify_init: %s (needs CAP_SYS_ADMIN)\n",
               strerror(errno));
        return 0;
    }
    close(g);
    if (!mkdtemp(dir))
        return 1;
    snprintf(file, sizeof file, "%s/sample.bin", dir);
    int fd = open(file, O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0 && write(fd, "x", 1) == 1);
    close(fd);
    g = group();
    CHECK(g >= 0);
    test_verdicts(g);
    test_self_wake_cancel(g);
    test_budget_destroy(g);
    test_budget_spent_overflow_verdict(g);
    test_audit_refused_resent(g);
    test_queue_overflow_counted();
    close(g);
    unlink(file);
    rmdir(dir);
    printf("test_fanotify: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
