/* The emulator's Win32 face: the part of <windows.h> a Filter Manager client uses, so that a C
 * file written for Windows (including <windows.h> and <fltuser.h>) compiles unchanged on Linux with
 * -Isrc/fltsim/win32 and runs against the emulated Filter Manager (src/fltsim/win32.c).
 *
 * Names and signatures follow the Windows SDK (mingw-w64's minwinbase.h, ioapiset.h,
 * synchapi.h, winerror.h). Each function is #defined to an fsimw_-prefixed symbol so the global
 * namespace stays clean. Types have the Windows sizes of x64 except that DWORD / ULONG / LONG are
 * 32-bit ints (Windows: long, which is also 32 bits there) and WCHAR is wchar_t (32 bits here).
 *
 * What is emulated, and how it differs from Windows:
 * - HANDLE values come from the emulator's handle table (communication ports, completion ports,
 *   events, threads). A forged, closed or wrong-type handle fails with ERROR_INVALID_HANDLE; it
 *   never crashes. No other kind of handle (files, ...) exists.
 * - I/O completion ports: packets FIFO, waiting threads released LIFO (as Windows documents); the
 *   concurrency value is ignored (every waiting thread may run). A handle joins at most one port
 *   (a second CreateIoCompletionPort on it: ERROR_INVALID_PARAMETER). Closing a port releases its
 *   waiters with ERROR_ABANDONED_WAIT_0.
 * - CancelIo cancels every get pending on the handle, whichever thread issued it (Windows: the
 *   calling thread's only); CancelIoEx is exact.
 * - Events: manual and auto reset, no names. Threads: CreateThread with flags 0 (no
 *   CREATE_SUSPENDED), waitable; GetExitCodeThread. WaitForSingleObject(Ex) takes events and
 *   threads; alertable waits are not emulated (the flag is ignored).
 * - GetLastError / SetLastError are per thread, set by the emulated functions as Windows does.
 * - Including this header turns off gcc's -Waddress-of-packed-member for the file (see below).
 */
#ifndef FLTSIM_WIN32_WINDOWS_H
#define FLTSIM_WIN32_WINDOWS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <wchar.h>

/* Windows code takes the address of members of #pragma pack(1) structs (the scanner sample's
 * &message->Ovlp), which MSVC accepts and x86-64 handles; gcc would flag each one. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9
#pragma GCC diagnostic ignored "-Waddress-of-packed-member"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define WINAPI
#define CALLBACK
#define VOID void
#define CONST const
#ifndef IN
#define IN
#endif
#ifndef OUT
#define OUT
#endif
#ifndef OPTIONAL
#define OPTIONAL
#endif

typedef void *HANDLE, *PVOID, *LPVOID;
typedef HANDLE *PHANDLE, *LPHANDLE;
typedef const void *LPCVOID;
typedef uint32_t DWORD, ULONG, UINT;
typedef DWORD *PDWORD, *LPDWORD;
typedef ULONG *PULONG;
typedef int32_t LONG, HRESULT, NTSTATUS;
typedef LONG *PLONG;
typedef uint16_t WORD, USHORT;
typedef uint8_t UCHAR, BYTE, BOOLEAN;
typedef UCHAR *PUCHAR;
typedef BYTE *PBYTE, *LPBYTE;
typedef char CHAR;
typedef CHAR *PCHAR, *LPSTR;
typedef const CHAR *LPCSTR;
typedef wchar_t WCHAR;
typedef WCHAR *PWSTR, *LPWSTR;
typedef const WCHAR *PCWSTR, *LPCWSTR;
typedef int BOOL;
typedef BOOL *PBOOL, *LPBOOL;
typedef uintptr_t ULONG_PTR, DWORD_PTR, SIZE_T;
typedef intptr_t LONG_PTR;
typedef ULONG_PTR *PULONG_PTR;
typedef uint64_t ULONGLONG;
typedef int64_t LONGLONG;

typedef struct _SECURITY_ATTRIBUTES {
    DWORD nLength;
    LPVOID lpSecurityDescriptor;
    BOOL bInheritHandle;
} SECURITY_ATTRIBUTES, *PSECURITY_ATTRIBUTES, *LPSECURITY_ATTRIBUTES;

typedef struct _OVERLAPPED {
    ULONG_PTR Internal;     /* the NTSTATUS of the I/O; STATUS_PENDING while pending */
    ULONG_PTR InternalHigh; /* bytes transferred */
    union {
        struct {
            DWORD Offset;
            DWORD OffsetHigh;
        };
        PVOID Pointer;
    };
    HANDLE hEvent;
} OVERLAPPED, *LPOVERLAPPED;

