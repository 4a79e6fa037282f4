/* The pump's backend over FltLib (real on Windows, the emulator's Win32 face elsewhere). This
 * header needs no <windows.h>: handles travel as void *. */
#ifndef FP_BACKEND_FLTLIB_H
#define FP_BACKEND_FLTLIB_H
#include "backend.h"

/* A backend over the communication port `port` (a HANDLE from FilterConnectCommunicationPort,
 * opened for overlapped I/O). iocp: a completion port the port is already bound to, or NULL to
 * create one and bind the port to it (a handle joins one completion port for life, so a caller
 * that serves one port with several pumps in turn creates it once and passes it each time).
 * flags: FP_BACKEND_* (FP_BACKEND_LOCAL_REPLY when a reply costs no round trip). The backend
 * borrows the port and a given iocp: keep them open until destroy. NULL on failure, *hr says why
 * (HRESULT_FROM_WIN32 of CreateIoCompletionPort's error: ERROR_INVALID_PARAMETER when the port is
 * already bound to another completion port). */
fp_backend *fp_fltlib_backend_new(void *port, void *iocp, uint32_t flags, fp_hresult *hr);

/* A new completion port with `port` bound to it (what fp_fltlib_backend_new does when given
 * none), for a caller that keeps it across pumps; close it with fp_fltlib_close. */
fp_hresult fp_fltlib_completion_port(void *port, void **iocp);
void fp_fltlib_close(void *handle); /* CloseHandle; NULL is ignored */

#endif
