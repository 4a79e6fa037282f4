"""fanotify permission events served by the same Pump as communication ports (Linux).

    import fastport, fastport.fanotify as fan
    with fan.open(["/srv/share"]) as port, fastport.Pump(
            port, message=port.message, reply=port.reply, default_reply=port.default_reply,
            deadline=2.0) as pump:
        for batch in pump:
            batch.replies["verdict"] = verdicts(batch.messages)  # fan.ALLOW / fan.DENY
            batch.reply()

Each message carries the event `mask`, its `id`, the opening process's `pid`, the event's `fd`
(open in this process, readable with os.pread, until the event is answered: keep no use of it
past the reply) and, with `resolve_paths`, the file's `path` (NUL-padded bytes, resolved in C).

Fail open. An event nobody answers in time (the pump's `deadline`), that a raising handler
leaves, that overflows the pump's slab, or that is pending when the pump stops gets
`port.default_reply`: ALLOW unless `on_overflow="deny"`. Pass it to the Pump as above. A zeroed
reply also allows (a Pump made without default_reply fails open too), as clamonacc and the
Windows scanner sample do: an on-access scanner that falls behind must not take the machine down.
Falling behind is answered at once, not queued: a pump serving the port answers what finds its
slab full with default_reply (its `on_full` is "default", deadline or not), and with the fd
budget spent the backend answers in C with the on_overflow verdict (`port.stats["overflowed"]`).

The process serving the group never waits on itself: its own events (and those of `exclude_pids`,
`exclude_uids`) are allowed in C before any slot or Python sees them, so the handler can open
the file it is asked about.
"""
from __future__ import annotations

import errno as _errno
import os as _os
from typing import Iterable, Optional, Union

import numpy as np

from fastport._ext import FanotifyPort, _fan_open

__all__ = ["open", "FanotifyPort", "ALLOW", "DENY", "AUDIT", "EVENTS", "message_dtype", "REPLY"]

ALLOW = 0x01   # FAN_ALLOW
DENY = 0x02    # FAN_DENY (with deny_errno: FAN_DENY_ERRNO(deny_errno))
AUDIT = 0x10   # FAN_AUDIT, or-ed into a verdict: an audit record (open(..., audit=True))

# Newer than some distributions' headers: defined here, support found at open().
_FAN_PRE_ACCESS = 0x00100000
EVENTS = {
    "open_perm": 0x00010000,       # FAN_OPEN_PERM
    "access_perm": 0x00020000,     # FAN_ACCESS_PERM
    "open_exec_perm": 0x00040000,  # FAN_OPEN_EXEC_PERM
    "pre_access": _FAN_PRE_ACCESS,  # FAN_PRE_ACCESS (pre-content groups; not on tmpfs)
}
_MARKS = {"inode": 0x0, "mount": 0x10, "filesystem": 0x100}
_FAN_EVENT_ON_CHILD = 0x08000000
_FAN_CLOEXEC, _FAN_NONBLOCK = 0x1, 0x2
_FAN_CLASS_CONTENT, _FAN_CLASS_PRE_CONTENT = 0x4, 0x8
_FAN_ENABLE_AUDIT = 0x40
# errnos a pre-content group may deny with (the kernel refuses others, EACCES among them)
DENY_ERRNOS = frozenset({_errno.EPERM, _errno.EIO, _errno.EBUSY, _errno.ETXTBSY,
                         _errno.EAGAIN, _errno.ENOSPC, _errno.EDQUOT})

REPLY = np.dtype([("verdict", "<u4")])


def message_dtype(path_bytes: int = 0) -> np.dtype:
    """The message dtype (src/backends/fanotify.h fp_fan_message), with a `path` field of
    `path_bytes` bytes when path_bytes > 0."""
    fields = [("mask", "<u8"), ("id", "<u8"), ("pid", "<i4"), ("fd", "<i4")]
    if path_bytes:
        fields.append(("path", f"S{path_bytes}"))
    return np.dtype(fields)


