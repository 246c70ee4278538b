#include "agent_device.h"

#include <stdlib.h>
#include <winternl.h>

#define STATUS_PENDING_VALUE ((LONG)0x00000103)

#define STATUS_IO_TIMEOUT_VALUE ((LONG)0xC00000B5)
#define STATUS_NO_MEMORY_VALUE ((LONG)0xC0000017)

DWORD device_open(device *d)
{
    WSKR_CLOCK clock;
    DWORD got;
    LONG status;
    ZeroMemory(d, sizeof(*d));
    d->handle = CreateFileW(WSKR_USER_PATH, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING,
                            FILE_FLAG_OVERLAPPED, NULL);
    if (d->handle == INVALID_HANDLE_VALUE) return GetLastError();
    d->wait.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
    d->wait_size = (DWORD)WSKR_WAIT_MIN_OUTPUT * 4;
    d->wait_buffer = (unsigned char *)malloc(d->wait_size);
    if (d->wait.hEvent == NULL || d->wait_buffer == NULL) {
        device_close(d);
        return ERROR_NOT_ENOUGH_MEMORY;
    }
    status = device_call(d, IOCTL_WSKR_CLOCK, NULL, 0, &clock, sizeof(clock), &got);
    if (status != 0 || got != sizeof(clock) || clock.Frequency <= 0) {
        device_close(d);
        return ERROR_GEN_FAILURE;
    }
    d->frequency = clock.Frequency;
    return 0;
}

void device_close(device *d)
{
    if (d->handle != NULL && d->handle != INVALID_HANDLE_VALUE) {
        if (d->wait_pending) {
            CancelIoEx(d->handle, &d->wait);
            WaitForSingleObject(d->wait.hEvent, DEVICE_IOCTL_TIMEOUT_MS);
        }
        CloseHandle(d->handle);
    }
    if (d->wait.hEvent != NULL) CloseHandle(d->wait.hEvent);
    free(d->wait_buffer);
    ZeroMemory(d, sizeof(*d));
}

LONG device_ioctl(HANDLE handle, OVERLAPPED *ov, DWORD code, const void *in, DWORD in_size,
                  void *out, DWORD out_size)
{
    ov->Internal = (ULONG_PTR)STATUS_PENDING_VALUE;
    ov->InternalHigh = 0;
    ResetEvent(ov->hEvent);
    return (LONG)NtDeviceIoControlFile(handle, ov->hEvent, NULL, NULL, (PIO_STATUS_BLOCK)ov, code,
                                       (PVOID)in, in_size, out, out_size);
}

LONG device_call(device *d, DWORD code, const void *in, DWORD in_size, void *out, DWORD out_size,
                 DWORD *got)
{
    OVERLAPPED ov;
    LONG status;
    ZeroMemory(&ov, sizeof(ov));
    ov.hEvent = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (ov.hEvent == NULL) return STATUS_NO_MEMORY_VALUE;
    *got = 0;
    status = device_ioctl(d->handle, &ov, code, in, in_size, out, out_size);
    if (status == STATUS_PENDING_VALUE) {
        if (WaitForSingleObject(ov.hEvent, DEVICE_IOCTL_TIMEOUT_MS) == WAIT_TIMEOUT) {
            CancelIoEx(d->handle, &ov);
            WaitForSingleObject(ov.hEvent, DEVICE_IOCTL_TIMEOUT_MS);
            CloseHandle(ov.hEvent);
            return STATUS_IO_TIMEOUT_VALUE;
        }
        status = (LONG)ov.Internal;
    }
    if (status >= 0) *got = (DWORD)ov.InternalHigh;
    CloseHandle(ov.hEvent);
    return status;
}

LONGLONG device_ns(const device *d, LONGLONG qpc)
{
    return qpc / d->frequency * 1000000000LL + qpc % d->frequency * 1000000000LL / d->frequency;
}

LONGLONG device_now_ns(device *d)
{
    WSKR_CLOCK clock;
    DWORD got;
    if (device_call(d, IOCTL_WSKR_CLOCK, NULL, 0, &clock, sizeof(clock), &got) != 0) return -1;
    return device_ns(d, clock.Qpc);
}

LONG device_wait_start(device *d)
{
    LONG status;
    if (d->wait_pending) return 0;
    status = device_ioctl(d->handle, &d->wait, IOCTL_WSKR_WAIT, NULL, 0, d->wait_buffer,
                          d->wait_size);
    if (status < 0) return status;
    if (status != STATUS_PENDING_VALUE) {
        d->wait.Internal = (ULONG_PTR)status;
        SetEvent(d->wait.hEvent); /* completed at once: handled as if signalled */
    }
    d->wait_pending = 1;
    return 0;
}

LONG device_wait_result(device *d, DWORD *got)
{
    LONG status = (LONG)d->wait.Internal;
    d->wait_pending = 0;
    *got = status >= 0 ? (DWORD)d->wait.InternalHigh : 0;
    return status;
}
