/*
 * wskreplay_recorder.h: record a WSK client driver's WskSendEx calls for wskreplay.
 *
 * Emits the recording contract of docs/etw-schema.md (schema version 1) with
 * TraceLoggingWrite from provider "WskReplay.Recorder"
 * {f127dda8-583f-5f0d-7fc8-d221320f4886}. See docs/recording.md for the walk-through.
 *
 * Use:
 *   1. In exactly one .c file:  #define WSKREPLAY_RECORDER_IMPLEMENTATION
 *                               #include "wskreplay_recorder.h"
 *      elsewhere just include it.
 *   2. DriverEntry: WskReplayRegister();  DriverUnload: WskReplayUnregister();
 *   3. Where the driver keeps the provider's dispatch table of a socket, keep a wrapped
 *      copy instead and make every send through it:
 *          static WSK_PROVIDER_CONNECTION_DISPATCH g_Dispatch;
 *          WskReplayWrapConnectionDispatch(Socket->Dispatch, &g_Dispatch);
 *          g_Dispatch.WskSendEx(Socket, &buf, Flags, 0, NULL, Irp);
 *      (WskReplayWrapStreamDispatch for stream sockets.) The wrapper times the call,
 *      copies the first WSKREPLAY_PAYLOAD_CAP bytes of the MDL chain, interposes its own
 *      completion routine in front of the driver's (which is called exactly as before),
 *      and logs SendExIssued after the provider returned and SendExCompleted when the
 *      IRP completes.
 *   4. Announce the socket's lifecycle: WskReplaySocketConnected(...) when a connect
 *      completes or an accept hands over a socket, WskReplayDisconnect(...) and
 *      WskReplayClose(...) next to WskDisconnect and WskCloseSocket.
 *
 * IRQL: every function here runs at IRQL <= DISPATCH_LEVEL, like WskSendEx itself. The
 * payload copy maps the MDLs with MmGetSystemAddressForMdlSafe (valid at DISPATCH_LEVEL).
 * Memory: one nonpaged allocation per send (WSKREPLAY_POOL_TAG) holding the completion hook and
 * the payload copy; if it fails the call is still made and logged, without payload and
 * with the completion unhooked (PayloadLength says how many bytes were not captured).
 *
 * This header is checked with x86_64-w64-mingw32-gcc -fsyntax-only against mingw-w64's
 * ntddk.h and small stand-ins for wsk.h and TraceLoggingProvider.h (testdriver/mingw/);
 * it has not been built against the WDK here.
 */
#ifndef WSKREPLAY_RECORDER_H
#define WSKREPLAY_RECORDER_H

#include <ntddk.h>
#include <wsk.h>
#include <TraceLoggingProvider.h>

#ifndef WSKREPLAY_PAYLOAD_CAP
/* Payload bytes copied into each SendExIssued event (at most 65535: a TraceLogging
   binary field's limit). The packet capture supplies the rest. */
#define WSKREPLAY_PAYLOAD_CAP 1024
#endif
#if WSKREPLAY_PAYLOAD_CAP > 65535
#error "WSKREPLAY_PAYLOAD_CAP must be at most 65535"
#endif

#define WSKREPLAY_SCHEMA_VERSION 1
/* MdlMappingNoExecute (WDK 8 and later), spelled out for older headers. */
#define WSKREPLAY_MDL_MAPPING_NO_EXECUTE 0x40000000
#define WSKREPLAY_POOL_TAG 'WkSr'

/* Origin values of SocketConnected. */
#define WSKREPLAY_ORIGIN_CONNECT 1
#define WSKREPLAY_ORIGIN_SOCKET_CONNECT 2
#define WSKREPLAY_ORIGIN_ACCEPT 3

TRACELOGGING_DECLARE_PROVIDER(g_WskReplayProvider);