typedef struct _OVERLAPPED_ENTRY {
    ULONG_PTR lpCompletionKey;
    LPOVERLAPPED lpOverlapped;
    ULONG_PTR Internal;
    DWORD dwNumberOfBytesTransferred;
} OVERLAPPED_ENTRY, *LPOVERLAPPED_ENTRY;

typedef DWORD (WINAPI *PTHREAD_START_ROUTINE)(LPVOID lpThreadParameter);
typedef PTHREAD_START_ROUTINE LPTHREAD_START_ROUTINE;

#define TRUE 1
#define FALSE 0
#define INFINITE 0xFFFFFFFFu
#define INVALID_HANDLE_VALUE ((HANDLE)(LONG_PTR)-1)
#define WAIT_OBJECT_0 0x00000000u
#define WAIT_ABANDONED 0x00000080u
#define WAIT_TIMEOUT 258u
#define WAIT_FAILED 0xFFFFFFFFu
#define STILL_ACTIVE 259u
#define STATUS_WAIT_0 ((DWORD)0x00000000)
#define STATUS_TIMEOUT ((DWORD)0x00000102)
#define STATUS_PENDING ((DWORD)0x00000103)

/* winerror.h */
#define FACILITY_WIN32 7
#define SEVERITY_ERROR 1
#define ERROR_SUCCESS 0L
#define NO_ERROR 0L
#define ERROR_FILE_NOT_FOUND 2L
#define ERROR_ACCESS_DENIED 5L
#define ERROR_INVALID_HANDLE 6L
#define ERROR_NOT_ENOUGH_MEMORY 8L
#define ERROR_OUTOFMEMORY 14L
#define ERROR_GEN_FAILURE 31L
#define ERROR_INVALID_PARAMETER 87L
#define ERROR_INSUFFICIENT_BUFFER 122L
#define ERROR_FILENAME_EXCED_RANGE 206L
#define ERROR_ABANDONED_WAIT_0 735L
#define ERROR_OPERATION_ABORTED 995L
#define ERROR_IO_INCOMPLETE 996L
#define ERROR_IO_PENDING 997L
#define ERROR_NOT_FOUND 1168L
#define ERROR_CONNECTION_COUNT_LIMIT 1238L
#define ERROR_TIMEOUT 1460L
#define _HRESULT_TYPEDEF_(x) ((HRESULT)(x))
#define S_OK _HRESULT_TYPEDEF_(0x00000000L)
#define S_FALSE _HRESULT_TYPEDEF_(0x00000001L)
#define E_FAIL _HRESULT_TYPEDEF_(0x80004005L)
#define E_NOTIMPL _HRESULT_TYPEDEF_(0x80004001L)
#define E_ACCESSDENIED _HRESULT_TYPEDEF_(0x80070005L)
#define E_HANDLE _HRESULT_TYPEDEF_(0x80070006L)
#define E_OUTOFMEMORY _HRESULT_TYPEDEF_(0x8007000EL)
#define E_INVALIDARG _HRESULT_TYPEDEF_(0x80070057L)
#define ERROR_FLT_NO_WAITER_FOR_REPLY _HRESULT_TYPEDEF_(0x801F0020L)
#define HRESULT_FROM_WIN32(x) \
    ((HRESULT)(x) <= 0 ? ((HRESULT)(x)) : ((HRESULT)(((x)&0x0000FFFF) | (FACILITY_WIN32 << 16) | 0x80000000)))
#define SUCCEEDED(hr) (((HRESULT)(hr)) >= 0)
#define FAILED(hr) (((HRESULT)(hr)) < 0)
#define IS_ERROR(Status) ((uint32_t)(Status) >> 31 == SEVERITY_ERROR)
#define HRESULT_CODE(hr) ((hr)&0xFFFF)

/* winnt.h */
#define FIELD_OFFSET(type, field) ((LONG)offsetof(type, field))
#define CONTAINING_RECORD(address, type, field) \
    ((type *)((PCHAR)(address) - (ULONG_PTR)offsetof(type, field)))
#define UNREFERENCED_PARAMETER(P) ((void)(P))
#define RtlZeroMemory(d, l) memset((d), 0, (l))
#define ZeroMemory RtlZeroMemory
#define RtlFillMemory(d, l, f) memset((d), (f), (l))
#define FillMemory RtlFillMemory
#define RtlCopyMemory(d, s, l) memcpy((d), (s), (l))
#define CopyMemory RtlCopyMemory
#define RtlMoveMemory(d, s, l) memmove((d), (s), (l))
#define MoveMemory RtlMoveMemory
#define RtlEqualMemory(a, b, l) (!memcmp((a), (b), (l)))
#define EqualMemory RtlEqualMemory

/* winbase.h; Internal is written by another thread, hence the atomic load */
#define HasOverlappedIoCompleted(lpOverlapped) \
    ((DWORD)__atomic_load_n(&(lpOverlapped)->Internal, __ATOMIC_ACQUIRE) != STATUS_PENDING)

