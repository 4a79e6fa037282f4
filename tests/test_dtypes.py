"""fastport.dtypes: C layout rules, the wire structs, and their parity with the C compiler."""

import numpy as np
import pytest

from fastport.dtypes import (
    FILTER_MESSAGE_HEADER,
    FILTER_REPLY_HEADER,
    SCANNER_NOTIFICATION,
    SCANNER_READ_BUFFER_SIZE,
    SCANNER_REPLY,
    c_declaration,
    message_size,
    reply_size,
    struct,
)

MIXED = [("a", "u1"), ("b", "u8"), ("c", "u2")]


def offsets(dt: np.dtype) -> list[int]:
    assert dt.names is not None and dt.fields is not None
    return [dt.fields[n][1] for n in dt.names]


def test_message_header() -> None:
    dt = FILTER_MESSAGE_HEADER
    assert dt.names == ("ReplyLength", "MessageId")
    assert offsets(dt) == [0, 8]
    assert dt.fields["ReplyLength"][0] == np.dtype("u4")
    assert dt.fields["MessageId"][0] == np.dtype("u8")
    assert dt.itemsize == 16
    assert dt.isalignedstruct


def test_reply_header() -> None:
    dt = FILTER_REPLY_HEADER
    assert dt.names == ("Status", "MessageId")
    assert offsets(dt) == [0, 8]
    assert dt.fields["Status"][0] == np.dtype("i4")
    assert dt.fields["MessageId"][0] == np.dtype("u8")
    assert dt.itemsize == 16
    assert dt.isalignedstruct


def test_scanner_structs() -> None:
    dt = SCANNER_NOTIFICATION
    assert dt.names == ("BytesToScan", "Reserved", "Contents")
    assert offsets(dt) == [0, 4, 8]
    assert dt.fields["Contents"][0] == np.dtype(("u1", (SCANNER_READ_BUFFER_SIZE,)))
    assert dt.itemsize == 1032
    assert dt.metadata == {"pack": 1, "name": "SCANNER_NOTIFICATION"}
    assert SCANNER_REPLY.names == ("SafeToOpen",)
    assert SCANNER_REPLY.itemsize == 1
    assert SCANNER_REPLY.metadata == {"pack": 1, "name": "SCANNER_REPLY"}


def test_padding_rule_sizes() -> None:
    assert reply_size(SCANNER_REPLY) == 17
    assert message_size(SCANNER_NOTIFICATION) == 1048
    assert reply_size("u4") == 20  # avscan: header + ULONG
    assert reply_size(np.uint8) == 17
    # never sizeof(struct {FILTER_REPLY_HEADER; payload}), which pads to 24 here
    combined = struct([("h", FILTER_REPLY_HEADER), ("r", SCANNER_REPLY)])
    assert combined.itemsize == 24
    assert reply_size(SCANNER_REPLY) < combined.itemsize
    with pytest.raises(TypeError):
        reply_size(None)


@pytest.mark.parametrize(
    ("pack", "expected_offsets", "itemsize"),
    [
        (None, [0, 8, 16], 24),
        (1, [0, 1, 9], 11),
        (2, [0, 2, 10], 12),
        (4, [0, 4, 12], 16),
        (8, [0, 8, 16], 24),
        (16, [0, 8, 16], 24),
    ],
)
def test_mixed_alignment(pack: int | None, expected_offsets: list[int], itemsize: int) -> None:
    dt = struct(MIXED, pack=pack)
    assert offsets(dt) == expected_offsets
    assert dt.itemsize == itemsize
    assert dt.isalignedstruct == (pack is None)
    assert dt.metadata == {"pack": pack, "name": None}


def test_natural_matches_numpy_align() -> None:
    fields = [("a", "u1"), ("b", "f8"), ("c", "u2"), ("d", "u4"), ("e", "u1")]
    assert struct(fields) == np.dtype(fields, align=True)
    assert struct(fields).itemsize == np.dtype(fields, align=True).itemsize


def test_c_type_names() -> None:
    fields = [
        ("a", "UCHAR"),
        ("b", "USHORT"),
        ("c", "ULONG"),
        ("d", "ULONGLONG"),
        ("e", "BOOLEAN"),
        ("f", "WCHAR"),
        ("g", "LONG"),
        ("h", "NTSTATUS"),
        ("i", "LARGE_INTEGER"),
        ("j", "uint32_t"),
        ("k", "int"),
        ("l", "unsigned  short"),  # whitespace is normalised
        ("m", "float"),
        ("n", "double"),
        ("o", "char"),
        ("p", "u4"),
    ]
    dt = struct(fields)
    expected = ["u1", "u2", "u4", "u8", "u1", "u2", "i4", "i4", "i8", "u4", "i4", "u2", "f4", "f8"]
    expected += ["i1", "u4"]
    assert [dt.fields[n][0] for n in dt.names] == [np.dtype(t) for t in expected]


