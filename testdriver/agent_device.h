/* The agent's side of wskrtest.sys: one open handle of \\.\WskReplayTest per replayer,
   its IOCTLs with bounded waits, and the pending IOCTL_WSKR_WAIT that brings the
   driver's events. */
#ifndef WSKR_AGENT_DEVICE_H
#define WSKR_AGENT_DEVICE_H

#include <windows.h>
#include <winioctl.h>

#include "wskr_ioctl.h"

#define DEVICE_IOCTL_TIMEOUT_MS 40000 /* an open may take three bounded provider calls */

typedef struct {
    HANDLE handle;
    OVERLAPPED wait;
    unsigned char *wait_buffer;
    DWORD wait_size;
    int wait_pending;
    LONGLONG frequency;
} device;

/* The NTSTATUS the driver completed the request with (STATUS_PENDING while it runs):
   DeviceIoControl would turn a synchronous failure into a Win32 error and leave the
   OVERLAPPED unsignalled, so requests go through NtDeviceIoControlFile. */
LONG device_ioctl(HANDLE handle, OVERLAPPED *ov, DWORD code, const void *in, DWORD in_size,
                  void *out, DWORD out_size);

/* 0 on success; else a Win32 error (device_open) or an NTSTATUS (the others). */
DWORD device_open(device *d);
void device_close(device *d);
LONG device_call(device *d, DWORD code, const void *in, DWORD in_size, void *out,
                 DWORD out_size, DWORD *got);
LONGLONG device_now_ns(device *d);
LONGLONG device_ns(const device *d, LONGLONG qpc);
/* Issues IOCTL_WSKR_WAIT if none is pending; its event is signalled when it completes. */
LONG device_wait_start(device *d);
/* The completed WAIT's records (status and byte count); the next must be started again. */
LONG device_wait_result(device *d, DWORD *got);

#endif
