"""numpy structured dtypes for Filter Manager messages, and a C-like way to declare payloads.

A message buffer is ``FILTER_MESSAGE_HEADER`` followed by the payload at offset 16; a reply buffer
is ``FILTER_REPLY_HEADER`` followed by the payload at offset 16. Sizes follow the padding rule:
``sizeof(FILTER_REPLY_HEADER) + sizeof(payload)``, never the size of a struct combining the two
(see :func:`reply_size`).

:func:`struct` lays out a payload the way a C compiler does, with natural alignment or with
``#pragma pack(N)``, so that a dtype and the C struct of the minifilter agree byte for byte::

    SCANNER_NOTIFICATION = struct(
        [("BytesToScan", "ULONG"), ("Reserved", "ULONG"), ("Contents", "UCHAR", 1024)], pack=1
    )

Every dtype built here carries ``metadata = {"pack": N or None, "name": str or None}``.

Microsoft's two minifilter samples (Windows-driver-samples, filesys/miniFilter) come ready made,
as :class:`Sample` records with the port name, the message and reply payloads, and the sizes a
service passes to the Filter Manager, so a service for an existing minifilter built on them
needs no layout of its own:

    SCANNER  scanner: ``\\ScannerPort``, SCANNER_NOTIFICATION (1032 bytes) -> SCANNER_REPLY
             (BOOLEAN SafeToOpen: a reply of 16 + 1 = 17 bytes, the sample packs it to 1)
    AVSCAN   avscan: ``\\MicrosoftAvSampleFilterScanPort``, AV_SCANNER_NOTIFICATION (24 bytes)
             -> AV_SCANNER_REPLY (ULONG ThreadId: a reply of 16 + 4 = 20 bytes)
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

__all__ = [
    "FILTER_MESSAGE_HEADER",
    "FILTER_REPLY_HEADER",
    "SCANNER_READ_BUFFER_SIZE",
    "SCANNER_NOTIFICATION",
    "SCANNER_REPLY",
    "AV_SCANNER_NOTIFICATION",
    "AV_SCANNER_REPLY",
    "Sample",
    "SCANNER",
    "AVSCAN",
    "struct",
    "reply_size",
    "message_size",
    "c_declaration",
]

_PACKS: Final = (1, 2, 4, 8, 16)

# C and Windows type names. Exact spelling: "LONG" is always 32-bit, "long" is the platform's C
# long (numpy's character codes follow the C compiler numpy was built with); "char" is int8.
_C_TYPES: Final[dict[str, np.dtype[Any]]] = {
    name: np.dtype(code)
    for names, code in [
        (("int8_t", "signed char", "CHAR"), "i1"),
        (("uint8_t", "unsigned char", "UCHAR", "BYTE", "BOOLEAN"), "u1"),
        (("char",), "b"),
        (("bool", "_Bool"), "?"),
        (("int16_t", "SHORT"), "i2"),
        (("uint16_t", "USHORT", "WORD", "WCHAR"), "u2"),
        (("short",), "h"),
        (("unsigned short",), "H"),
        (("int32_t", "LONG", "INT", "BOOL", "NTSTATUS", "HRESULT"), "i4"),
        (("uint32_t", "ULONG", "UINT", "DWORD"), "u4"),
        (("int", "signed"), "i"),
        (("unsigned int", "unsigned"), "I"),
        (("long",), "l"),
        (("unsigned long",), "L"),
        (("int64_t", "LONGLONG", "LONG64", "LARGE_INTEGER"), "i8"),
        (("uint64_t", "ULONGLONG", "ULONG64", "DWORD64", "DWORDLONG", "ULARGE_INTEGER"), "u8"),
        (("long long",), "q"),
        (("unsigned long long",), "Q"),
        (("intptr_t", "ptrdiff_t"), "intp"),
        (("uintptr_t", "size_t"), "uintp"),
        (("float", "FLOAT"), "f4"),
        (("double",), "f8"),
    ]
    for name in names
}


def _round_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _meta(dt: np.dtype[Any], key: str) -> Any:
    """``dt.metadata[key]``, None when absent."""
    return dt.metadata.get(key) if dt.metadata else None


def _alignment(dt: np.dtype[Any]) -> int:
    """C alignment of a member of type ``dt``, before any ``#pragma pack`` of the outer struct."""
    if dt.subdtype is not None:
        return _alignment(dt.subdtype[0])
    fields = dt.fields
    if fields is None:
        return dt.alignment
    pack = _meta(dt, "pack")
    if pack is None and not dt.isalignedstruct:
        return 1  # a packed struct from elsewhere: numpy lays it out with alignment 1
    natural = max(_alignment(fields[n][0]) for n in dt.names or ())
    return natural if pack is None else min(natural, pack)


