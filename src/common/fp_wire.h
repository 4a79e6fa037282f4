/* The Filter Manager's wire structs (x64 layout, natural alignment), as both sides of a
 * communication port see them. Prefixed FP_ so they never clash with <fltuserstructures.h>; the
 * emulator's Win32 face (src/fltsim/win32/fltuser.h) gives them their Windows names. */
#ifndef FP_WIRE_H
#define FP_WIRE_H
#include <stdint.h>

typedef struct FP_MESSAGE_HEADER {
    uint32_t ReplyLength; /* bytes accepted in the reply INCLUDING the 16-byte reply header; 0 = none */
    uint32_t _pad;
    uint64_t MessageId;
} FP_MESSAGE_HEADER;

typedef struct FP_REPLY_HEADER {
    int32_t  Status;      /* handed to the sender beside the call's own NTSTATUS (emulator's choice) */
    uint32_t _pad;
    uint64_t MessageId;
} FP_REPLY_HEADER;

#define FP_MESSAGE_HEADER_SIZE 16u
#define FP_REPLY_HEADER_SIZE 16u
_Static_assert(sizeof(FP_MESSAGE_HEADER) == FP_MESSAGE_HEADER_SIZE, "FILTER_MESSAGE_HEADER is 16 bytes");
_Static_assert(sizeof(FP_REPLY_HEADER) == FP_REPLY_HEADER_SIZE, "FILTER_REPLY_HEADER is 16 bytes");

#endif