NTSTATUS WskReplayRegister(VOID);
VOID WskReplayUnregister(VOID);
VOID WskReplayWrapConnectionDispatch(const VOID *Original, WSK_PROVIDER_CONNECTION_DISPATCH *Copy);
VOID WskReplayWrapStreamDispatch(const VOID *Original, WSK_PROVIDER_STREAM_DISPATCH *Copy);
VOID WskReplaySocketConnected(PWSK_SOCKET Socket, ULONG Category, const SOCKADDR *Local,
                              const SOCKADDR *Remote, UCHAR Origin);
VOID WskReplayDisconnect(PWSK_SOCKET Socket, ULONG Flags, NTSTATUS Status);
VOID WskReplayClose(PWSK_SOCKET Socket);

#ifdef WSKREPLAY_RECORDER_IMPLEMENTATION

/* {f127dda8-583f-5f0d-7fc8-d221320f4886}: the ETW name hash of "WskReplay.Recorder". */
TRACELOGGING_DEFINE_PROVIDER(g_WskReplayProvider, "WskReplay.Recorder",
                             (0xf127dda8, 0x583f, 0x5f0d, 0x7f, 0xc8, 0xd2, 0x21, 0x32, 0x0f,
                              0x48, 0x86));

static PFN_WSK_SEND_EX g_WskReplayConnectionSendEx;
static PFN_WSK_SEND_EX g_WskReplayStreamSendEx;

/* What the wrapper needs between the call and its completion. */
typedef struct _WSKREPLAY_SEND {
    PIO_COMPLETION_ROUTINE DriverRoutine;
    PVOID DriverContext;
    UCHAR DriverControl;
    USHORT Captured;
    UCHAR Payload[WSKREPLAY_PAYLOAD_CAP];
} WSKREPLAY_SEND;

NTSTATUS WskReplayRegister(VOID) { return TraceLoggingRegister(g_WskReplayProvider); }

VOID WskReplayUnregister(VOID) { TraceLoggingUnregister(g_WskReplayProvider); }

static SIZE_T WskReplaySockaddrLength(const SOCKADDR *Address)
{
    if (Address == NULL) return 0;
    return Address->sa_family == AF_INET6 ? sizeof(SOCKADDR_IN6) : sizeof(SOCKADDR_IN);
}

VOID WskReplaySocketConnected(PWSK_SOCKET Socket, ULONG Category, const SOCKADDR *Local,
                              const SOCKADDR *Remote, UCHAR Origin)
{
    TraceLoggingWrite(g_WskReplayProvider, "SocketConnected",
                      TraceLoggingUInt8(WSKREPLAY_SCHEMA_VERSION, "SchemaVersion"),
                      TraceLoggingHexUInt64((UINT64)(ULONG_PTR)Socket, "Socket"),
                      TraceLoggingUInt32(Category, "Category"),
                      TraceLoggingUInt16(Remote ? Remote->sa_family : 0, "Family"),
                      TraceLoggingBinary(Local, (UINT16)WskReplaySockaddrLength(Local),
                                         "LocalAddress"),
                      TraceLoggingBinary(Remote, (UINT16)WskReplaySockaddrLength(Remote),
                                         "RemoteAddress"),
                      TraceLoggingUInt8(Origin, "Origin"));
}

VOID WskReplayDisconnect(PWSK_SOCKET Socket, ULONG Flags, NTSTATUS Status)
{
    TraceLoggingWrite(g_WskReplayProvider, "Disconnect",
                      TraceLoggingUInt8(WSKREPLAY_SCHEMA_VERSION, "SchemaVersion"),
                      TraceLoggingHexUInt64((UINT64)(ULONG_PTR)Socket, "Socket"),
                      TraceLoggingUInt32(Flags, "Flags"),
                      TraceLoggingUInt32((UINT32)Status, "Status"));
}

VOID WskReplayClose(PWSK_SOCKET Socket)
{
    TraceLoggingWrite(g_WskReplayProvider, "Close",
                      TraceLoggingUInt8(WSKREPLAY_SCHEMA_VERSION, "SchemaVersion"),
                      TraceLoggingHexUInt64((UINT64)(ULONG_PTR)Socket, "Socket"));
}

