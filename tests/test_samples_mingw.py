"""fastport.dtypes' layouts of Microsoft's scanner and avscan samples against what the Windows
compiler makes of the samples' own declarations: mingw-w64's x86_64-w64-mingw32-gcc, the real
<windows.h> and <fltuser.h>, the samples' types and packing. The compiler cannot run its .exe
here, so it checks at compile time: each sizeof/offsetof is a _Static_assert against the value
this test reads from the numpy dtype (CI installs gcc-mingw-w64-x86-64; elsewhere the test is
skipped without it)."""
import os
import shutil
import subprocess

import pytest

from fastport import dtypes

MINGW = "x86_64-w64-mingw32-gcc"
# skipped without mingw-w64, unless the Windows build is required (.ci/run: FP_REQUIRE_WINDOWS)
needs_mingw = pytest.mark.skipif(
    shutil.which(MINGW) is None and not os.environ.get("FP_REQUIRE_WINDOWS"),
    reason=f"{MINGW} not installed")
pytestmark = needs_mingw

# The samples' declarations (field for field, the samples' own types and packing):
# scanner/inc/scanuk.h (natural alignment) and scanner/user/scanuser.h (#pragma pack(1));
# avscan/inc/avlib.h (natural alignment, enums) and avscan/user/userscan.c.
SAMPLES_C = r"""
#include <windows.h>
#include <fltuser.h>
#include <stddef.h>

/* scanner */
typedef struct _SCANNER_NOTIFICATION {
    ULONG BytesToScan;
    ULONG Reserved;
    UCHAR Contents[1024];
} SCANNER_NOTIFICATION;
typedef struct _SCANNER_REPLY {
    BOOLEAN SafeToOpen;
} SCANNER_REPLY;
#pragma pack(1)
typedef struct _SCANNER_MESSAGE {
    FILTER_MESSAGE_HEADER MessageHeader;
    SCANNER_NOTIFICATION Notification;
    OVERLAPPED Ovlp;
} SCANNER_MESSAGE;
typedef struct _SCANNER_REPLY_MESSAGE {
    FILTER_REPLY_HEADER ReplyHeader;
    SCANNER_REPLY Reply;
} SCANNER_REPLY_MESSAGE;
#pragma pack()

/* avscan */
typedef enum _AVSCAN_MESSAGE { AvMsgStartScanning, AvMsgAbortScanning, AvMsgFilterUnloading }
    AVSCAN_MESSAGE;
typedef enum _AVSCAN_REASON { AvScanOnOpen, AvScanOnCleanup } AVSCAN_REASON;
typedef struct _AV_SCANNER_NOTIFICATION {
    AVSCAN_MESSAGE Message;
    AVSCAN_REASON Reason;
    LONGLONG ScanId;
    ULONG ScanThreadId;
} AV_SCANNER_NOTIFICATION;
typedef struct _AV_MESSAGE {
    FILTER_MESSAGE_HEADER MessageHeader;
    AV_SCANNER_NOTIFICATION Notification;
    OVERLAPPED Ovlp;
} AV_MESSAGE;
typedef struct _AV_REPLY_MESSAGE {
    FILTER_REPLY_HEADER ReplyHeader;
    ULONG ThreadId;
} AV_REPLY_MESSAGE;
#define AV_REPLY_MESSAGE_SIZE (sizeof(FILTER_REPLY_HEADER) + sizeof(ULONG))
"""


def _checks():
    """(C expression, the value fastport.dtypes says) pairs."""
    checks = []

    def layout(c_struct, dt):
        checks.append((f"sizeof({c_struct})", dt.itemsize))
        for name, (_, offset) in dt.fields.items():
            checks.append((f"offsetof({c_struct}, {name})", offset))
            checks.append((f"sizeof((({c_struct} *)0)->{name})", dt.fields[name][0].itemsize))

    layout("FILTER_MESSAGE_HEADER", dtypes.FILTER_MESSAGE_HEADER)
    layout("FILTER_REPLY_HEADER", dtypes.FILTER_REPLY_HEADER)
    layout("SCANNER_NOTIFICATION", dtypes.SCANNER_NOTIFICATION)
    layout("SCANNER_REPLY", dtypes.SCANNER_REPLY)
    layout("AV_SCANNER_NOTIFICATION", dtypes.AV_SCANNER_NOTIFICATION)
    # avscan's reply payload is a bare ULONG after the header
    checks.append(("sizeof(((AV_REPLY_MESSAGE *)0)->ThreadId)", dtypes.AV_SCANNER_REPLY.itemsize))
    checks.append(("offsetof(AV_REPLY_MESSAGE, ThreadId) - sizeof(FILTER_REPLY_HEADER)",
                   dtypes.AV_SCANNER_REPLY.fields["ThreadId"][1]))
    s, a = dtypes.SCANNER, dtypes.AVSCAN
    checks += [
        # where the payload starts, and what the samples pass as sizes
        ("offsetof(SCANNER_MESSAGE, Notification)", dtypes.FILTER_MESSAGE_HEADER.itemsize),
        ("offsetof(SCANNER_MESSAGE, Ovlp)", s.message_size),
        ("offsetof(SCANNER_REPLY_MESSAGE, Reply)", dtypes.FILTER_REPLY_HEADER.itemsize),
        ("sizeof(SCANNER_REPLY_MESSAGE)", s.reply_size),
        ("offsetof(AV_MESSAGE, Notification)", dtypes.FILTER_MESSAGE_HEADER.itemsize),
        ("sizeof(FILTER_MESSAGE_HEADER) + sizeof(AV_SCANNER_NOTIFICATION)", a.message_size),
        ("offsetof(AV_REPLY_MESSAGE, ThreadId)", dtypes.FILTER_REPLY_HEADER.itemsize),
        ("AV_REPLY_MESSAGE_SIZE", a.reply_size),
    ]
    return checks


def _compile(tmp_path, checks):
    src = tmp_path / "samples.c"
    src.write_text(SAMPLES_C + "".join(
        f'_Static_assert({expr} == {value}, "{expr} == {value}");\n' for expr, value in checks))
    return subprocess.run([MINGW, "-std=c11", "-Wall", "-Werror", "-fsyntax-only", str(src)],
                          capture_output=True, text=True)


def test_the_samples_layouts_match_the_windows_compiler(tmp_path):
    checks = _checks()
    assert len(checks) > 30
    r = _compile(tmp_path, checks)
    assert r.returncode == 0, r.stderr


def test_the_check_fails_on_a_wrong_layout(tmp_path):
    """The compile-time check can fail: the natural size of avscan's reply struct (24, padded)
    is not what the sample sends (20)."""
    r = _compile(tmp_path, [("sizeof(AV_REPLY_MESSAGE)", dtypes.AVSCAN.reply_size)])
    assert r.returncode != 0
    assert "sizeof(AV_REPLY_MESSAGE) == 20" in r.stderr


def test_the_samples_at_a_glance():
    assert dtypes.SCANNER.port == "\\ScannerPort"
    assert dtypes.SCANNER_NOTIFICATION.itemsize == 1032 and dtypes.SCANNER.reply_size == 17
    assert dtypes.AVSCAN.port == "\\MicrosoftAvSampleFilterScanPort"
    assert dtypes.AVSCAN.message_size == 40 and dtypes.AVSCAN.reply_size == 16 + 4