#define CreateIoCompletionPort fsimw_CreateIoCompletionPort
#define GetQueuedCompletionStatus fsimw_GetQueuedCompletionStatus
#define GetQueuedCompletionStatusEx fsimw_GetQueuedCompletionStatusEx
#define PostQueuedCompletionStatus fsimw_PostQueuedCompletionStatus
#define CancelIoEx fsimw_CancelIoEx
#define CancelIo fsimw_CancelIo
#define GetOverlappedResult fsimw_GetOverlappedResult
#define CreateEventW fsimw_CreateEventW
#define CreateEventA fsimw_CreateEventA
#ifdef UNICODE
#define CreateEvent CreateEventW
#else
#define CreateEvent CreateEventA
#endif
#define SetEvent fsimw_SetEvent
#define ResetEvent fsimw_ResetEvent
#define WaitForSingleObject fsimw_WaitForSingleObject
#define WaitForSingleObjectEx fsimw_WaitForSingleObjectEx
#define CreateThread fsimw_CreateThread
#define GetExitCodeThread fsimw_GetExitCodeThread
#define GetCurrentThreadId fsimw_GetCurrentThreadId
#define Sleep fsimw_Sleep
#define CloseHandle fsimw_CloseHandle
#define GetLastError fsimw_GetLastError
#define SetLastError fsimw_SetLastError

/* ioapiset.h. ExistingCompletionPort NULL: a new port; FileHandle INVALID_HANDLE_VALUE: no
 * binding. NumberOfConcurrentThreads is ignored. */
HANDLE WINAPI CreateIoCompletionPort(HANDLE FileHandle, HANDLE ExistingCompletionPort,
                                     ULONG_PTR CompletionKey, DWORD NumberOfConcurrentThreads);
BOOL WINAPI GetQueuedCompletionStatus(HANDLE CompletionPort, LPDWORD lpNumberOfBytesTransferred,
                                      PULONG_PTR lpCompletionKey, LPOVERLAPPED *lpOverlapped,
                                      DWORD dwMilliseconds);
BOOL WINAPI GetQueuedCompletionStatusEx(HANDLE CompletionPort, LPOVERLAPPED_ENTRY lpCompletionPortEntries,
                                        ULONG ulCount, PULONG ulNumEntriesRemoved,
                                        DWORD dwMilliseconds, BOOL fAlertable);
BOOL WINAPI PostQueuedCompletionStatus(HANDLE CompletionPort, DWORD dwNumberOfBytesTransferred,
                                       ULONG_PTR dwCompletionKey, LPOVERLAPPED lpOverlapped);
BOOL WINAPI CancelIoEx(HANDLE hFile, LPOVERLAPPED lpOverlapped);
BOOL WINAPI CancelIo(HANDLE hFile);
BOOL WINAPI GetOverlappedResult(HANDLE hFile, LPOVERLAPPED lpOverlapped,
                                LPDWORD lpNumberOfBytesTransferred, BOOL bWait);

/* synchapi.h. Names must be NULL (no named objects). */
HANDLE WINAPI CreateEventW(LPSECURITY_ATTRIBUTES lpEventAttributes, BOOL bManualReset,
                           BOOL bInitialState, LPCWSTR lpName);
HANDLE WINAPI CreateEventA(LPSECURITY_ATTRIBUTES lpEventAttributes, BOOL bManualReset,
                           BOOL bInitialState, LPCSTR lpName);
BOOL WINAPI SetEvent(HANDLE hEvent);
BOOL WINAPI ResetEvent(HANDLE hEvent);
DWORD WINAPI WaitForSingleObject(HANDLE hHandle, DWORD dwMilliseconds);
DWORD WINAPI WaitForSingleObjectEx(HANDLE hHandle, DWORD dwMilliseconds, BOOL bAlertable);
void WINAPI Sleep(DWORD dwMilliseconds);

/* processthreadsapi.h. dwCreationFlags must be 0; dwStackSize 0 = the default. */
HANDLE WINAPI CreateThread(LPSECURITY_ATTRIBUTES lpThreadAttributes, SIZE_T dwStackSize,
                           LPTHREAD_START_ROUTINE lpStartAddress, LPVOID lpParameter,
                           DWORD dwCreationFlags, LPDWORD lpThreadId);
BOOL WINAPI GetExitCodeThread(HANDLE hThread, LPDWORD lpExitCode);
DWORD WINAPI GetCurrentThreadId(void);

/* handleapi.h, errhandlingapi.h */
BOOL WINAPI CloseHandle(HANDLE hObject);
DWORD WINAPI GetLastError(void);
void WINAPI SetLastError(DWORD dwErrCode);

#ifdef __cplusplus
}
#endif
#endif