/* Bytes in the MDL chain from Offset (the true size the call describes, up to Length),
   and a copy of the first WSKREPLAY_PAYLOAD_CAP of them. */
static ULONG64 WskReplayCopyPayload(const WSK_BUF *Buffer, WSKREPLAY_SEND *Send)
{
    ULONG64 present = 0;
    ULONG skip = Buffer->Offset;
    PMDL mdl;
    if (Send) Send->Captured = 0;
    for (mdl = Buffer->Mdl; mdl != NULL && present < Buffer->Length; mdl = mdl->Next) {
        ULONG count = MmGetMdlByteCount(mdl);
        ULONG take;
        if (skip >= count) {
            skip -= count;
            continue;
        }
        take = count - skip;
        if (present + take > Buffer->Length) take = (ULONG)(Buffer->Length - present);
        if (Send && Send->Captured < WSKREPLAY_PAYLOAD_CAP) {
            const UCHAR *va = (const UCHAR *)MmGetSystemAddressForMdlSafe(
                mdl, NormalPagePriority | WSKREPLAY_MDL_MAPPING_NO_EXECUTE);
            ULONG room = WSKREPLAY_PAYLOAD_CAP - Send->Captured;
            ULONG copy = take < room ? take : room;
            if (va != NULL) {
                RtlCopyMemory(Send->Payload + Send->Captured, va + skip, copy);
                Send->Captured = (USHORT)(Send->Captured + copy);
            }
        }
        present += take;
        skip = 0;
    }
    return present;
}

static NTSTATUS WskReplayCompletion(PDEVICE_OBJECT DeviceObject, PIRP Irp, PVOID Context)
{
    WSKREPLAY_SEND *send = (WSKREPLAY_SEND *)Context;
    PIO_COMPLETION_ROUTINE routine = send->DriverRoutine;
    PVOID context = send->DriverContext;
    UCHAR control = send->DriverControl;
    NTSTATUS status = Irp->IoStatus.Status;
    TraceLoggingWrite(g_WskReplayProvider, "SendExCompleted",
                      TraceLoggingUInt8(WSKREPLAY_SCHEMA_VERSION, "SchemaVersion"),
                      TraceLoggingHexUInt64((UINT64)(ULONG_PTR)Irp, "Irp"),
                      TraceLoggingUInt32((UINT32)status, "Status"),
                      TraceLoggingUInt64((UINT64)Irp->IoStatus.Information, "Information"));
    ExFreePoolWithTag(send, WSKREPLAY_POOL_TAG);
    if (routine != NULL &&
        ((NT_SUCCESS(status) && (control & SL_INVOKE_ON_SUCCESS)) ||
         (!NT_SUCCESS(status) && (control & SL_INVOKE_ON_ERROR)) ||
         (Irp->Cancel && (control & SL_INVOKE_ON_CANCEL)))) {
        return routine(DeviceObject, Irp, context);
    }
    return STATUS_CONTINUE_COMPLETION;
}

