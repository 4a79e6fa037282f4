/* Wire structs and expected answers of the two protocols the load-generating test driver
 * (src/driver) speaks, shared by the driver, the C reference client (src/cref), the tests and
 * (through fastport/includes/driver.pxd) the Python layer.
 *
 * bench (fastport's own synthetic protocol)
 *   message payload (after FP_MESSAGE_HEADER), little-endian, natural alignment:
 *     BENCH_MESSAGE { uint32 sender; uint32 seq; uint32 length; uint32 marker; uint8 data[]; }
 *     length = payload bytes INCLUDING these 16; 16 <= length <= FSIM_MAX_MESSAGE.
 *   reply payload: BENCH_REPLY { uint32 checksum; uint32 verdict; } (8 bytes; the reply sent is
 *     16 + 8 bytes by the padding rule).
 *   checksum = sum over i of (i+1) * w[i] mod 2^32, w[i] = the i-th little-endian 32-bit word of
 *     the first `length` payload bytes zero-padded to a multiple of 4. Zero words add nothing, so
 *     the same value comes out of any zero-padded longer buffer (the pump zeroes a slot's tail).
 *   verdict = ((marker & 0xFF) == BENCH_MARKER_INFECTED) ? 1 : 0.
 *
 * scanner (Microsoft's scanner minifilter sample, scanner.h)
 *   message payload SCANNER_NOTIFICATION (1032 bytes, pack 1), reply SCANNER_REPLY (1 byte).
 *   SafeToOpen = 0 if Contents[0 .. min(BytesToScan, 1024)) contains the bytes "foul", else 1.
 */
#ifndef FP_PROTOCOLS_BENCH_H
#define FP_PROTOCOLS_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "scanner.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct BENCH_MESSAGE {
    uint32_t sender;  /* sender thread index */
    uint32_t seq;     /* per-sender sequence number */
    uint32_t length;  /* payload bytes including these 16 */
    uint32_t marker;  /* low byte BENCH_MARKER_INFECTED = "infected" */
    uint8_t data[];
} BENCH_MESSAGE;

typedef struct BENCH_REPLY {
    uint32_t checksum;
    uint32_t verdict; /* 1 = infected */
} BENCH_REPLY;

_Static_assert(sizeof(BENCH_MESSAGE) == 16, "BENCH_MESSAGE header is 16 bytes");
_Static_assert(sizeof(BENCH_REPLY) == 8, "BENCH_REPLY is 8 bytes");
_Static_assert(sizeof(SCANNER_NOTIFICATION) == 1032, "SCANNER_NOTIFICATION is 1032 bytes");
_Static_assert(sizeof(SCANNER_REPLY) == 1, "SCANNER_REPLY is 1 byte");

#define BENCH_HEADER_BYTES 16u
#define BENCH_MARKER_INFECTED 0x42u
#define SCANNER_FOUL "foul"

/* Protocol ids (fp_driver_config.protocol, fp_cref_start). */
enum fp_protocol {
    FP_PROTO_BENCH = 0,
    FP_PROTO_SCANNER = 1,
};

/* Payload bytes of a reply (after FP_REPLY_HEADER). */
static inline uint32_t fp_protocol_reply_size(int protocol)
{
    return protocol == FP_PROTO_SCANNER ? (uint32_t)sizeof(SCANNER_REPLY)
                                        : (uint32_t)sizeof(BENCH_REPLY);
}

static inline uint32_t bench_load_le32(const uint8_t *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap32(w);
#endif
    return w;
}

/* sum (i+1) * w[i] mod 2^32 over the first `length` bytes, zero-padded to whole words. */
static inline uint32_t bench_checksum(const void *payload, uint32_t length)
{
    const uint8_t *p = (const uint8_t *)payload;
    uint32_t full = length / 4u, rem = length % 4u;
    /* Four independent lanes keep the multiply-adds pipelined. */
    uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    uint32_t i = 0;
    for (; i + 4u <= full; i += 4u) {
        a0 += (i + 1u) * bench_load_le32(p + 4u * i);
        a1 += (i + 2u) * bench_load_le32(p + 4u * i + 4u);
        a2 += (i + 3u) * bench_load_le32(p + 4u * i + 8u);
        a3 += (i + 4u) * bench_load_le32(p + 4u * i + 12u);
    }
    for (; i < full; i++)
        a0 += (i + 1u) * bench_load_le32(p + 4u * i);
    if (rem) {
        uint8_t last[4] = {0, 0, 0, 0};
        memcpy(last, p + 4u * full, rem);
        a0 += (full + 1u) * bench_load_le32(last);
    }
    return a0 + a1 + a2 + a3;
}

static inline uint32_t bench_verdict(uint32_t marker)
{
    return (marker & 0xFFu) == BENCH_MARKER_INFECTED ? 1u : 0u;
}

/* The reply a correct service gives to m (m->length bytes of payload must be readable). */
static inline void bench_expected_reply(const BENCH_MESSAGE *m, BENCH_REPLY *out)
{
    out->checksum = bench_checksum(m, m->length);
    out->verdict = bench_verdict(m->marker);
}

/* Index of the first "foul" in p[0..n), or -1. */
static inline long scanner_find_foul(const uint8_t *p, size_t n)
{
    if (n < 4)
        return -1;
    const uint8_t *end = p + n - 3; /* last possible start + 1 */
    const uint8_t *q = p;
    while (q < end) {
        q = (const uint8_t *)memchr(q, 'f', (size_t)(end - q));
        if (!q)
            return -1;
        if (q[1] == 'o' && q[2] == 'u' && q[3] == 'l')
            return (long)(q - p);
        q++;
    }
    return -1;
}

/* The reply a correct service gives to m: SafeToOpen = 0 iff "foul" is in the scanned bytes. */
static inline void scanner_expected_reply(const SCANNER_NOTIFICATION *m, SCANNER_REPLY *out)
{
    uint32_t n = m->BytesToScan < SCANNER_READ_BUFFER_SIZE ? m->BytesToScan
                                                           : SCANNER_READ_BUFFER_SIZE;
    out->SafeToOpen = scanner_find_foul(m->Contents, n) < 0 ? 1u : 0u;
}

#ifdef __cplusplus
}
#endif
#endif
