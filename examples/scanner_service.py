"""A scanner service: the user-mode half of Microsoft's scanner minifilter sample, on fastport.

The kernel side sends a SCANNER_NOTIFICATION for every file to scan; the service answers each
with a SCANNER_REPLY saying whether the file is safe to open. Try it against the test driver,
which plays the minifilter (two terminals):

    fastport driver --port '\\ScannerPort' --protocol scanner --seconds 10
    python examples/scanner_service.py --port '\\ScannerPort'

The scanner protocol:
  message  SCANNER_NOTIFICATION {ULONG BytesToScan; ULONG Reserved; UCHAR Contents[1024]}
           (1032 bytes after the 16-byte FILTER_MESSAGE_HEADER)
  reply    SCANNER_REPLY {BOOLEAN SafeToOpen} (1 byte after the 16-byte FILTER_REPLY_HEADER):
           0 when Contents[:BytesToScan] holds the bytes b"foul", else 1
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import numpy as np

import fastport
from fastport.dtypes import SCANNER_NOTIFICATION, SCANNER_REPLY

FOUL = np.frombuffer(b"foul", dtype=np.uint8)


def holds_foul(contents: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """For each row of `contents` ((n, 1024) uint8): does b"foul" start within its first
    `lengths` bytes (and end inside them)?"""
    hit = ((contents[:, :-3] == FOUL[0]) & (contents[:, 1:-2] == FOUL[1])
           & (contents[:, 2:-1] == FOUL[2]) & (contents[:, 3:] == FOUL[3]))
    starts = np.arange(contents.shape[1] - 3)
    hit &= starts < (lengths[:, None].astype(np.int64) - 3)
    return hit.any(axis=1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="A scanner service on fastport's pump.")
    p.add_argument("--port", default="\\ScannerPort", help="the communication port's name")
    p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the port to exist (the driver to start)")
    p.add_argument("--threads", type=int, default=2, help="the pump's C worker threads")
    a = p.parse_args(argv)

    try:
        port = fastport.connect(a.port, wait=a.wait)  # FilterConnectCommunicationPort
    except fastport.PortNotFound:
        print(f"scanner service: no port {a.port!r} appeared within {a.wait:g} s",
              file=sys.stderr)
        return 1
    print(f"scanner service: connected to {a.port!r}", flush=True)

    answered = 0
    with port, fastport.Pump(port, message=SCANNER_NOTIFICATION, reply=SCANNER_REPLY,
                             threads=a.threads, default_reply=b"\x01") as pump:
        try:
            for batch in pump:
                m = batch.messages  # zero-copy views of the received SCANNER_NOTIFICATIONs
                batch.replies["SafeToOpen"] = ~holds_foul(m["Contents"], m["BytesToScan"])
                batch.reply()  # C sends one FILTER_REPLY_HEADER + SCANNER_REPLY per message
                answered += len(batch)
        except fastport.PortDisconnected:
            pass  # the kernel side closed the port: the driver is done
        except KeyboardInterrupt:
            pass
    print(f"scanner service: answered {answered:,} messages", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