def test_nested_struct_and_arrays() -> None:
    inner = struct([("x", "u8"), ("y", "u1")], pack=4, name="INNER")
    assert offsets(inner) == [0, 8]
    assert inner.itemsize == 12
    outer = struct([("c", "u1"), ("i", inner, 2), ("w", "WCHAR", (2, 3)), ("z", "double")])
    # INNER is aligned to 4 (pack=4 caps its uint64), then 2 * 12 bytes, then 6 WCHARs
    assert offsets(outer) == [0, 4, 28, 40]
    assert outer.itemsize == 48
    assert outer.fields["i"][0].shape == (2,)
    assert outer.fields["w"][0].shape == (2, 3)
    arr = np.zeros(2, outer)
    arr["i"]["x"][1, 1] = 7
    assert arr["i"]["x"][1].tolist() == [0, 7]
    # a naturally aligned nested struct keeps its 8-byte alignment
    natural = struct([("c", "u1"), ("n", struct([("x", "u8")]))])
    assert offsets(natural) == [0, 8]
    assert natural.itemsize == 16


def test_pack_caps_nested_alignment() -> None:
    inner = struct([("x", "u8")])
    assert offsets(struct([("c", "u1"), ("n", inner)], pack=2)) == [0, 2]


@pytest.mark.parametrize(
    ("fields", "kwargs", "error"),
    [
        ([], {}, ValueError),
        ([("a", "u1"), ("a", "u2")], {}, ValueError),
        ([("a", "NOT_A_TYPE")], {}, ValueError),
        ([("a", "u1", -1)], {}, ValueError),
        ([("a", "u1", 0)], {}, ValueError),
        ([("a", "u1", 1.5)], {}, TypeError),
        ([("a", "u1")], {"pack": 3}, ValueError),
        ([("a", "u1")], {"pack": 32}, ValueError),
        ([("a", "u1")], {"pack": True}, ValueError),
        ([("a", "u1")], {"name": "not an identifier"}, ValueError),
        ([("1a", "u1")], {}, ValueError),
        ([("a",)], {}, ValueError),
        (["a"], {}, TypeError),
        ([(1, "u1")], {}, TypeError),
        ([("a", 3.5)], {}, TypeError),
        ([("a", "O")], {}, TypeError),
        ([("a", "S")], {}, ValueError),
        ("a", {}, TypeError),
    ],
)
def test_struct_errors(fields: object, kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        struct(fields, **kwargs)


def test_c_declaration() -> None:
    assert c_declaration(SCANNER_NOTIFICATION) == (
        "#pragma pack(push, 1)\n"
        "typedef struct SCANNER_NOTIFICATION {\n"
        "    uint32_t BytesToScan;\n"
        "    uint32_t Reserved;\n"
        "    uint8_t Contents[1024];\n"
        "} SCANNER_NOTIFICATION;\n"
        "#pragma pack(pop)\n"
    )
    assert c_declaration(FILTER_REPLY_HEADER) == (
        "typedef struct FILTER_REPLY_HEADER {\n"
        "    int32_t Status;\n"
        "    uint64_t MessageId;\n"
        "} FILTER_REPLY_HEADER;\n"
    )


def test_c_declaration_nested_and_padding() -> None:
    inner = struct([("x", "u8"), ("y", "u1")], pack=4, name="INNER")
    outer = struct([("c", "char"), ("i", inner, 2)], name="OUTER")
    text = c_declaration(outer)
    assert text.index("typedef struct INNER") < text.index("typedef struct OUTER")
    assert "    INNER i[2];\n" in text
    gap = np.dtype(
        {"names": ["a", "b"], "formats": ["u1", "u4"], "offsets": [0, 8], "itemsize": 16},
        align=True,
    )
    assert "    uint8_t _pad1[7];\n    uint32_t b;\n    uint8_t _pad12[4];\n" in c_declaration(
        gap, "GAP"
    )


def test_c_declaration_errors() -> None:
    with pytest.raises(ValueError):
        c_declaration(struct(MIXED))  # no name
    with pytest.raises(ValueError):
        c_declaration(np.dtype([("a", ">u4")]), "BE")
    with pytest.raises(ValueError):
        c_declaration(struct([("n", struct([("x", "u1")]))]), "NONAME")
    with pytest.raises(TypeError):
        c_declaration("u4", "SCALAR")


# Every struct the C side reports, with the dtype that mirrors it.
PARITY = {
    "FP_MESSAGE_HEADER": FILTER_MESSAGE_HEADER,
    "FP_REPLY_HEADER": FILTER_REPLY_HEADER,
    "SCANNER_NOTIFICATION": SCANNER_NOTIFICATION,
    "SCANNER_REPLY": SCANNER_REPLY,
}


def test_c_layout_parity() -> None:
    from fastport import _ext

    layouts = _ext.c_layouts()
    assert set(layouts) == set(PARITY) | {"BENCH_MESSAGE", "BENCH_REPLY"}
    for name, dt in PARITY.items():
        c = layouts[name]
        assert c["size"] == dt.itemsize, name
        assert c["fields"] == {n: dt.fields[n][1] for n in dt.names}, name
        assert c["field_sizes"] == {n: dt.fields[n][0].itemsize for n in dt.names}, name
