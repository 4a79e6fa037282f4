"""fastport.status against src/common/fp_status.h, and the exceptions built from codes."""

import errno
import pickle
import re
from pathlib import Path

import pytest

import fastport.status as st

HEADER = Path(__file__).parents[1] / "src/common/fp_status.h"
# HRESULTs that are COM codes keep their E_ name; the others wrap a Win32 ERROR_ code.
COM_NAMES = {"E_ACCESSDENIED", "E_OUTOFMEMORY", "E_INVALIDARG"}


def header_codes() -> dict[str, int]:
    """FP_ name -> unsigned value of every FP_CODE(...) in the C header."""
    pattern = re.compile(r"^#define\s+(FP_\w+)\s+FP_CODE\((0x[0-9A-Fa-f]+)u?\)", re.M)
    codes = {name: int(value, 16) for name, value in pattern.findall(HEADER.read_text())}
    assert len(codes) >= 25, "the header parser found too few codes"
    return codes


def python_name(fp_name: str) -> str:
    """Windows name of a header code: FP_STATUS_X -> STATUS_X, FP_E_X -> E_X or ERROR_X."""
    name = fp_name.removeprefix("FP_")
    if name.startswith("E_") and name not in COM_NAMES:
        name = "ERROR_" + name.removeprefix("E_")
    return name


def is_ntstatus(fp_name: str) -> bool:
    return fp_name.startswith("FP_STATUS_")


@pytest.mark.parametrize("fp_name", sorted(header_codes()))
def test_header_code_in_python(fp_name: str) -> None:
    value = header_codes()[fp_name]
    name = python_name(fp_name)
    assert getattr(st, name) == value
    assert name in st.__all__
    to_name = st.ntstatus_name if is_ntstatus(fp_name) else st.hresult_name
    assert to_name(value) == name
    describe = st.ntstatus_description if is_ntstatus(fp_name) else st.hresult_description
    assert describe(value) and describe(value) != "unknown code"


def test_python_codes_all_in_header() -> None:
    expected = {python_name(n) for n in header_codes()}
    constants = {n for n in st.__all__ if isinstance(getattr(st, n), int)}
    assert constants == expected


def test_expected_names() -> None:
    assert st.ERROR_FILE_NOT_FOUND == 0x80070002
    assert st.ERROR_INVALID_HANDLE == 0x80070006
    assert st.ERROR_FLT_NO_WAITER_FOR_REPLY == 0x801F0020
    assert st.STATUS_PORT_DISCONNECTED == 0xC0000037
    assert st.STATUS_TIMEOUT == 0x102
    assert st.S_OK == st.STATUS_SUCCESS == 0


def test_values_unsigned() -> None:
    for name in st.__all__:
        value = getattr(st, name)
        if isinstance(value, int):
            assert 0 <= value <= 0xFFFFFFFF, name


def test_names_signed_and_unknown() -> None:
    assert st.hresult_name(-2145452000) == "ERROR_FLT_NO_WAITER_FOR_REPLY"
    assert st.ntstatus_name(-1073741769) == "STATUS_PORT_DISCONNECTED"
    assert st.ntstatus_name(0xC0001234) == "NTSTATUS 0xC0001234"
    assert st.hresult_name(0x80004005) == "HRESULT 0x80004005"
    assert st.hresult_description(0x80070099) == "Win32 error 153"
    assert st.hresult_description(0x80004005) == "unknown code"
    assert st.ntstatus_description(0xC0001234) == "unknown code"
    assert st.hresult_description(st.ERROR_FLT_NO_WAITER_FOR_REPLY) == (
        "no one waits for a reply to this message"
    )


@pytest.mark.parametrize("bad", [2**32, -(2**31) - 1])
def test_out_of_range_code(bad: int) -> None:
    with pytest.raises(ValueError):
        st.hresult_name(bad)
    with pytest.raises(ValueError):
        st.nt_success(bad)


def test_non_int_code() -> None:
    with pytest.raises(TypeError):
        st.ntstatus_name("0")


def test_nt_success() -> None:
    assert st.nt_success(st.STATUS_SUCCESS)
    assert st.nt_success(st.STATUS_TIMEOUT)  # a success code
    assert not st.nt_success(st.STATUS_BUFFER_OVERFLOW)  # a warning
    assert not st.nt_success(st.STATUS_PORT_DISCONNECTED)
    assert not st.nt_success(-1073741769)


def test_succeeded() -> None:
    assert st.succeeded(st.S_OK)
    assert st.succeeded(1)  # S_FALSE
    assert not st.succeeded(st.ERROR_IO_PENDING)
    assert not st.succeeded(-2145452000)


def test_hresult_from_win32() -> None:
    assert st.hresult_from_win32(0) == st.S_OK
    assert st.hresult_from_win32(2) == st.ERROR_FILE_NOT_FOUND
    assert st.hresult_from_win32(5) == st.E_ACCESSDENIED
    assert st.hresult_from_win32(6) == st.ERROR_INVALID_HANDLE
    assert st.hresult_from_win32(122) == st.ERROR_INSUFFICIENT_BUFFER
    assert st.hresult_from_win32(995) == st.ERROR_OPERATION_ABORTED
    assert st.hresult_from_win32(997) == st.ERROR_IO_PENDING
    assert st.hresult_from_win32(1238) == st.ERROR_CONNECTION_COUNT_LIMIT
    assert st.hresult_from_win32(1460) == st.ERROR_TIMEOUT
    # already an HRESULT: unchanged, returned unsigned
    assert st.hresult_from_win32(-2147024894) == st.ERROR_FILE_NOT_FOUND