def _field_type(ftype: DTypeLike, fname: str) -> np.dtype[Any]:
    if isinstance(ftype, str):
        known = _C_TYPES.get(" ".join(ftype.split()))
        if known is not None:
            return known
        try:
            return np.dtype(ftype)
        except TypeError:
            raise ValueError(f"field {fname!r}: unknown type {ftype!r}") from None
    try:
        return np.dtype(ftype)
    except TypeError:
        raise TypeError(
            f"field {fname!r}: type must be a type name or a numpy dtype, got {ftype!r}"
        ) from None


def _shape(count: Any, fname: str) -> tuple[int, ...]:
    dims = count if isinstance(count, tuple) else (count,)
    shape = []
    for dim in dims:
        if isinstance(dim, bool):
            raise TypeError(f"field {fname!r}: array length must be an int, got {dim!r}")
        try:
            n = operator.index(dim)
        except TypeError:
            raise TypeError(
                f"field {fname!r}: array length must be an int, got {dim!r}"
            ) from None
        if n < 1:
            raise ValueError(f"field {fname!r}: array length must be >= 1, got {n}")
        shape.append(n)
    if not shape:
        raise ValueError(f"field {fname!r}: empty array shape")
    return tuple(shape)


def _field(entry: Any, index: int) -> tuple[str, np.dtype[Any]]:
    """Validate one ``(name, type[, count])`` entry; return the name and the member's dtype."""
    if not isinstance(entry, (tuple, list)):
        raise TypeError(
            f"fields[{index}] must be (name, type) or (name, type, count), got {entry!r}"
        )
    if len(entry) not in (2, 3):
        raise ValueError(f"fields[{index}] must have 2 or 3 items, got {len(entry)}")
    fname = entry[0]
    if not isinstance(fname, str):
        raise TypeError(f"fields[{index}]: name must be a str, got {fname!r}")
    if not (fname.isascii() and fname.isidentifier()):
        raise ValueError(f"fields[{index}]: {fname!r} is not a C identifier")
    dt = _field_type(entry[1], fname)
    if dt.hasobject:
        raise TypeError(f"field {fname!r}: Python objects cannot be struct members")
    if dt.itemsize == 0:
        raise ValueError(f"field {fname!r}: type {dt} has no size")
    if len(entry) == 3:
        dt = np.dtype((dt, _shape(entry[2], fname)))
    return fname, dt


def struct(
    fields: Sequence[tuple[Any, ...]], *, pack: int | None = None, name: str | None = None
) -> np.dtype[np.void]:
    """A structured dtype laid out like the C struct with these members.

    ``fields`` lists ``(name, type)`` or ``(name, type, count)`` in declaration order. ``type`` is
    a C or Windows type name (``"ULONG"``, ``"uint32_t"``, ``"unsigned short"``, ``"WCHAR"``,
    ``"LARGE_INTEGER"``, ``"double"``...), a numpy type string (``"u4"``) or anything
    ``np.dtype()`` accepts, including a structured dtype for a nested struct. ``count`` makes the
    member an array: an int, or a tuple of ints for ``T name[a][b]``.

    ``pack=None`` gives natural alignment (each member at a multiple of its alignment, the struct
    aligned to its largest member alignment, trailing padding), and ``isalignedstruct`` is true.
    ``pack=N`` (1, 2, 4, 8 or 16) caps every member's alignment at N, as ``#pragma pack(N)`` does
    with MSVC and GCC. The result has explicit offsets and itemsize, and
    ``metadata == {"pack": pack, "name": name}``; ``name`` (a C identifier) is used by
    :func:`c_declaration`.

    Raises ValueError for an empty field list, a duplicate or invalid member name, an unknown
    type name, an array length < 1 or a bad ``pack``; TypeError for entries of the wrong kind.
    """
    if pack is not None and (isinstance(pack, bool) or pack not in _PACKS):
        raise ValueError(f"pack must be None or one of {_PACKS}, got {pack!r}")
    if name is not None and not (
        isinstance(name, str) and name.isascii() and name.isidentifier()
    ):
        raise ValueError(f"struct name must be a C identifier, got {name!r}")
    if isinstance(fields, (str, bytes)) or not isinstance(fields, Sequence):
        raise TypeError(f"fields must be a sequence of (name, type[, count]), got {fields!r}")
    if not fields:
        raise ValueError("a struct needs at least one field")

    names: list[str] = []
    formats: list[np.dtype[Any]] = []
    offsets: list[int] = []
    offset = 0
    struct_alignment = 1
    for index, entry in enumerate(fields):
        fname, dt = _field(entry, index)
        if fname in names:
            raise ValueError(f"duplicate field name {fname!r}")
        alignment = _alignment(dt) if pack is None else min(_alignment(dt), pack)
        offset = _round_up(offset, alignment)
        names.append(fname)
        formats.append(dt)
        offsets.append(offset)
        offset += dt.itemsize
        struct_alignment = max(struct_alignment, alignment)
    return np.dtype(
        {
            "names": names,
            "formats": formats,
            "offsets": offsets,
            "itemsize": _round_up(offset, struct_alignment),
        },
        align=pack is None,
        metadata={"pack": pack, "name": name},
    )


