/* Sends wskrtest.sys every kind of bad request and prints, one per line, the request's
   name and the NTSTATUS it got: tests/test_testdriver.py compares them with what
   testdriver/wskr_ioctl.h promises. Run under Wine with the driver started:
       ioctl_probe.exe PORT     (PORT: a TCP listener on 127.0.0.1) */
#define _WIN32_WINNT 0x0601
#include <winsock2.h>
#include <windows.h>
#include <winioctl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_device.h"

static HANDLE g_Device;

static LONG call(DWORD code, const void *in, DWORD in_size, void *out, DWORD out_size, DWORD *got)
{
    device d;
    DWORD n = 0;
    LONG status;
    ZeroMemory(&d, sizeof(d));
    d.handle = g_Device;
    status = device_call(&d, code, in, in_size, out, out_size, &n);
    if (got) *got = n;
    return status;
}

static void show(const char *name, LONG status) { printf("%s 0x%08lX\n", name, (unsigned long)status); }

static WSKR_OPEN_IN open_request(unsigned short port)
{
    WSKR_OPEN_IN in;
    struct sockaddr_in *r = (struct sockaddr_in *)in.Remote.Bytes;
    ZeroMemory(&in, sizeof(in));
    in.Family = AF_INET;
    r->sin_family = AF_INET;
    r->sin_port = htons(port);
    r->sin_addr.s_addr = htonl(0x7f000001);
    return in;
}

typedef struct {
    WSKR_SEND_IN head;
    unsigned char payload[64];
} send_request;

static LONG send_one(send_request *req, DWORD size)
{
    WSKR_SEND_OUT out;
    return call(IOCTL_WSKR_SEND, req, size, &out, sizeof(out), NULL);
}