def open(paths: Union[str, _os.PathLike, Iterable[Union[str, _os.PathLike]]], *,
         events: Iterable[str] = ("open_perm",), mark: str = "inode", exclude_self: bool = True,
         exclude_pids: Iterable[int] = (), exclude_uids: Iterable[int] = (),
         resolve_paths: bool = False, deny_errno: Optional[int] = None,
         on_overflow: str = "allow", audit: bool = False, path_bytes: int = 4096,
         fd_budget: Optional[int] = None) -> FanotifyPort:
    """A fanotify group with permission events on `paths`, for a Pump (see the module doc).

    events: names from EVENTS. mark: "inode" (each path; a directory's direct children too),
    "mount" or "filesystem" (everything on the path's mount or filesystem). exclude_self: allow
    this process's events in C (leave it True unless you know why). resolve_paths: fill the
    message's `path` (up to path_bytes) from /proc/self/fd in the worker thread. deny_errno: the
    errno a DENY makes open() fail with (one of DENY_ERRNOS; needs a pre-content group, so a
    kernel with FAN_DENY_ERRNO, 6.14+); default EPERM. on_overflow: "allow" or "deny", the
    port's default_reply (see the module doc). audit: FAN_ENABLE_AUDIT (verdicts may carry
    AUDIT). fd_budget: most event fds held at once (None: half of RLIMIT_NOFILE).

    Every argument and path is checked before the group is made: a missing path raises
    FileNotFoundError naming it, an unknown event or mark ValueError. Without CAP_SYS_ADMIN:
    PermissionError naming the capability. A mark the kernel refuses (pre_access on tmpfs, say)
    raises OSError naming the path and the event; no mark is left behind."""
    if isinstance(paths, (str, bytes, _os.PathLike)):
        paths = [paths]
    plist = tuple(_os.fspath(p) for p in paths)
    if not plist:
        raise ValueError("no paths to mark")
    for p in plist:
        if not _os.path.exists(p):
            raise FileNotFoundError(_errno.ENOENT, "no such file or directory to mark", p)
    if isinstance(events, str):
        events = (events,)
    mask = 0
    for ev in events:
        if ev not in EVENTS:
            raise ValueError(f"unknown fanotify event {ev!r}: expected one of {sorted(EVENTS)}")
        mask |= EVENTS[ev]
    if not mask:
        raise ValueError("no events asked for")
    if mark not in _MARKS:
        raise ValueError(f"unknown mark {mark!r}: expected 'inode', 'mount' or 'filesystem'")
    if on_overflow not in ("allow", "deny"):
        raise ValueError(f"on_overflow must be 'allow' or 'deny', not {on_overflow!r}")
    if deny_errno is not None and deny_errno not in DENY_ERRNOS:
        raise ValueError(f"deny_errno {deny_errno!r} is not one the kernel accepts: "
                         f"{sorted(_errno.errorcode[e] for e in DENY_ERRNOS)}")
    if not 0 <= int(path_bytes) <= 65536:
        raise ValueError(f"path_bytes must be between 0 and 65536, got {path_bytes}")
    pids = np.array(list(exclude_pids), dtype="<i4").tobytes()
    uids = np.array(list(exclude_uids), dtype="<u4").tobytes()
    pre = deny_errno is not None or bool(mask & _FAN_PRE_ACCESS)
    flags = (_FAN_CLASS_PRE_CONTENT if pre else _FAN_CLASS_CONTENT) | _FAN_CLOEXEC | _FAN_NONBLOCK
    if audit:
        flags |= _FAN_ENABLE_AUDIT
    if mark == "inode":
        mask |= _FAN_EVENT_ON_CHILD
    pb = int(path_bytes) if resolve_paths else 0
    default = np.zeros((), REPLY)
    default["verdict"] = ALLOW if on_overflow == "allow" else DENY
    try:
        return _fan_open(plist, flags, mask, _MARKS[mark], message_dtype(pb), REPLY,
                         default.tobytes(), bool(exclude_self), pids, uids, pb,
                         int(deny_errno or 0), int(fd_budget or 0), int(default["verdict"]))
    except PermissionError:
        raise
    except OSError as e:
        if e.errno in (_errno.EINVAL, _errno.EOPNOTSUPP) and pre:
            raise OSError(e.errno, f"{e.strerror}: this kernel or filesystem does not offer "
                          "pre-content events (pre_access, deny_errno)", *e.args[2:]) from e
        raise