def _header(name: str, first: str, first_type: str) -> np.dtype[np.void]:
    # The wire layout is fixed (x64), whatever the host's alignment of uint64.
    return np.dtype(
        {
            "names": [first, "MessageId"],
            "formats": [first_type, "u8"],
            "offsets": [0, 8],
            "itemsize": 16,
        },
        align=True,
        metadata={"pack": None, "name": name},
    )


FILTER_MESSAGE_HEADER: Final = _header("FILTER_MESSAGE_HEADER", "ReplyLength", "u4")
"""Header of every message: ReplyLength (u4 @0: bytes accepted in the reply including the reply
header, 0 = no reply expected), MessageId (u8 @8). 16 bytes."""

FILTER_REPLY_HEADER: Final = _header("FILTER_REPLY_HEADER", "Status", "i4")
"""Header of every reply: Status (NTSTATUS i4 @0), MessageId (u8 @8). 16 bytes."""

SCANNER_READ_BUFFER_SIZE: Final = 1024
"""Bytes of file content in a SCANNER_NOTIFICATION (Microsoft's scanner sample)."""

SCANNER_NOTIFICATION: Final = struct(
    [
        ("BytesToScan", "ULONG"),
        ("Reserved", "ULONG"),
        ("Contents", "UCHAR", SCANNER_READ_BUFFER_SIZE),
    ],
    pack=1,
    name="SCANNER_NOTIFICATION",
)
"""Message payload of Microsoft's scanner sample (packed to 1 byte): 1032 bytes."""

SCANNER_REPLY: Final = struct([("SafeToOpen", "BOOLEAN")], pack=1, name="SCANNER_REPLY")
"""Reply payload of Microsoft's scanner sample: 1 byte."""

AV_SCANNER_NOTIFICATION: Final = struct(
    [
        ("Message", "LONG"),  # AVSCAN_MESSAGE: 0 start scanning, 1 abort, 2 filter unloading
        ("Reason", "LONG"),  # AVSCAN_REASON: 0 scan on open, 1 scan on cleanup
        ("ScanId", "LONGLONG"),
        ("ScanThreadId", "ULONG"),
    ],
    name="AV_SCANNER_NOTIFICATION",
)
"""Message payload of Microsoft's avscan sample (inc/avlib.h, natural alignment; its enums are
32-bit): Message @0, Reason @4, ScanId @8, ScanThreadId @16, 24 bytes."""

AV_SCANNER_REPLY: Final = struct([("ThreadId", "ULONG")], name="AV_SCANNER_REPLY")
"""Reply payload of Microsoft's avscan sample (user/userscan.c): the scanning thread's id,
4 bytes; the sample replies with sizeof(FILTER_REPLY_HEADER) + sizeof(ULONG) = 20 bytes (not
sizeof of its reply struct, 24 with the alignment padding)."""


def _payload_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    if dtype is None:  # np.dtype(None) would silently mean float64
        raise TypeError("a payload dtype is required, got None")
    return np.dtype(dtype)


def reply_size(dtype: DTypeLike) -> int:
    """Bytes of a reply carrying one ``dtype`` payload: ``sizeof(FILTER_REPLY_HEADER) +
    sizeof(payload)`` (the padding rule). ``reply_size(SCANNER_REPLY) == 17``."""
    return FILTER_REPLY_HEADER.itemsize + _payload_dtype(dtype).itemsize


def message_size(dtype: DTypeLike) -> int:
    """Bytes of a message carrying one ``dtype`` payload: ``sizeof(FILTER_MESSAGE_HEADER) +
    sizeof(payload)``. ``message_size(SCANNER_NOTIFICATION) == 1048``."""
    return FILTER_MESSAGE_HEADER.itemsize + _payload_dtype(dtype).itemsize


class Sample(NamedTuple):
    """A minifilter sample's protocol as a service sees it: the communication port's name (what
    fastport.connect takes), the message and reply payload dtypes (what fastport.Pump takes)."""

    name: str
    port: str
    message: np.dtype[Any]
    reply: np.dtype[Any]

    @property
    def message_size(self) -> int:
        """Bytes of a whole message: FILTER_MESSAGE_HEADER + payload."""
        return message_size(self.message)

    @property
    def reply_size(self) -> int:
        """Bytes of a whole reply: FILTER_REPLY_HEADER + payload (the padding rule)."""
        return reply_size(self.reply)


