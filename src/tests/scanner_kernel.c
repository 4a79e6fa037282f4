/* The kernel side that test_win32_scanner.c (a Windows-style client that includes no project
 * header) is served by: a scanner port and the load-generating driver with FP_PROTO_SCANNER,
 * which checks every reply. Inproc: on a thread of the test's process. Socket: in a forked child
 * process, ports in a fresh runtime directory. */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "driver/driver.h"
#include "fltsim/fltsim.h"
#include "scanner_kernel.h"

static struct {
    int socket;
    unsigned messages, senders;
    char name[64];
    int ready[2];
    sem_t connected;
    pthread_t thread;
    pid_t child;
    int code;
} k;

static fp_ntstatus on_connect(void *cookie, fsim_client *client, const void *ctx, uint32_t n,
                              void **conn_cookie)
{
    (void)cookie, (void)client, (void)ctx, (void)n, (void)conn_cookie;
    sem_post(&k.connected);
    return FP_STATUS_SUCCESS;
}

/* Creates the port, says so on the pipe, waits for the client, drives `messages` scanner
 * messages through it, then disconnects it. 0 when every reply was right. */
static int kernel_main(void)
{
    sem_init(&k.connected, 0, 0);
    fsim_callbacks cb = {on_connect, NULL, NULL, NULL};
    fsim_server *s = NULL;
    fp_ntstatus st = fsim_create_port(k.name, k.socket ? FSIM_SOCKET : FSIM_INPROC, 1,
                                      FSIM_ACCESS_OWNER, &cb, &s);
    char r = FP_NT_SUCCESS(st) ? 'r' : 'x';
    if (write(k.ready[1], &r, 1) != 1 || r != 'r')
        return 2;
    while (sem_wait(&k.connected) != 0)
        ;
    fp_driver_config cfg;
    fp_driver_config_init(&cfg);
    cfg.senders = k.senders;
    cfg.protocol = FP_PROTO_SCANNER;
    cfg.seconds = 0;
    cfg.messages = k.messages;
    fp_driver *d = NULL;
    fp_driver_result res = {0};
    int code = 3;
    if (fp_driver_start_server(&cfg, s, &d) == FP_S_OK) {
        fp_driver_wait(d, -1);
        fp_driver_get_result(d, &res);
        fp_driver_destroy(d);
        printf("    %s kernel side: %llu sent, %llu replies ok, %llu bad, %llu timeouts, "
               "%llu disconnects, %llu errors\n", k.socket ? "socket" : "inproc",
               (unsigned long long)res.sent, (unsigned long long)res.replies_ok,
               (unsigned long long)res.bad_replies, (unsigned long long)res.timeouts,
               (unsigned long long)res.disconnects, (unsigned long long)res.errors);
        code = res.sent == k.messages && res.replies_ok == k.messages ? 0 : 1;
    }
    fsim_disconnect_all(s); /* the client's pending gets complete: "port disconnected" */
    fsim_close_server(s);
    sem_destroy(&k.connected);
    return code;
}

static void *kernel_thread(void *p)
{
    (void)p;
    k.code = kernel_main();
    return NULL;
}

const char *scanner_kernel_start(int socket, unsigned messages, unsigned senders)
{
    k.socket = socket;
    k.messages = messages;
    k.senders = senders;
    snprintf(k.name, sizeof k.name, "\\ScannerPort-%s-%d", socket ? "sock" : "inproc",
             (int)getpid());
    if (pipe(k.ready) != 0)
        return NULL;
    if (socket) {
        static char dir[] = "/tmp/fpscan-XXXXXX";
        if (!mkdtemp(dir))
            return NULL;
        setenv("FASTPORT_RUNTIME_DIR", dir, 1);
        fflush(stdout);
        k.child = fork();
        if (k.child < 0)
            return NULL;
        if (k.child == 0) {
            int code = kernel_main();
            fflush(stdout);
            _exit(code);
        }
    } else if (pthread_create(&k.thread, NULL, kernel_thread, NULL) != 0) {
        return NULL;
    }
    char r = 0;
    if (read(k.ready[0], &r, 1) != 1 || r != 'r')
        return NULL;
    return k.name;
}

int scanner_kernel_finish(void)
{
    int code;
    if (k.socket) {
        int status = 0;
        while (waitpid(k.child, &status, 0) < 0)
            ;
        code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        char lock[96];
        snprintf(lock, sizeof lock, "%s/.lock", getenv("FASTPORT_RUNTIME_DIR"));
        unlink(lock); /* the ports' creation lock */
        rmdir(getenv("FASTPORT_RUNTIME_DIR"));
    } else {
        pthread_join(k.thread, NULL);
        code = k.code;
    }
    close(k.ready[0]);
    close(k.ready[1]);
    return code;
}