int main(int argc, char **argv)
{
    unsigned short port = argc > 1 ? (unsigned short)atoi(argv[1]) : 0;
    unsigned char small[8], big[sizeof(WSKR_EVENT) * 2 + WSKR_RECEIVE_CHUNK];
    WSKR_INFO info;
    WSKR_OPEN_IN open_in;
    WSKR_OPEN_OUT opened;
    WSKR_CLOSE_IN close_in;
    WSKR_DISCONNECT_IN disc;
    WSKR_STATUS_OUT status_out;
    send_request req;
    DWORD got;
    LONG st;
    OVERLAPPED pending;

    setvbuf(stdout, NULL, _IONBF, 0);
    g_Device = CreateFileW(WSKR_USER_PATH, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING,
                           FILE_FLAG_OVERLAPPED, NULL);
    if (g_Device == INVALID_HANDLE_VALUE) {
        printf("open-device-error %lu\n", GetLastError());
        return 1;
    }
    show("info-short-output", call(IOCTL_WSKR_INFO, NULL, 0, small, 4, NULL));
    show("clock-short-output", call(IOCTL_WSKR_CLOCK, NULL, 0, small, 8, NULL));
    show("unknown-ioctl", call(CTL_CODE(FILE_DEVICE_NETWORK, 0x9FF, METHOD_BUFFERED, FILE_ANY_ACCESS), NULL, 0, NULL, 0, NULL));

    open_in = open_request(port);
    show("open-short-input", call(IOCTL_WSKR_OPEN, &open_in, sizeof(open_in) - 1, &opened, sizeof(opened), NULL));
    show("open-short-output", call(IOCTL_WSKR_OPEN, &open_in, sizeof(open_in), &opened, 4, NULL));
    open_in.Family = 99;
    show("open-bad-family", call(IOCTL_WSKR_OPEN, &open_in, sizeof(open_in), &opened, sizeof(opened), NULL));
    open_in = open_request(port);
    open_in.Flags = 0x80;
    show("open-unknown-flag", call(IOCTL_WSKR_OPEN, &open_in, sizeof(open_in), &opened, sizeof(opened), NULL));
    open_in = open_request(port);
    ((struct sockaddr_in *)open_in.Remote.Bytes)->sin_family = 23;
    show("open-family-mismatch", call(IOCTL_WSKR_OPEN, &open_in, sizeof(open_in), &opened, sizeof(opened), NULL));
    open_in = open_request(port);
    open_in.Flags = WSKR_OPEN_BIND_LOCAL;
    show("open-bind-without-address", call(IOCTL_WSKR_OPEN, &open_in, sizeof(open_in), &opened, sizeof(opened), NULL));

    ZeroMemory(&req, sizeof(req));
    req.head.Handle = 0x12345;
    req.head.PayloadLength = 8;
    req.head.Irql = WSKR_IRQL_AS_CALLER;
    show("send-short-input", send_one(&req, sizeof(req.head) - 1));
    show("send-unknown-handle", send_one(&req, sizeof(req.head) + 8));
    show("send-length-mismatch", send_one(&req, sizeof(req.head) + 7));
    req.head.PayloadLength = WSKR_MAX_PAYLOAD + 1;
    show("send-payload-over-limit", send_one(&req, sizeof(req.head) + 8));
    req.head.PayloadLength = 8;
    req.head.ControlInfoLength = WSKR_MAX_CONTROL_INFO + 1;
    req.head.HasControlInfo = 1;
    show("send-control-over-limit", send_one(&req, sizeof(req.head) + 8));
    req.head.ControlInfoLength = 4;
    show("send-control-shorter-than-header", send_one(&req, sizeof(req.head) + 12));
    req.head.ControlInfoLength = 0;
    req.head.HasControlInfo = 0;
    req.head.Irql = 3;
    show("send-irql-above-dispatch", send_one(&req, sizeof(req.head) + 8));
    req.head.Irql = WSKR_IRQL_AS_CALLER;
    req.head.MdlPieces = WSKR_MAX_MDL_PIECES + 1;
    show("send-too-many-mdl-pieces", send_one(&req, sizeof(req.head) + 8));
    req.head.MdlPieces = 2;
    req.head.MdlLengths[0] = 3;
    req.head.MdlLengths[1] = 3;
    show("send-mdl-pieces-not-the-payload", send_one(&req, sizeof(req.head) + 8));
    req.head.MdlPieces = 0;

    ZeroMemory(&disc, sizeof(disc));
    disc.Handle = 0x12345;
    show("disconnect-unknown-handle", call(IOCTL_WSKR_DISCONNECT, &disc, sizeof(disc), &status_out, sizeof(status_out), NULL));
    ZeroMemory(&close_in, sizeof(close_in));
    close_in.Handle = 0x12345;
    show("close-unknown-handle", call(IOCTL_WSKR_CLOSE, &close_in, sizeof(close_in), &status_out, sizeof(status_out), NULL));
    show("wait-small-output", call(IOCTL_WSKR_WAIT, NULL, 0, small, sizeof(small), NULL));

    /* A real connection: open, a bad abortive flag, a send and its completion, close, and
       the closed handle refused afterwards. */
    open_in = open_request(port);
    st = call(IOCTL_WSKR_OPEN, &open_in, sizeof(open_in), &opened, sizeof(opened), &got);
    show("open-listener", st ? st : opened.Status);
    disc.Handle = opened.Handle;
    disc.Abortive = 2;
    show("disconnect-bad-abortive", call(IOCTL_WSKR_DISCONNECT, &disc, sizeof(disc), &status_out, sizeof(status_out), NULL));
    req.head.Handle = opened.Handle;
    req.head.CallId = 77;
    memcpy(req.payload, "probe!!\n", 8);
    {
        WSKR_SEND_OUT out;
        st = call(IOCTL_WSKR_SEND, &req, sizeof(req.head) + 8, &out, sizeof(out), NULL);
        show("send-valid", st);
        show("send-valid-returned-success-or-pending", out.Status >= 0 ? 0 : out.Status);
    }
    for (;;) {
        const WSKR_EVENT *e = (const WSKR_EVENT *)big;
        st = call(IOCTL_WSKR_WAIT, NULL, 0, big, sizeof(big), &got);
        if (st != 0 || got < sizeof(WSKR_EVENT)) break;
        if (e->Kind == WSKR_EVENT_SEND_COMPLETED) {
            printf("send-completed call=%llu status=0x%08lX information=%llu\n",
                   (unsigned long long)e->CallId, (unsigned long)e->Status, (unsigned long long)e->Information);
            break;
        }
    }
    close_in.Handle = opened.Handle;
    show("close-valid", call(IOCTL_WSKR_CLOSE, &close_in, sizeof(close_in), &status_out, sizeof(status_out), NULL));
    show("send-closed-handle", send_one(&req, sizeof(req.head) + 8));
    show("close-closed-handle", call(IOCTL_WSKR_CLOSE, &close_in, sizeof(close_in), &status_out, sizeof(status_out), NULL));
    show("info-still-answers", call(IOCTL_WSKR_INFO, NULL, 0, &info, sizeof(info), NULL));

    /* A pending WAIT is cancelled when its handle closes. */
    ZeroMemory(&pending, sizeof(pending));
    pending.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
    for (int drained = 0; drained < 100; drained++) { /* what the close left queued */
        st = device_ioctl(g_Device, &pending, IOCTL_WSKR_WAIT, NULL, 0, big, sizeof(big));
        if (st != 0) break;
        Sleep(10);
    }
    show("wait-pends", st);
    CancelIoEx(g_Device, &pending);
    WaitForSingleObject(pending.hEvent, 5000);
    show("wait-cancelled", (LONG)pending.Internal);
    CloseHandle(g_Device);
    return 0;
}
