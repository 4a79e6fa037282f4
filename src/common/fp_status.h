/* NTSTATUS and HRESULT values used by fastport (Filter Manager communication ports).
 * One source of truth for C; fastport/status.py mirrors it and tests/test_status.py checks that
 * they agree. Prefixed FP_ so the names never clash with <windows.h> / <ntstatus.h>. */
#ifndef FP_STATUS_H
#define FP_STATUS_H
#include <stdint.h>

typedef int32_t fp_ntstatus;
typedef int32_t fp_hresult;

#define FP_CODE(x) ((int32_t)(uint32_t)(x))

/* NTSTATUS (kernel side) */
#define FP_STATUS_SUCCESS                FP_CODE(0x00000000u)
#define FP_STATUS_TIMEOUT                FP_CODE(0x00000102u) /* a success code */
#define FP_STATUS_BUFFER_OVERFLOW        FP_CODE(0x80000005u) /* a warning: NT_SUCCESS is false */
#define FP_STATUS_INVALID_HANDLE         FP_CODE(0xC0000008u)
#define FP_STATUS_INVALID_PARAMETER      FP_CODE(0xC000000Du)
#define FP_STATUS_ACCESS_DENIED          FP_CODE(0xC0000022u)
#define FP_STATUS_OBJECT_NAME_INVALID    FP_CODE(0xC0000033u)
#define FP_STATUS_OBJECT_NAME_NOT_FOUND  FP_CODE(0xC0000034u)
#define FP_STATUS_OBJECT_NAME_COLLISION  FP_CODE(0xC0000035u)
#define FP_STATUS_PORT_DISCONNECTED      FP_CODE(0xC0000037u)
#define FP_STATUS_INSUFFICIENT_RESOURCES FP_CODE(0xC000009Au)
#define FP_STATUS_CONNECTION_COUNT_LIMIT FP_CODE(0xC0000246u)

#define FP_NT_SUCCESS(s) ((int32_t)(s) >= 0)

/* HRESULT (user side). HRESULT_FROM_WIN32(e) = 0x80070000 | e. */
#define FP_S_OK                          FP_CODE(0x00000000u)
#define FP_E_FILE_NOT_FOUND              FP_CODE(0x80070002u) /* ERROR_FILE_NOT_FOUND */
#define FP_E_ACCESSDENIED                FP_CODE(0x80070005u) /* E_ACCESSDENIED */
#define FP_E_INVALID_HANDLE              FP_CODE(0x80070006u) /* ERROR_INVALID_HANDLE: port disconnected */
#define FP_E_OUTOFMEMORY                 FP_CODE(0x8007000Eu) /* E_OUTOFMEMORY */
#define FP_E_INVALIDARG                  FP_CODE(0x80070057u) /* E_INVALIDARG */
#define FP_E_INSUFFICIENT_BUFFER         FP_CODE(0x8007007Au) /* ERROR_INSUFFICIENT_BUFFER */
#define FP_E_FILENAME_EXCED_RANGE        FP_CODE(0x800700CEu) /* ERROR_FILENAME_EXCED_RANGE */
#define FP_E_OPERATION_ABORTED           FP_CODE(0x800703E3u) /* ERROR_OPERATION_ABORTED */
#define FP_E_IO_PENDING                  FP_CODE(0x800703E5u) /* ERROR_IO_PENDING */
#define FP_E_NOT_FOUND                   FP_CODE(0x80070490u) /* ERROR_NOT_FOUND: nothing to cancel */
#define FP_E_CONNECTION_COUNT_LIMIT      FP_CODE(0x800704D6u) /* ERROR_CONNECTION_COUNT_LIMIT */
#define FP_E_TIMEOUT                     FP_CODE(0x800705B4u) /* ERROR_TIMEOUT (emulator: a get's own timeout) */
#define FP_E_FLT_NO_WAITER_FOR_REPLY     FP_CODE(0x801F0020u) /* ERROR_FLT_NO_WAITER_FOR_REPLY */

#define FP_SUCCEEDED(hr) ((int32_t)(hr) >= 0)

#endif
