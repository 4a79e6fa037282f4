/* Wire structs of Microsoft's scanner minifilter sample (scanuk.h): the payload of each message
 * (after FP_MESSAGE_HEADER) and of each reply (after FP_REPLY_HEADER). The sample packs them to
 * 1 byte, so a message is 16 + 1032 = 1048 bytes and a reply 16 + 1 = 17 bytes (padding rule).
 * fastport/dtypes.py mirrors them; tests/test_dtypes.py checks the two agree. */
#ifndef FP_PROTOCOLS_SCANNER_H
#define FP_PROTOCOLS_SCANNER_H

#include <stdint.h>

#define SCANNER_READ_BUFFER_SIZE 1024

#pragma pack(push, 1)

typedef struct SCANNER_NOTIFICATION {
    uint32_t BytesToScan;                       /* valid bytes in Contents */
    uint32_t Reserved;                          /* keeps Contents 8-byte aligned in the sample */
    uint8_t  Contents[SCANNER_READ_BUFFER_SIZE];
} SCANNER_NOTIFICATION;

typedef struct SCANNER_REPLY {
    uint8_t SafeToOpen;                         /* BOOLEAN: 0 = block the open */
} SCANNER_REPLY;

#pragma pack(pop)

#endif
