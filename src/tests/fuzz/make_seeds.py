"""Writes the fuzz target's seed corpus (src/tests/fuzz/corpus): one valid frame of every type,
each sent by its side, given as it is and as records (see fuzz_frame.c for the input format).
Run from anywhere: python3 src/tests/fuzz/make_seeds.py"""
import os
import struct

HDR = struct.Struct("<IHHIiQ")  # len, type, flags, count, hr, req (sock_proto.h's sk_hdr)
(HELLO, HELLO_ACK, GET, REVOKE, REVOKE_ACK, REPLY, REPLY_ACK, SEND, SEND_ACK, MSGS,
 QUEUED) = range(1, 12)
USER, KERNEL = 0, 1


def frame(typ, body=b"", count=0, hr=0, req=0, flags=0):
    return HDR.pack(HDR.size + len(body), typ, flags, count, hr, req) + body


def pad8(b):
    return b + bytes(-len(b) % 8)


def reply_body(payloads):
    return b"".join(struct.pack("<II", len(p), 0) + pad8(p) for p in payloads)


def msgs_body(msgs):
    return b"".join(struct.pack("<QQIIII", tag, mid, rl, len(p), 1, 0) + pad8(p)
                    for tag, mid, rl, p in msgs)


name = "\\ScanPort".encode()
reply = struct.pack("<iIQ", 0, 0, 7) + b"ok"  # FILTER_REPLY_HEADER (16 bytes) + payload
seeds = {
    "hello": (USER, frame(HELLO, struct.pack("<II", len(name), 3) + name + b"ctx",
                          count=0x31505346, hr=2)),
    "get": (USER, frame(GET, struct.pack("<3Q", 1, 2, 3), count=3)),
    "revoke": (USER, frame(REVOKE, struct.pack("<Q", 2), count=1)),
    "reply": (USER, frame(REPLY, reply_body([reply, reply + b"more"]), count=2, req=5)),
    "send": (USER, frame(SEND, b"input bytes", count=64, req=6)),
    "hello_ack": (KERNEL, frame(HELLO_ACK)),
    "revoke_ack": (KERNEL, frame(REVOKE_ACK, count=1, req=2, flags=1)),
    "reply_ack": (KERNEL, frame(REPLY_ACK, struct.pack("<2i", 0, -2147024809), count=2, req=5)),
    "send_ack": (KERNEL, frame(SEND_ACK, b"output", count=6, req=6)),
    "msgs": (KERNEL, frame(MSGS, msgs_body([(1, 10, 24, b"message one"), (3, 11, 0, b"")]),
                           count=2, flags=1)),
    "queued": (KERNEL, frame(QUEUED)),
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(out, exist_ok=True)
for label, (side, f) in seeds.items():
    with open(os.path.join(out, label), "wb") as fh:
        fh.write(bytes([side]) + f)
    # the same frame as records: its first 24 bytes, then the rest, then a second copy whole
    recs = [f[:24], f[24:], f]
    with open(os.path.join(out, label + "-records"), "wb") as fh:
        fh.write(bytes([side | 2]) + b"".join(struct.pack("<H", len(r)) + r for r in recs))
