"""The two protocols the test driver speaks, as dtypes plus reference handlers.

bench (src/protocols/bench.h): message = {u32 sender, u32 seq, u32 length, u32 marker, u8 data[]},
`length` payload bytes in all; reply = {u32 checksum, u32 verdict} where checksum is
sum((i+1) * w[i]) mod 2**32 over the payload's little-endian 32-bit words (zero-padded) and
verdict = 1 when the low byte of `marker` is 0x42 ("infected"), else 0. A lost, duplicated or
misrouted reply does not match its message, so the driver counts it in bad_replies.

scanner (Microsoft's scanner sample): SCANNER_NOTIFICATION -> SCANNER_REPLY; SafeToOpen is 0
when Contents[:BytesToScan] holds b"foul".

Each protocol has a batch handler (numpy over a whole Batch: what the pump runs), a per-message
handler (one record at a time), and `reply_for(payload: bytes) -> bytes` (plain Python).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fastport.dtypes import SCANNER_NOTIFICATION, SCANNER_REPLY, struct

__all__ = ["Protocol", "BENCH_HEADER_SIZE", "BENCH_REPLY", "BENCH_MARKER", "bench", "scanner",
           "get"]

BENCH_HEADER_SIZE = 16
BENCH_MARKER = 0x42
BENCH_REPLY = struct([("checksum", "uint32_t"), ("verdict", "uint32_t")], name="BENCH_REPLY")
_FOUL = np.frombuffer(b"foul", dtype=np.uint8)


def bench_message(payload: int) -> np.dtype:
    """The bench message dtype for payloads of at most `payload` bytes (rounded up to 4)."""
    if payload < BENCH_HEADER_SIZE:
        raise ValueError(f"bench payload must be >= {BENCH_HEADER_SIZE} bytes, got {payload}")
    size = (payload + 3) // 4 * 4
    return struct([("sender", "uint32_t"), ("seq", "uint32_t"), ("length", "uint32_t"),
                   ("marker", "uint32_t"), ("data", "uint8_t", size - BENCH_HEADER_SIZE)],
                  name="BENCH_MESSAGE")


class Protocol:
    """A protocol's dtypes and handlers for messages of at most `payload` bytes."""

    name: str
    message: np.dtype
    reply: np.dtype

    def batch_handler(self) -> Callable[[Any], None]:
        raise NotImplementedError

    def record_handler(self) -> Callable[[Any], Any]:
        raise NotImplementedError

    def reply_for(self, payload: bytes) -> bytes:
        raise NotImplementedError


class _Bench(Protocol):
    name = "bench"
    reply = BENCH_REPLY

    def __init__(self, payload: int = 1024) -> None:
        self.message = bench_message(payload)
        self.weights = np.arange(1, self.message.itemsize // 4 + 1, dtype=np.uint32)

    def batch_handler(self) -> Callable[[Any], None]:
        weights = self.weights
        u4 = np.dtype("<u4")

        def handle(batch: Any) -> None:
            words = batch.payload.view(u4)
            replies = batch.replies
            replies["checksum"] = (words * weights).sum(axis=1, dtype=np.uint32)
            replies["verdict"] = (batch.messages["marker"] & 0xFF) == BENCH_MARKER
            batch.reply()

        return handle

    def record_handler(self) -> Callable[[Any], Any]:
        weights = self.weights
        reply = np.zeros((), dtype=self.reply)

        def handle(record: Any) -> Any:
            words = np.frombuffer(record.tobytes(), dtype="<u4")
            reply["checksum"] = (words * weights).sum(dtype=np.uint32)
            reply["verdict"] = (int(record["marker"]) & 0xFF) == BENCH_MARKER
            return reply

        return handle

    def reply_for(self, payload: bytes) -> bytes:
        padded = payload + bytes(-len(payload) % 4)
        words = np.frombuffer(padded, dtype="<u4")
        checksum = (words * self.weights[: len(words)]).sum(dtype=np.uint32)
        marker = int.from_bytes(payload[12:16], "little")
        return np.array([(checksum, (marker & 0xFF) == BENCH_MARKER)], dtype=self.reply).tobytes()


def _has_foul(contents: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Rows of `contents` (n, 1024 uint8) whose first `lengths` bytes contain b"foul"."""
    hit = ((contents[:, :-3] == _FOUL[0]) & (contents[:, 1:-2] == _FOUL[1])
           & (contents[:, 2:-1] == _FOUL[2]) & (contents[:, 3:] == _FOUL[3]))
    hit &= np.arange(contents.shape[1] - 3) < (lengths[:, None].astype(np.int64) - 3)
    return hit.any(axis=1)


class _Scanner(Protocol):
    name = "scanner"
    message = SCANNER_NOTIFICATION
    reply = SCANNER_REPLY

    def batch_handler(self) -> Callable[[Any], None]:
        def handle(batch: Any) -> None:
            m = batch.messages
            batch.replies["SafeToOpen"] = ~_has_foul(m["Contents"], m["BytesToScan"])
            batch.reply()

        return handle

    def record_handler(self) -> Callable[[Any], Any]:
        def handle(record: Any) -> Any:
            n = int(record["BytesToScan"])
            return b"\x00" if b"foul" in record["Contents"].tobytes()[:n] else b"\x01"

        return handle

    def reply_for(self, payload: bytes) -> bytes:
        n = int.from_bytes(payload[:4], "little")
        return b"\x00" if b"foul" in payload[8:8 + n] else b"\x01"


def bench(payload: int = 1024) -> Protocol:
    return _Bench(payload)


def scanner(payload: int = 1032) -> Protocol:
    return _Scanner()


def get(name: str, payload: int) -> Protocol:
    """The protocol called `name` ("bench" or "scanner") for payloads up to `payload` bytes."""
    if name == "bench":
        return bench(payload)
    if name == "scanner":
        return scanner(payload)
    raise ValueError(f"unknown protocol {name!r}: expected 'bench' or 'scanner'")