@pytest.mark.parametrize(
    ("hr", "cls", "code_errno"),
    [
        (st.ERROR_INVALID_HANDLE, st.PortDisconnected, errno.ECONNRESET),
        (st.ERROR_FLT_NO_WAITER_FOR_REPLY, st.NoWaiterForReply, None),
        (st.ERROR_FILE_NOT_FOUND, st.PortNotFound, errno.ENOENT),
        (st.ERROR_TIMEOUT, st.PortTimeout, errno.ETIMEDOUT),
        (st.ERROR_OPERATION_ABORTED, st.OperationAborted, errno.ECANCELED),
        (st.E_ACCESSDENIED, st.AccessDenied, errno.EACCES),
        (st.ERROR_CONNECTION_COUNT_LIMIT, st.ConnectionLimit, None),
        (st.ERROR_INSUFFICIENT_BUFFER, st.BufferTooSmall, errno.EMSGSIZE),
        (st.E_INVALIDARG, st.PortError, errno.EINVAL),
        (st.E_OUTOFMEMORY, st.PortError, errno.ENOMEM),
        (0x80004005, st.PortError, None),
    ],
)
def test_error_from_hresult(hr: int, cls: type[st.PortError], code_errno: int | None) -> None:
    err = st.error_from_hresult(hr)
    assert type(err) is cls
    assert err.hresult == hr
    assert err.ntstatus is None
    assert err.errno == code_errno
    assert err.name == st.hresult_name(hr)
    assert f"0x{hr:08X}" in str(err)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (st.STATUS_PORT_DISCONNECTED, st.PortDisconnected),
        (st.STATUS_OBJECT_NAME_NOT_FOUND, st.PortNotFound),
        (st.STATUS_TIMEOUT, st.PortTimeout),
        (st.STATUS_ACCESS_DENIED, st.AccessDenied),
        (st.STATUS_CONNECTION_COUNT_LIMIT, st.ConnectionLimit),
        (st.STATUS_BUFFER_OVERFLOW, st.BufferTooSmall),
        (st.STATUS_INSUFFICIENT_RESOURCES, st.PortError),
        (st.STATUS_OBJECT_NAME_COLLISION, st.PortError),
        (0xC0001234, st.PortError),
    ],
)
def test_error_from_ntstatus(status: int, cls: type[st.PortError]) -> None:
    err = st.error_from_ntstatus(status)
    assert type(err) is cls
    assert err.ntstatus == status
    assert err.hresult is None
    assert err.name == st.ntstatus_name(status)


def test_error_from_signed_code() -> None:
    err = st.error_from_hresult(-2145452000)
    assert isinstance(err, st.NoWaiterForReply)
    assert err.hresult == 0x801F0020


def test_message() -> None:
    err = st.error_from_hresult(st.ERROR_FLT_NO_WAITER_FOR_REPLY)
    assert str(err) == (
        "ERROR_FLT_NO_WAITER_FOR_REPLY (0x801F0020): no one waits for a reply to this message"
    )
    assert err.strerror == "no one waits for a reply to this message"
    err = st.error_from_ntstatus(st.STATUS_PORT_DISCONNECTED, "FltSendMessage")
    assert str(err) == (
        "FltSendMessage: STATUS_PORT_DISCONNECTED (0xC0000037): the connection was closed"
    )
    assert err.context == "FltSendMessage"
    assert str(st.error_from_ntstatus(0xC0001234)) == "NTSTATUS 0xC0001234: unknown code"


def test_port_error_is_os_error() -> None:
    err = st.error_from_hresult(st.ERROR_TIMEOUT, "FilterGetMessage")
    assert isinstance(err, OSError)
    with pytest.raises(st.PortError):
        raise err
    # the builtin OSError subclasses that match catch them too
    assert isinstance(err, TimeoutError)
    assert isinstance(st.error_from_hresult(st.ERROR_FILE_NOT_FOUND), FileNotFoundError)
    assert isinstance(st.error_from_hresult(st.E_ACCESSDENIED), PermissionError)
    assert isinstance(st.error_from_hresult(st.ERROR_INVALID_HANDLE), ConnectionError)


def test_port_error_needs_one_code() -> None:
    with pytest.raises(TypeError):
        st.PortError()
    with pytest.raises(TypeError):
        st.PortError(hresult=st.E_INVALIDARG, ntstatus=st.STATUS_INVALID_PARAMETER)


def test_pickle() -> None:
    err = st.error_from_hresult(st.ERROR_OPERATION_ABORTED, "FilterGetMessage")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is st.OperationAborted
    assert (copy.hresult, copy.ntstatus, copy.context) == (err.hresult, None, "FilterGetMessage")
    assert str(copy) == str(err)
    assert copy.errno == err.errno
