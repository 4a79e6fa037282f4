/* libFuzzer target of the socket transport's frame parser: sk_frame_start and sk_parse_frame
 * (src/fltsim/sock_frame.c), and sk_read_frame, which reassembles frames from records.
 *
 * Input: one selector byte, then either a frame (selector bit 1 clear: parsed as it is) or records
 * (bit 1 set: each a little-endian uint16 length and that many bytes, sent on a SEQPACKET socket
 * pair and read back with sk_read_frame, whose frames are then parsed). Selector bit 0: who sent
 * it (0: the user side, 1: the kernel side). Whatever the parser accepts is walked as the
 * transport walks it, and every pointer it hands out must stay inside the frame.
 *
 *   make fuzz FUZZ_SECONDS=60      (clang -fsanitize=fuzzer,address,undefined)
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "fltsim/sock_proto.h"

#define MUST(cond)              \
    do {                        \
        if (!(cond))            \
            __builtin_trap();   \
    } while (0)

static int inside(const uint8_t *p, size_t n, const uint8_t *buf, size_t len)
{
    return p >= buf && p <= buf + len && n <= (size_t)(buf + len - p);
}

static void walk(const uint8_t *buf, size_t len, enum sk_from from)
{
    uint32_t start = sk_frame_start(buf, len < SK_REC_MAX ? len : SK_REC_MAX);
    if (start)
        MUST(start >= sizeof(sk_hdr) && start <= SK_FRAME_MAX);
    sk_frame f;
    if (sk_parse_frame(buf, len, from, &f) != 0)
        return;
    MUST(f.h.len == len && f.body == buf + sizeof(sk_hdr) && f.body_len == len - sizeof(sk_hdr));
    uint64_t sum = 0;
    size_t off = 0;
    uint32_t n = 0;
    const uint8_t *data;
    switch (f.h.type) {
    case SK_HELLO:
        MUST(from == SK_FROM_USER && f.h.count == SK_MAGIC);
        MUST(f.hello.name_len <= FSIM_MAX_NAME && f.hello.ctx_len <= FSIM_MAX_CONTEXT);
        MUST(inside(f.name, f.hello.name_len, buf, len) && inside(f.ctx, f.hello.ctx_len, buf, len));
        MUST(f.ctx + f.hello.ctx_len == buf + len);
        break;
    case SK_GET:
    case SK_REVOKE:
        MUST(f.h.count >= 1 && f.h.count <= SK_MAX_TAGS);
        for (uint32_t i = 0; i < f.h.count; i++)
            sum += sk_frame_tag(&f, i);
        break;
    case SK_REPLY: {
        uint32_t size;
        while (sk_next_reply(&f, &off, &data, &size)) {
            MUST(inside(data, size, buf, len));
            if (size)
                sum += data[size - 1];
            n++;
        }
        MUST(n == f.h.count && off == f.body_len);
        break;
    }
    case SK_MSGS: {
        sk_msg_ent me;
        while (sk_next_msg(&f, &off, &me, &data)) {
            MUST(inside(data, me.length, buf, len) && me.length <= FSIM_MAX_MESSAGE);
            MUST(me.flags & SK_LAST);
            if (me.length)
                sum += data[me.length - 1];
            n++;
        }
        MUST(n == f.h.count && off == f.body_len);
        break;
    }
    case SK_SEND:
        MUST(f.body_len <= FSIM_MAX_MESSAGE && f.h.count <= FSIM_MAX_MESSAGE);
        break;
    case SK_REPLY_ACK:
        MUST(f.body_len == (size_t)f.h.count * 4);
        break;
    case SK_SEND_ACK:
        MUST(f.body_len == f.h.count);
        break;
    case SK_HELLO_ACK:
    case SK_QUEUED:
    case SK_REVOKE_ACK:
        MUST(f.body_len == 0);
        break;
    default:
        MUST(0); /* the parser accepted a type nobody sends */
    }
    MUST(from == SK_FROM_USER ? f.h.type == SK_HELLO || f.h.type == SK_GET ||
                                    f.h.type == SK_REVOKE || f.h.type == SK_REPLY ||
                                    f.h.type == SK_SEND
                              : f.h.type >= SK_HELLO_ACK && f.h.type != SK_GET &&
                                    f.h.type != SK_REVOKE && f.h.type != SK_REPLY &&
                                    f.h.type != SK_SEND);
    (void)sum;
}

static void through_reader(const uint8_t *p, size_t n, enum sk_from from)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    int big = 1 << 20;
    (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    (void)setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    while (n >= 2) {
        size_t len = (size_t)p[0] | (size_t)p[1] << 8;
        p += 2;
        n -= 2;
        if (len > n)
            len = n;
        if (send(sv[0], p, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
            break; /* the buffer is full: read what is there */
        p += len;
        n -= len;
    }
    (void)shutdown(sv[0], SHUT_WR); /* the reader sees EOF after the last record */
    sk_reader r = {.fd = sv[1], .rest_timeout_ms = 1000};
    sk_hdr *h;
    while (sk_read_frame(&r, &h) == 1) {
        MUST(h->len >= sizeof *h && h->len <= r.cap);
        walk((const uint8_t *)h, h->len, from);
    }
    sk_reader_free(&r);
    close(sv[0]);
    close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum sk_from from = data[0] & 1 ? SK_FROM_KERNEL : SK_FROM_USER;
    if (data[0] & 2) {
        through_reader(data + 1, size - 1, from);
    } else {
        /* a copy of exactly the frame's bytes: ASAN sees any read past its end */
        uint8_t *copy = malloc(size - 1 ? size - 1 : 1);
        memcpy(copy, data + 1, size - 1);
        walk(copy, size - 1, from);
        free(copy);
    }
    return 0;
}
