/* The emulator's Win32 face: <fltuser.h> (with <fltuserstructures.h>) for the user side of
 * Filter Manager communication ports, over the emulated Filter Manager. Include <windows.h>
 * (this directory's) first, as on Windows.
 *
 * What is emulated, and how it differs from Windows (see also windows.h):
 * - FilterConnectCommunicationPort: the wide name is converted to UTF-8 and looked up in this
 *   process, then on the socket transport; lpSecurityAttributes is ignored.
 * - FilterGetMessage without OVERLAPPED blocks until a message (no timeout). With one it returns
 *   HRESULT_FROM_WIN32(ERROR_IO_PENDING), sets Internal = STATUS_PENDING and resets hEvent; on
 *   completion Internal = the NTSTATUS and InternalHigh = the bytes written (header included),
 *   then one packet goes to the completion port the handle joined (unless hEvent's low bit is
 *   set) and hEvent is set. Pending gets are completed oldest first. NTSTATUS of a completion:
 *   STATUS_SUCCESS; STATUS_BUFFER_TOO_SMALL 0xC0000023 for a message longer than the buffer
 *   (header + what fits copied; it counts as delivered: reply to it) - GetLastError
 *   ERROR_INSUFFICIENT_BUFFER; STATUS_CANCELLED 0xC0000120 after CancelIoEx / CancelIo -
 *   ERROR_OPERATION_ABORTED; STATUS_INVALID_HANDLE 0xC0000008 when the connection ended (the
 *   kernel side closed it, or the handle was closed: emulator's choice, CloseHandle completes the
 *   pending gets this way before it returns) - ERROR_INVALID_HANDLE.
 * - A handle opened with FLT_PORT_FLAG_SYNC_HANDLE refuses overlapped gets with E_INVALIDARG.
 * - FILTER_MESSAGE_HEADER / FILTER_REPLY_HEADER are the project's FP_MESSAGE_HEADER /
 *   FP_REPLY_HEADER (same layout; their padding is a named field).
 * - Extension, when FLTSIM_EXT_REPLY_MESSAGES is defined before this header: FltSimReplyMessages
 *   sends n replies in one call (one round trip on the socket transport); each Result is what
 *   FilterReplyMessage would have returned for it. The call returns S_OK unless the handle is bad
 *   (then no Result is written).
 */
#ifndef FLTSIM_WIN32_FLTUSER_H
#define FLTSIM_WIN32_FLTUSER_H

#include "windows.h"
#include "../../common/fp_wire.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef FP_MESSAGE_HEADER FILTER_MESSAGE_HEADER, *PFILTER_MESSAGE_HEADER;
typedef FP_REPLY_HEADER FILTER_REPLY_HEADER, *PFILTER_REPLY_HEADER;

#ifndef FLT_PORT_FLAG_SYNC_HANDLE
#define FLT_PORT_FLAG_SYNC_HANDLE 0x1u
#endif

#define FilterConnectCommunicationPort fsimw_FilterConnectCommunicationPort
#define FilterSendMessage fsimw_FilterSendMessage
#define FilterGetMessage fsimw_FilterGetMessage
#define FilterReplyMessage fsimw_FilterReplyMessage

HRESULT WINAPI FilterConnectCommunicationPort(LPCWSTR lpPortName, DWORD dwOptions,
                                              LPCVOID lpContext, WORD wSizeOfContext,
                                              LPSECURITY_ATTRIBUTES lpSecurityAttributes,
                                              HANDLE *hPort);
HRESULT WINAPI FilterSendMessage(HANDLE hPort, LPVOID lpInBuffer, DWORD dwInBufferSize,
                                 LPVOID lpOutBuffer, DWORD dwOutBufferSize,
                                 LPDWORD lpBytesReturned);
HRESULT WINAPI FilterGetMessage(HANDLE hPort, PFILTER_MESSAGE_HEADER lpMessageBuffer,
                                DWORD dwMessageBufferSize, LPOVERLAPPED lpOverlapped);
HRESULT WINAPI FilterReplyMessage(HANDLE hPort, PFILTER_REPLY_HEADER lpReplyBuffer,
                                  DWORD dwReplyBufferSize);

#ifdef FLTSIM_EXT_REPLY_MESSAGES
typedef struct FLTSIM_REPLY {
    PFILTER_REPLY_HEADER Buffer;
    DWORD Size;
    HRESULT Result; /* out */
} FLTSIM_REPLY;
#define FltSimReplyMessages fsimw_FltSimReplyMessages
HRESULT WINAPI FltSimReplyMessages(HANDLE hPort, FLTSIM_REPLY *Replies, DWORD Count);
#endif

#ifdef __cplusplus
}
#endif
#endif
