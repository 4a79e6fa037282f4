/* The socket transport's frame parser: bytes in, a checked frame (or a refusal) out. Pure functions
 * without I/O or state, so that everything a peer controls is checked in one place, and so that a
 * fuzzer can drive it (src/tests/fuzz/fuzz_frame.c). See sock_proto.h for the frames. */
#include <errno.h>
#include <string.h>
#include "sock_proto.h"

uint32_t sk_frame_start(const void *rec, size_t n)
{
    sk_hdr h;
    if (n < sizeof h || n > SK_REC_MAX)
        return 0;
    memcpy(&h, rec, sizeof h);
    if (h.len < sizeof h || h.len > SK_FRAME_MAX || h.len < n)
        return 0;
    return h.len;
}

/* Walks the entries of a REPLY (msgs 0) or MSGS (msgs 1) body: each a fixed entry, then its bytes
 * padded to 8, exactly filling the body. */
static int entries_ok(const sk_frame *f, int msgs)
{
    size_t off = 0, n = f->body_len;
    for (uint32_t i = 0; i < f->h.count; i++) {
        uint32_t len;
        if (msgs) {
            sk_msg_ent me;
            if (n - off < sizeof me)
                return 0;
            memcpy(&me, f->body + off, sizeof me);
            if (me.length > FSIM_MAX_MESSAGE || !(me.flags & SK_LAST))
                return 0; /* every get is one credit: its message closes it */
            len = me.length;
            off += sizeof me;
        } else {
            sk_reply_ent re;
            if (n - off < sizeof re)
                return 0;
            memcpy(&re, f->body + off, sizeof re);
            len = re.size;
            off += sizeof re;
        }
        if (SK_ALIGN8((size_t)len) > n - off)
            return 0;
        off += SK_ALIGN8((size_t)len);
    }
    return off == n;
}

static int user_frame_ok(sk_frame *f)
{
    const sk_hdr *h = &f->h;
    switch (h->type) {
    case SK_HELLO:
        if (h->count != SK_MAGIC || f->body_len < sizeof f->hello)
            return 0;
        memcpy(&f->hello, f->body, sizeof f->hello);
        if (f->hello.name_len > FSIM_MAX_NAME || f->hello.ctx_len > FSIM_MAX_CONTEXT ||
            (size_t)f->hello.name_len + f->hello.ctx_len != f->body_len - sizeof f->hello)
            return 0;
        f->name = f->body + sizeof f->hello;
        f->ctx = f->name + f->hello.name_len;
        return 1;
    case SK_GET:
    case SK_REVOKE:
        return h->count != 0 && h->count <= SK_MAX_TAGS &&
               f->body_len == (size_t)h->count * sizeof(uint64_t);
    case SK_REPLY:
        return h->count != 0 && h->count <= f->body_len / sizeof(sk_reply_ent) &&
               entries_ok(f, 0);
    case SK_SEND: /* body: the input; count: the output buffer's size */
        return f->body_len <= FSIM_MAX_MESSAGE && h->count <= FSIM_MAX_MESSAGE;
    default:
        return 0;
    }
}

static int kernel_frame_ok(const sk_frame *f)
{
    const sk_hdr *h = &f->h;
    switch (h->type) {
    case SK_HELLO_ACK:
    case SK_QUEUED:
        return f->body_len == 0;
    case SK_REVOKE_ACK:
        return f->body_len == 0 && h->count <= 1;
    case SK_MSGS:
        return h->count <= f->body_len / sizeof(sk_msg_ent) && entries_ok(f, 1);
    case SK_REPLY_ACK:
        return f->body_len == (size_t)h->count * sizeof(int32_t);
    case SK_SEND_ACK:
        return h->count <= FSIM_MAX_MESSAGE && f->body_len == h->count;
    default:
        return 0;
    }
}

int sk_parse_frame(const void *buf, size_t len, enum sk_from from, sk_frame *f)
{
    memset(f, 0, sizeof *f);
    if (len < sizeof f->h || len > SK_FRAME_MAX)
        goto bad;
    memcpy(&f->h, buf, sizeof f->h);
    if (f->h.len != len)
        goto bad;
    f->body = (const uint8_t *)buf + sizeof f->h;
    f->body_len = len - sizeof f->h;
    if (from == SK_FROM_USER ? user_frame_ok(f) : kernel_frame_ok(f))
        return 0;
bad:
    errno = EPROTO;
    return -1;
}

uint64_t sk_frame_tag(const sk_frame *f, uint32_t i)
{
    uint64_t tag;
    memcpy(&tag, f->body + (size_t)i * sizeof tag, sizeof tag);
    return tag;
}

int sk_next_reply(const sk_frame *f, size_t *off, const uint8_t **data, uint32_t *size)
{
    sk_reply_ent re;
    if (*off >= f->body_len)
        return 0;
    memcpy(&re, f->body + *off, sizeof re);
    *data = f->body + *off + sizeof re;
    *size = re.size;
    *off += sizeof re + SK_ALIGN8((size_t)re.size);
    return 1;
}

int sk_next_msg(const sk_frame *f, size_t *off, sk_msg_ent *ent, const uint8_t **data)
{
    if (*off >= f->body_len)
        return 0;
    memcpy(ent, f->body + *off, sizeof *ent);
    *data = f->body + *off + sizeof *ent;
    *off += sizeof *ent + SK_ALIGN8((size_t)ent->length);
    return 1;
}