static NTSTATUS WskReplaySendEx(PFN_WSK_SEND_EX Original, PWSK_SOCKET Socket, PWSK_BUF Buffer,
                                ULONG Flags, ULONG ControlInfoLength, PCMSGHDR ControlInfo,
                                PIRP Irp)
{
    LARGE_INTEGER entry = KeQueryPerformanceCounter(NULL);
    LARGE_INTEGER back;
    KIRQL irql = KeGetCurrentIrql();
    WSKREPLAY_SEND *send = (WSKREPLAY_SEND *)ExAllocatePoolWithTag(
        NonPagedPoolNx, sizeof(WSKREPLAY_SEND), WSKREPLAY_POOL_TAG);
    ULONG64 present = Buffer ? WskReplayCopyPayload(Buffer, send) : 0;
    PVOID irpValue = Irp;
    ULONG64 length = Buffer ? (ULONG64)Buffer->Length : 0;
    ULONG offset = Buffer ? Buffer->Offset : 0;
    USHORT captured = send ? send->Captured : 0;
    UCHAR payload[1];
    const UCHAR *bytes = send ? send->Payload : payload;
    NTSTATUS status;

    if (send != NULL && Irp != NULL) {
        PIO_STACK_LOCATION next = IoGetNextIrpStackLocation(Irp);
        send->DriverRoutine = next->CompletionRoutine;
        send->DriverContext = next->Context;
        send->DriverControl = next->Control;
        IoSetCompletionRoutine(Irp, WskReplayCompletion, send, TRUE, TRUE, TRUE);
    }
    status = Original(Socket, Buffer, Flags, ControlInfoLength, ControlInfo, Irp);
    back = KeQueryPerformanceCounter(NULL);
    TraceLoggingWrite(g_WskReplayProvider, "SendExIssued",
                      TraceLoggingUInt8(WSKREPLAY_SCHEMA_VERSION, "SchemaVersion"),
                      TraceLoggingHexUInt64((UINT64)(ULONG_PTR)Socket, "Socket"),
                      TraceLoggingHexUInt64((UINT64)(ULONG_PTR)irpValue, "Irp"),
                      TraceLoggingUInt32(Flags, "Flags"),
                      TraceLoggingUInt32(offset, "Offset"),
                      TraceLoggingUInt64(length, "Length"),
                      TraceLoggingUInt8(ControlInfo != NULL, "ControlInfoPresent"),
                      TraceLoggingBinary(ControlInfo,
                                         (UINT16)(ControlInfo ? ControlInfoLength : 0),
                                         "ControlInfo"),
                      TraceLoggingUInt64(present, "PayloadLength"),
                      TraceLoggingBinary(bytes, captured, "Payload"),
                      TraceLoggingUInt64((UINT64)entry.QuadPart, "QpcEntry"),
                      TraceLoggingUInt64((UINT64)back.QuadPart, "QpcReturn"),
                      TraceLoggingUInt32((UINT32)status, "Status"),
                      TraceLoggingUInt8(irql, "Irql"));
    /* The payload copy was read before the call; the completion routine frees the block,
       and may already have run. Without an IRP nothing completes: free it here. */
    if (send != NULL && Irp == NULL) ExFreePoolWithTag(send, WSKREPLAY_POOL_TAG);
    return status;
}

static NTSTATUS WSKAPI WskReplayConnectionSendEx(PWSK_SOCKET Socket, PWSK_BUF Buffer,
                                                 ULONG Flags, ULONG ControlInfoLength,
                                                 PCMSGHDR ControlInfo, PIRP Irp)
{
    return WskReplaySendEx(g_WskReplayConnectionSendEx, Socket, Buffer, Flags,
                           ControlInfoLength, ControlInfo, Irp);
}

static NTSTATUS WSKAPI WskReplayStreamSendEx(PWSK_SOCKET Socket, PWSK_BUF Buffer, ULONG Flags,
                                             ULONG ControlInfoLength, PCMSGHDR ControlInfo,
                                             PIRP Irp)
{
    return WskReplaySendEx(g_WskReplayStreamSendEx, Socket, Buffer, Flags, ControlInfoLength,
                           ControlInfo, Irp);
}

VOID WskReplayWrapConnectionDispatch(const VOID *Original, WSK_PROVIDER_CONNECTION_DISPATCH *Copy)
{
    *Copy = *(const WSK_PROVIDER_CONNECTION_DISPATCH *)Original;
    g_WskReplayConnectionSendEx = Copy->WskSendEx;
    Copy->WskSendEx = WskReplayConnectionSendEx;
}

VOID WskReplayWrapStreamDispatch(const VOID *Original, WSK_PROVIDER_STREAM_DISPATCH *Copy)
{
    *Copy = *(const WSK_PROVIDER_STREAM_DISPATCH *)Original;
    g_WskReplayStreamSendEx = Copy->WskSendEx;
    Copy->WskSendEx = WskReplayStreamSendEx;
}

#endif /* WSKREPLAY_RECORDER_IMPLEMENTATION */
#endif /* WSKREPLAY_RECORDER_H */