SCANNER: Final = Sample("scanner", "\\ScannerPort", SCANNER_NOTIFICATION, SCANNER_REPLY)
"""Microsoft's scanner sample: ``\\ScannerPort``, 1048-byte messages, 17-byte replies."""

AVSCAN: Final = Sample("avscan", "\\MicrosoftAvSampleFilterScanPort", AV_SCANNER_NOTIFICATION,
                       AV_SCANNER_REPLY)
"""Microsoft's avscan sample, its scan port: 40-byte messages, 20-byte replies. (Its abort port,
``\\MicrosoftAvSampleFilterAbortPort``, carries the same notification and expects no reply.)"""


def _c_scalar(dt: np.dtype[Any], where: str) -> tuple[str, str]:
    """C type and array suffix for a non-structured member type."""
    if dt.byteorder not in "=|":
        raise ValueError(f"{where}: non-native byte order {dt.str!r} has no C equivalent")
    kind, size = dt.kind, dt.itemsize
    if kind in "iu" and size in (1, 2, 4, 8):
        return f"{'u' if kind == 'u' else ''}int{8 * size}_t", ""
    if kind == "f" and size in (4, 8):
        return ("float" if size == 4 else "double"), ""
    if kind == "b":
        return "_Bool", ""
    if kind == "S":
        return "char", f"[{size}]"
    if kind == "V":
        return "uint8_t", f"[{size}]"
    raise ValueError(f"{where}: type {dt} has no C equivalent")


def _declare(dt: np.dtype[Any], name: str, decls: dict[str, str]) -> None:
    """Add the declaration of ``dt`` as ``name`` to ``decls``, after those of its nested structs."""
    fields = dt.fields
    if fields is None or dt.names is None:
        raise TypeError(f"{name}: a structured dtype is required, got {dt}")
    pack = _meta(dt, "pack")
    if pack is None and not dt.isalignedstruct:
        pack = 1  # a packed struct from elsewhere, as _alignment() sees it
    lines = []
    offset = 0
    struct_alignment = 1
    for fname in sorted(dt.names, key=lambda n: fields[n][1]):
        ftype, foffset = fields[fname][:2]
        base, shape = (ftype.subdtype if ftype.subdtype is not None else (ftype, ()))
        where = f"{name}.{fname}"
        if base.names is not None:
            ctype = _meta(base, "name")
            if ctype is None:
                raise ValueError(f"{where}: nested struct has no name (pass name= to struct())")
            _declare(base, ctype, decls)
            suffix = ""
        else:
            ctype, suffix = _c_scalar(base, where)
        alignment = _alignment(ftype) if pack is None else min(_alignment(ftype), pack)
        if foffset < offset or foffset % alignment:
            raise ValueError(f"{where}: offset {foffset} cannot be declared in C")
        if foffset > _round_up(offset, alignment):
            lines.append(f"    uint8_t _pad{offset}[{foffset - offset}];")
        dims = "".join(f"[{n}]" for n in shape)
        lines.append(f"    {ctype} {fname}{dims}{suffix};")
        offset = foffset + ftype.itemsize
        struct_alignment = max(struct_alignment, alignment)
    if dt.itemsize > _round_up(offset, struct_alignment):
        lines.append(f"    uint8_t _pad{offset}[{dt.itemsize - offset}];")
        offset = dt.itemsize
    if dt.itemsize != _round_up(offset, struct_alignment):
        raise ValueError(f"{name}: itemsize {dt.itemsize} cannot be declared in C")
    body = "\n".join([f"typedef struct {name} {{", *lines, f"}} {name};"])
    if pack is not None:
        body = f"#pragma pack(push, {pack})\n{body}\n#pragma pack(pop)"
    if decls.setdefault(name, body) != body:
        raise ValueError(f"two different structs are named {name!r}")


def c_declaration(dtype: DTypeLike, name: str | None = None) -> str:
    """C declaration (``typedef struct name {...} name;``) of a structured dtype, using
    ``<stdint.h>`` types, wrapped in ``#pragma pack(push, N)`` / ``#pragma pack(pop)`` when the
    dtype was built with ``pack=N`` (N = 1 for a numpy struct that is not aligned). Nested structs
    are declared first (they need a ``name``); gaps that alignment does not explain become
    ``uint8_t _padN[]`` members. ``name`` defaults to the one given to :func:`struct`.

    Raises TypeError for a dtype that is not structured and ValueError when the layout has no C
    equivalent (overlapping or misaligned members, non-native byte order, types without a fixed
    C spelling)."""
    dt = _payload_dtype(dtype)
    name = name if name is not None else _meta(dt, "name")
    if not (isinstance(name, str) and name.isascii() and name.isidentifier()):
        raise ValueError(f"a C identifier is required as the struct name, got {name!r}")
    decls: dict[str, str] = {}
    _declare(dt, name, decls)
    return "\n\n".join(decls.values()) + "\n"
