/* fastport-cref.exe: serves a minifilter's communication port with the C reference client
 * (src/cref), the way Microsoft's scanner sample's user program does, on real Windows and FltLib.
 *
 *   fastport-cref.exe PORT [THREADS [OUTSTANDING]]      e.g. fastport-cref.exe \ScannerPort 2 5
 *
 * Connects to PORT (FilterConnectCommunicationPort: administrators and SYSTEM by default), answers
 * every scanner-protocol message (SafeToOpen = 0 when the contents hold "foul") until Ctrl+C /
 * Ctrl+Break / console close, or until the port disconnects (the filter unloads), then prints the
 * counts. Exit status: 0 after Ctrl+C, 2 if the port went away, 1 if it could not be served. */
#include <windows.h>
#include <fltuser.h>

#include <stdio.h>
#include <stdlib.h>

#include "cref/cref.h"
#include "protocols/bench.h"

static HANDLE g_quit; /* manual-reset event: Ctrl+C and friends */

static BOOL WINAPI on_ctrl(DWORD type)
{
    (void)type;
    SetEvent(g_quit);
    return TRUE;
}

static int usage(void)
{
    fprintf(stderr, "usage: fastport-cref.exe PORT [THREADS [OUTSTANDING]]\n"
                    "  e.g. fastport-cref.exe \\ScannerPort 2 5\n");
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4)
        return usage();
    unsigned long threads = argc > 2 ? strtoul(argv[2], NULL, 10) : 2;
    unsigned long outstanding = argc > 3 ? strtoul(argv[3], NULL, 10) : 5;
    WCHAR name[512];
    if (!MultiByteToWideChar(CP_ACP, 0, argv[1], -1, name, (int)(sizeof name / sizeof *name)))
        return usage();
    HANDLE port = NULL;
    HRESULT hr = FilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &port);
    if (FAILED(hr)) {
        fprintf(stderr, "FilterConnectCommunicationPort(%s): HRESULT 0x%08lX\n", argv[1],
                (unsigned long)hr);
        return 1;
    }
    fp_cref *c = NULL;
    hr = fp_cref_start(port, (uint32_t)threads, (uint32_t)outstanding, FP_PROTO_SCANNER,
                       (uint32_t)sizeof(SCANNER_NOTIFICATION), &c);
    if (FAILED(hr)) {
        fprintf(stderr, "fp_cref_start: HRESULT 0x%08lX\n", (unsigned long)hr);
        CloseHandle(port);
        return 1;
    }
    g_quit = CreateEventW(NULL, TRUE, FALSE, NULL);
    SetConsoleCtrlHandler(on_ctrl, TRUE);
    printf("serving %s with %lu threads x %lu gets; Ctrl+C stops\n", argv[1], threads, outstanding);
    fflush(stdout);
    fp_cref_stats s;
    int rc = 0;
    for (;;) {
        if (WaitForSingleObject(g_quit, 1000) == WAIT_OBJECT_0)
            break;
        fp_cref_stats_get(c, &s);
        if (s.threads_running == 0) { /* every thread saw the port go */
            rc = 2;
            break;
        }
    }
    fp_cref_stop(c);
    fp_cref_join(c);
    fp_cref_stats_get(c, &s);
    printf("received %llu, replied %llu, late %llu, truncated %llu, errors %llu (last 0x%08lX)\n",
           (unsigned long long)s.received, (unsigned long long)s.replied,
           (unsigned long long)s.late, (unsigned long long)s.truncated,
           (unsigned long long)s.errors, (unsigned long)s.last_error);
    fp_cref_destroy(c);
    CloseHandle(port);
    return rc;
}
