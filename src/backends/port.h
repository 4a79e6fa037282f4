/* The user side of a communication port, one call per message: what fastport.Port wraps. A table
 * of functions over a handle, so one Python class serves both routes:
 *   fp_port_sim     the emulated Filter Manager's own calls (SimFilter*; POSIX builds only),
 *   fp_port_fltlib  the FltLib calls: the real FLTLIB.DLL on Windows, the emulator's Win32 face
 *                   (src/fltsim/win32/) elsewhere, so its code runs in the Linux tests too.
 * Handles travel as void *; a handle from either connect also serves fp_fltlib_backend_new. */
#ifndef FP_BACKEND_PORT_H
#define FP_BACKEND_PORT_H
#include <stddef.h>
#include <stdint.h>
#include "../common/fp_status.h"
#include "../common/fp_wire.h"

#define FP_PORT_INFINITE 0xFFFFFFFFu       /* a get's timeout: none */
#define FP_PORT_MAX_CONTEXT 65535u         /* connection context bytes (a WORD) */
#define FP_PORT_MAX_NAME 200u              /* UTF-8 bytes of a port name (our limit) */
#define FP_PORT_MAX_MESSAGE (1u << 20)     /* payload bytes of a message or reply (our limit) */
#define FP_PORT_SYNC_HANDLE 0x1u           /* FLT_PORT_FLAG_SYNC_HANDLE */

typedef struct fp_port_ops {
    const char *name; /* "sim" or "fltlib" */
    /* FilterGetMessage into buffer (size bytes, the 16-byte FILTER_MESSAGE_HEADER included),
     * waiting up to timeout_ms (FP_PORT_INFINITE: forever). FP_E_TIMEOUT when none came;
     * FP_E_INSUFFICIENT_BUFFER with the header and what fit; *got = bytes received, header
     * included. fp_port_fltlib_sync: no timeout, and *got = size (FltLib does not say). */
    fp_hresult (*get)(void *port, void *buffer, uint32_t size, uint32_t timeout_ms, uint32_t *got);
    /* FilterReplyMessage: buffer = FILTER_REPLY_HEADER + payload, size bytes in all. */
    fp_hresult (*reply)(void *port, const void *buffer, uint32_t size);
    /* FilterSendMessage. */
    fp_hresult (*send)(void *port, const void *in, uint32_t in_size, void *out, uint32_t out_size,
                       uint32_t *returned);
    /* CancelIoEx(port, NULL): FP_E_NOT_FOUND when nothing was pending. */
    fp_hresult (*cancel)(void *port);
    /* 1 when a reply costs no round trip (a pump then sends small batches itself). */
    int (*local_replies)(void *port);
    void (*close)(void *port); /* CloseHandle */
    /* FilterSendMessage in three steps, so that the caller can wake for signals while it waits;
     * NULL where the port has no such thing (then `send` is used, and the wait is not
     * interruptible). start copies the input; wait returns 1 once the send is done (its output
     * in out, *returned, *hr), 0 after timeout_ms; end frees the operation, abandoning it when it
     * is not done (MessageNotify still runs; its output is discarded). */
    fp_hresult (*send_start)(void *port, const void *in, uint32_t in_size, uint32_t out_size,
                             void **op);
    int (*send_wait)(void *op, uint32_t timeout_ms, void *out, uint32_t out_size,
                     uint32_t *returned, fp_hresult *hr);
    void (*send_end)(void *op);
    /* Drop the handle in a process forked from the one that opened it: the connection stays
     * the parent's (no disconnect, no shutdown). NULL: nothing to do but forget it. */
    void (*forsake)(void *port);
    /* Sets (fn) or clears (NULL) the calling thread's interrupt hook for the waits of this
     * route's calls that wait on a kernel side beyond a system call (the emulator's socket
     * transport: a reply's acknowledgement, connect's handshake): fn(arg) is called every 100 ms
     * there, and the call gives up with FP_E_OPERATION_ABORTED when it returns nonzero. NULL
     * where no call waits so (FltLib: FilterReplyMessage is one system call). */
    void (*interrupt_hook)(int (*fn)(void *arg), void *arg);
} fp_port_ops;

#ifndef _WIN32
extern const fp_port_ops fp_port_sim;
/* SimFilterConnectCommunicationPort: name in UTF-8. */
fp_hresult fp_port_sim_connect(const char *name, uint32_t options, const void *context,
                               uint32_t context_size, void **port);
#endif

extern const fp_port_ops fp_port_fltlib;
extern const fp_port_ops fp_port_fltlib_sync; /* for a handle opened with FP_PORT_SYNC_HANDLE */
/* FilterConnectCommunicationPort: name as the platform's wchar_t string (UTF-16 on Windows). */
fp_hresult fp_port_fltlib_connect(const wchar_t *name, uint32_t options, const void *context,
                                  uint32_t context_size, void **port);

#endif
