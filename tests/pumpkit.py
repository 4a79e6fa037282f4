"""What the pump suites share: the message and reply dtypes the emulated senders use, the reply
each message expects, a handler that gives it, and a call run on a thread of its own."""
import struct
import threading

import numpy as np

MSG = np.dtype([("sender", "<u4"), ("seq", "<u4"), ("pad", "u1", 56)])
REP = np.dtype([("a", "<u4"), ("b", "<u4")])
DEFAULT = struct.pack("<II", 0xD0D0, 0xF00D)


def expected(sender, seq):
    return struct.pack("<II", sender * 7 + 1, seq ^ 0x5A5A5A5A)


def good_handler(batch):
    batch.replies["a"] = batch.messages["sender"] * 7 + 1
    batch.replies["b"] = batch.messages["seq"] ^ 0x5A5A5A5A
    batch.reply()


def in_thread(fn, *args, **kw):
    """Runs fn(*args, **kw) on a daemon thread; returns (thread, box): once joined, box holds
    "value" or "error" (the exception it raised)."""
    box = {}

    def target():
        try:
            box["value"] = fn(*args, **kw)
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box
