/* The yardstick of the emulator's Win32 face: a client written the way the user-mode part of
 * Microsoft's minifilter "scanner" sample is (its worker loop, records and completion port),
 * against <windows.h> and <fltuser.h> only, compiled with -Isrc/fltsim/win32. It serves the
 * load-generating driver's scanner protocol (which checks every reply) on both transports; the
 * kernel side (scanner_kernel.c) disconnects when done, which ends the workers the way the sample
 * ends: "port is disconnected". Last line: "N passed, M failed". */
#include <windows.h>
#include <fltuser.h>

#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>

/* scanner_kernel.c: the kernel side (no project header may be included here) */
const char *scanner_kernel_start(int socket, unsigned messages, unsigned senders);
int scanner_kernel_finish(void);

/* scanuk.h / scanuser.h */
#define SCANNER_READ_BUFFER_SIZE 1024
#define SCANNER_DEFAULT_REQUEST_COUNT 5
#define SCANNER_DEFAULT_THREAD_COUNT 2

#pragma pack(1)
typedef struct _SCANNER_NOTIFICATION {
    ULONG BytesToScan;
    ULONG Reserved;
    UCHAR Contents[SCANNER_READ_BUFFER_SIZE];
} SCANNER_NOTIFICATION, *PSCANNER_NOTIFICATION;

typedef struct _SCANNER_REPLY {
    BOOLEAN SafeToOpen;
} SCANNER_REPLY, *PSCANNER_REPLY;

typedef struct _SCANNER_MESSAGE {
    FILTER_MESSAGE_HEADER MessageHeader;
    SCANNER_NOTIFICATION Notification;
    OVERLAPPED Ovlp; /* after the message: the get covers FIELD_OFFSET(SCANNER_MESSAGE, Ovlp) */
} SCANNER_MESSAGE, *PSCANNER_MESSAGE;

typedef struct _SCANNER_REPLY_MESSAGE {
    FILTER_REPLY_HEADER ReplyHeader;
    SCANNER_REPLY Reply;
} SCANNER_REPLY_MESSAGE, *PSCANNER_REPLY_MESSAGE;
#pragma pack()

typedef struct _SCANNER_THREAD_CONTEXT {
    HANDLE Port;
    HANDLE Completion;
    volatile LONG Replied; /* the test's own count, read after the threads are joined */
} SCANNER_THREAD_CONTEXT, *PSCANNER_THREAD_CONTEXT;

static const UCHAR FoulString[] = "foul";

