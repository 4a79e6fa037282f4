/* fp_port_fltlib (src/backends/port.h): the port's calls over FltLib. Written against
 * <windows.h> and <fltuser.h> only, like fltlib.c: the real FLTLIB.DLL on Windows, the emulator's
 * Win32 face elsewhere (so fastport.connect(name, backend="fltlib") runs this code on Linux).
 *
 * A get with a timeout: an overlapped FilterGetMessage whose event carries the low-order bit (no
 * completion packet, should the handle have joined a pump's completion port), a wait on the
 * event, CancelIoEx when it times out, then GetOverlappedResult(wait) for the outcome (a message
 * may have won the race with the cancel: it is returned, never lost). A handle opened with
 * FLT_PORT_FLAG_SYNC_HANDLE takes no OVERLAPPED (fp_port_fltlib_sync): its get waits until a
 * message comes, and FltLib does not say how many bytes came (the whole buffer is reported). */
#include <windows.h>
#include <fltuser.h>

#include <string.h>

#include "port.h"

_Static_assert(FP_PORT_INFINITE == INFINITE, "one 'no timeout'");
#ifdef FLT_PORT_FLAG_SYNC_HANDLE /* SDKs since Windows 8.1; mingw-w64's fltuser.h lacks it */
_Static_assert(FP_PORT_SYNC_HANDLE == FLT_PORT_FLAG_SYNC_HANDLE, "one sync flag");
#endif

static fp_hresult last_error(void)
{
    return (fp_hresult)HRESULT_FROM_WIN32(GetLastError());
}

fp_hresult fp_port_fltlib_connect(const wchar_t *name, uint32_t options, const void *context,
                                  uint32_t context_size, void **port)
{
    HANDLE h = NULL;
    *port = NULL;
    if (context_size > FP_PORT_MAX_CONTEXT)
        return FP_E_INVALIDARG;
    HRESULT hr = FilterConnectCommunicationPort((LPCWSTR)name, options, context,
                                                (WORD)context_size, NULL, &h);
    if (SUCCEEDED(hr))
        *port = h;
    return (fp_hresult)hr;
}

static fp_hresult fl_get(void *port, void *buffer, uint32_t size, uint32_t timeout_ms,
                         uint32_t *got)
{
    *got = 0;
    if (!buffer || size < sizeof(FILTER_MESSAGE_HEADER))
        return FP_E_INVALIDARG;
    HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (!ev)
        return last_error();
    OVERLAPPED ov;
    memset(&ov, 0, sizeof ov);
    ov.hEvent = (HANDLE)((ULONG_PTR)ev | 1);
    HRESULT hr = FilterGetMessage((HANDLE)port, (PFILTER_MESSAGE_HEADER)buffer, size, &ov);
    if (hr == HRESULT_FROM_WIN32(ERROR_IO_PENDING) || SUCCEEDED(hr)) {
        BOOL timed_out = FALSE;
        if (hr != S_OK && WaitForSingleObject(ev, timeout_ms) == WAIT_TIMEOUT) {
            timed_out = TRUE;
            (void)CancelIoEx((HANDLE)port, &ov); /* ERROR_NOT_FOUND: it completed meanwhile */
        }
        DWORD bytes = 0;
        if (GetOverlappedResult((HANDLE)port, &ov, &bytes, TRUE)) {
            hr = S_OK;
        } else {
            DWORD err = GetLastError();
            hr = timed_out && err == ERROR_OPERATION_ABORTED ? FP_E_TIMEOUT
                                                             : HRESULT_FROM_WIN32(err);
        }
        if (hr == S_OK || hr == FP_E_INSUFFICIENT_BUFFER)
            *got = bytes < sizeof(FILTER_MESSAGE_HEADER) ? (uint32_t)sizeof(FILTER_MESSAGE_HEADER)
                                                         : (uint32_t)bytes;
    }
    CloseHandle(ev);
    return (fp_hresult)hr;
}

static fp_hresult fl_get_sync(void *port, void *buffer, uint32_t size, uint32_t timeout_ms,
                              uint32_t *got)
{
    (void)timeout_ms;
    *got = 0;
    if (!buffer || size < sizeof(FILTER_MESSAGE_HEADER))
        return FP_E_INVALIDARG;
    HRESULT hr = FilterGetMessage((HANDLE)port, (PFILTER_MESSAGE_HEADER)buffer, size, NULL);
    if (hr == S_OK || hr == FP_E_INSUFFICIENT_BUFFER)
        *got = size;
    return (fp_hresult)hr;
}

static fp_hresult fl_reply(void *port, const void *buffer, uint32_t size)
{
    return (fp_hresult)FilterReplyMessage((HANDLE)port, (PFILTER_REPLY_HEADER)(void *)buffer, size);
}

static fp_hresult fl_send(void *port, const void *in, uint32_t in_size, void *out,
                          uint32_t out_size, uint32_t *returned)
{
    DWORD n = 0;
    HRESULT hr = FilterSendMessage((HANDLE)port, (LPVOID)in, in_size, out, out_size, &n);
    *returned = (uint32_t)n;
    return (fp_hresult)hr;
}

static fp_hresult fl_cancel(void *port)
{
    return CancelIoEx((HANDLE)port, NULL) ? FP_S_OK : last_error();
}

static int fl_local_replies(void *port)
{
    (void)port;
    return 1; /* FilterReplyMessage is one system call */
}

static void fl_close(void *port)
{
    CloseHandle((HANDLE)port);
}

const fp_port_ops fp_port_fltlib = {
    "fltlib", fl_get, fl_reply, fl_send, fl_cancel, fl_local_replies, fl_close, NULL, NULL, NULL,
    NULL,     NULL,
};

const fp_port_ops fp_port_fltlib_sync = {
    "fltlib", fl_get_sync, fl_reply, fl_send, fl_cancel, fl_local_replies, fl_close, NULL, NULL,
    NULL,     NULL,        NULL,
};
