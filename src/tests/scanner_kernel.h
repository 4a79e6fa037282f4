/* The kernel side serving test_win32_scanner.c (see scanner_kernel.c). That test includes no
 * project header, so it declares these two itself; this header keeps the definitions honest. */
#ifndef FP_TESTS_SCANNER_KERNEL_H
#define FP_TESTS_SCANNER_KERNEL_H

/* Starts the kernel side (socket: a forked child process; else a thread of this process) with a
 * new scanner port; returns its name once it listens (NULL on failure). After one client
 * connects, `senders` driver threads send `messages` scanner messages, then the client is
 * disconnected. */
const char *scanner_kernel_start(int socket, unsigned messages, unsigned senders);

/* Waits for the kernel side: 0 when every message got the right reply. */
int scanner_kernel_finish(void);

#endif