static int passed, failed;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond)                                                                    \
            passed++;                                                                \
        else {                                                                       \
            failed++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

static BOOL ScanBuffer(PUCHAR Buffer, ULONG BufferSize)
{
    ULONG searchStringLength = sizeof(FoulString) - sizeof(UCHAR);
    if (BufferSize < searchStringLength)
        return FALSE;
    for (PUCHAR p = Buffer; p <= Buffer + BufferSize - searchStringLength; p++)
        if (RtlEqualMemory(p, FoulString, searchStringLength))
            return TRUE;
    return FALSE;
}

static DWORD WINAPI ScannerWorker(LPVOID lpParameter)
{
    PSCANNER_THREAD_CONTEXT Context = lpParameter;
    PSCANNER_NOTIFICATION notification;
    SCANNER_REPLY_MESSAGE replyMessage;
    PSCANNER_MESSAGE message;
    LPOVERLAPPED pOvlp;
    BOOL result;
    DWORD outSize;
    HRESULT hr;
    ULONG_PTR key;

    while (TRUE) {
        result = GetQueuedCompletionStatus(Context->Completion, &outSize, &key, &pOvlp, INFINITE);

        /* The message completed may not be the one this thread issued: find it by its
         * OVERLAPPED. */
        message = CONTAINING_RECORD(pOvlp, SCANNER_MESSAGE, Ovlp);

        if (!result) {
            hr = HRESULT_FROM_WIN32(GetLastError());
            break;
        }

        notification = &message->Notification;
        if (notification->BytesToScan > SCANNER_READ_BUFFER_SIZE) {
            hr = E_INVALIDARG;
            break;
        }
        result = ScanBuffer(notification->Contents, notification->BytesToScan);

        replyMessage.ReplyHeader.Status = 0;
        replyMessage.ReplyHeader.MessageId = message->MessageHeader.MessageId;
        replyMessage.Reply.SafeToOpen = !result;

        hr = FilterReplyMessage(Context->Port, (PFILTER_REPLY_HEADER)&replyMessage,
                                sizeof(replyMessage));
        if (!SUCCEEDED(hr))
            break;
        __atomic_add_fetch(&Context->Replied, 1, __ATOMIC_RELAXED);

        memset(&message->Ovlp, 0, sizeof(OVERLAPPED));
        hr = FilterGetMessage(Context->Port, &message->MessageHeader,
                              FIELD_OFFSET(SCANNER_MESSAGE, Ovlp), &message->Ovlp);
        if (hr != HRESULT_FROM_WIN32(ERROR_IO_PENDING))
            break;
    }
    return (DWORD)hr;
}

static void serve(int socket, DWORD threadCount, DWORD requestCount, unsigned n)
{
    HANDLE threads[64] = {NULL};
    SCANNER_THREAD_CONTEXT context = {NULL, NULL, 0};
    HANDLE port, completion;
    PSCANNER_MESSAGE messages;
    DWORD threadId, i, j;
    HRESULT hr;
    WCHAR name[64];

    const char *kname = scanner_kernel_start(socket, n, 8);
    CHECK(kname != NULL);
    if (!kname)
        return;
    CHECK(mbstowcs(name, kname, 64) < 64);

    hr = FilterConnectCommunicationPort(name, 0, NULL, 0, NULL, &port);
    CHECK(!IS_ERROR(hr));
    completion = CreateIoCompletionPort(port, NULL, 0, threadCount);
    CHECK(completion != NULL);
    context.Port = port;
    context.Completion = completion;
    messages = calloc(threadCount * requestCount, sizeof(SCANNER_MESSAGE));
    CHECK(messages != NULL);

    for (i = 0; i < threadCount; i++) {
        threads[i] = CreateThread(NULL, 0, ScannerWorker, &context, 0, &threadId);
        CHECK(threads[i] != NULL);
        for (j = 0; j < requestCount; j++) {
            PSCANNER_MESSAGE msg = &messages[i * requestCount + j];
            memset(&msg->Ovlp, 0, sizeof(OVERLAPPED));
            hr = FilterGetMessage(port, &msg->MessageHeader, FIELD_OFFSET(SCANNER_MESSAGE, Ovlp),
                                  &msg->Ovlp);
            CHECK(hr == HRESULT_FROM_WIN32(ERROR_IO_PENDING));
        }
    }

    for (i = 0; i < threadCount; i++) {
        DWORD code = 0;
        CHECK(WaitForSingleObjectEx(threads[i], INFINITE, FALSE) == WAIT_OBJECT_0);
        CHECK(GetExitCodeThread(threads[i], &code));
        /* what the sample reports as "port is disconnected" */
        CHECK(code == (DWORD)HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE));
        CloseHandle(threads[i]);
    }
    CHECK(scanner_kernel_finish() == 0);
    /* The kernel side counted every reply right. On the socket transport the disconnect that
     * follows the last reply can overtake that reply's acknowledgement: then FilterReplyMessage
     * reports the disconnect (at most once per thread) and the worker ends there. */
    CHECK(context.Replied <= (LONG)n && context.Replied >= (LONG)(n - threadCount));
    printf("    %s: %ld messages scanned and answered by %u threads x %u requests\n",
           socket ? "socket" : "inproc", (long)context.Replied, (unsigned)threadCount,
           (unsigned)requestCount);
    CHECK(CloseHandle(port));
    CHECK(CloseHandle(completion));
    free(messages);
}

int main(void)
{
    /* socket first: its kernel side is forked before this process has any thread */
    serve(1, SCANNER_DEFAULT_THREAD_COUNT, SCANNER_DEFAULT_REQUEST_COUNT, 20000);
    serve(0, SCANNER_DEFAULT_THREAD_COUNT, SCANNER_DEFAULT_REQUEST_COUNT, 20000);
    serve(0, 8, 16, 20000);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
