/*
 * wskrtest.sys: the WSK test driver of wskreplay (docs/testdriver.md).
 *
 * A WSK client with one device, \\.\WskReplayTest. Each open handle of the device is a
 * client of its own (its sockets, its event queue, its limits); the agent
 * (wskreplay-agent.exe) opens one per replayer. The IOCTLs of wskr_ioctl.h open connection
 * sockets, make WskSendEx calls as a recording made them (flags, ControlInfo, MDL pieces,
 * IRQL), disconnect and close; whatever completes later is queued and handed to the
 * agent's pending IOCTL_WSKR_WAIT.
 *
 * Every send goes through the dispatch table wrapped by instrument/wskreplay_recorder.h,
 * so on Windows the driver records its own calls with the project's contract.
 *
 * Rules kept throughout:
 * - every input is checked (lengths, handles, families, limits) before it is used: a bad
 *   request is a status, never a bugcheck;
 * - every IRP handed to the provider is counted until it completes; a provider routine
 *   that returns STATUS_NOT_IMPLEMENTED without completing its IRP (a stub, as in Wine)
 *   settles the call at once and the driver stops using that routine;
 * - every wait is bounded: a provider call that does not complete in time is reported as
 *   STATUS_IO_TIMEOUT, and its IRP and memory are left to the provider;
 * - closing the handle (or the agent dying) closes the client's sockets and cancels its
 *   pending WAIT; unload waits (bounded) for every IRP.
 */
#define WSKREPLAY_RECORDER_IMPLEMENTATION
#include "wskreplay_recorder.h"
#include "wskr_ioctl.h"
#ifdef WSKRTEST_WDK
#include <wdmsec.h>
#endif

#define WSKR_TAG 'tRkW'
#define WSKR_DEVICE_SDDL L"D:P(A;;GA;;;SY)(A;;GA;;;BA)"

typedef struct _WSKR_CLIENT WSKR_CLIENT;

typedef struct _WSKR_SOCKET {
    WSKR_CLIENT *Client;
    PWSK_SOCKET Wsk;
    const WSK_PROVIDER_CONNECTION_DISPATCH *Dispatch;
    ULONG Handle;
    volatile LONG Refs; /* the table's, one per call in flight */
    volatile LONG Closing;
    PIRP ReceiveIrp;
    PMDL ReceiveMdl;
    PUCHAR ReceiveBuffer;
    BOOLEAN ReceivePaused;
} WSKR_SOCKET;

typedef struct _WSKR_QUEUED {
    LIST_ENTRY Link;
    WSKR_EVENT Event; /* Event.DataLength bytes follow */
} WSKR_QUEUED;

struct _WSKR_CLIENT {
    KSPIN_LOCK Lock;
    LIST_ENTRY Events;
    ULONG QueuedBytes;
    ULONG Lost;
    LIST_ENTRY Waiters;
    WSKR_SOCKET *Sockets[WSKR_MAX_SOCKETS];
    USHORT Generation[WSKR_MAX_SOCKETS];
    volatile LONG SendsInFlight;
    volatile LONG Refs; /* the handle's, one per socket alive */
    BOOLEAN Closing;
};

/* One provider call and its IRP. Refs: the issuer's and the completion's. */
typedef struct _WSKR_CALL {
    WSKR_SOCKET *Socket;
    PIRP Irp;
    KEVENT Done;
    volatile LONG Refs;
    volatile LONG Settled;
    USHORT Kind; /* WSKR_EVENT_* queued on completion; 0 for a call waited for */
    ULONGLONG CallId;
    NTSTATUS Status;
    ULONG_PTR Information;
    PUCHAR Buffer;
    PMDL Mdl;
    BOOLEAN Send;
    SOCKADDR_IN6 Address; /* WskGetLocalAddress writes here: it lives as long as the IRP */
} WSKR_CALL;

static PDEVICE_OBJECT g_Device;
static WSK_REGISTRATION g_Registration;
static WSK_PROVIDER_NPI g_Provider;
static FAST_MUTEX g_CaptureLock;
static BOOLEAN g_Registered, g_Captured;
static volatile LONG g_ProviderFlags;
static volatile LONG g_Outstanding;
static KEVENT g_Idle;
static WSK_PROVIDER_CONNECTION_DISPATCH g_Recorded;
static volatile LONG g_Wrapped;

static const WSK_CLIENT_DISPATCH g_ClientDispatch = {MAKE_WSK_VERSION(1, 0), 0, NULL};

static LONGLONG Qpc(VOID) { return KeQueryPerformanceCounter(NULL).QuadPart; }

static VOID OutstandingUp(VOID)
{
    if (InterlockedIncrement(&g_Outstanding) == 1) KeClearEvent(&g_Idle);
}

static VOID OutstandingDown(VOID)
{
    if (InterlockedDecrement(&g_Outstanding) == 0) KeSetEvent(&g_Idle, IO_NO_INCREMENT, FALSE);
}

/* ---- clients, sockets, events ---------------------------------------------------- */

static VOID FreeEvents(LIST_ENTRY *list)
{
    while (!IsListEmpty(list)) {
        WSKR_QUEUED *q = CONTAINING_RECORD(RemoveHeadList(list), WSKR_QUEUED, Link);
        ExFreePoolWithTag(q, WSKR_TAG);
    }
}

static VOID ClientRelease(WSKR_CLIENT *client)
{
    if (InterlockedDecrement(&client->Refs) == 0) {
        FreeEvents(&client->Events);
        ExFreePoolWithTag(client, WSKR_TAG);
    }
}

static VOID SocketRelease(WSKR_SOCKET *s)
{
    if (InterlockedDecrement(&s->Refs) == 0) {
        WSKR_CLIENT *client = s->Client;
        if (s->ReceiveIrp) IoFreeIrp(s->ReceiveIrp);
        if (s->ReceiveMdl) IoFreeMdl(s->ReceiveMdl);
        if (s->ReceiveBuffer) ExFreePoolWithTag(s->ReceiveBuffer, WSKR_TAG);
        ExFreePoolWithTag(s, WSKR_TAG);
        ClientRelease(client);
    }
}

static ULONG RecordSize(const WSKR_EVENT *e)
{
    return (ULONG)((sizeof(WSKR_EVENT) + e->DataLength + 7) & ~(SIZE_T)7);
}

/* Moves the queued events that fit into Irp's buffer; returns the bytes written. Called
   with the client's lock held; the copied entries go to Done, freed by the caller. */
static ULONG FillWait(WSKR_CLIENT *client, PIRP irp, LIST_ENTRY *done)
{
    PIO_STACK_LOCATION sp = IoGetCurrentIrpStackLocation(irp);
    ULONG room = sp->Parameters.DeviceIoControl.OutputBufferLength;
    PUCHAR out = (PUCHAR)irp->AssociatedIrp.SystemBuffer;
    ULONG used = 0;
    while (!IsListEmpty(&client->Events)) {
        WSKR_QUEUED *q = CONTAINING_RECORD(client->Events.Flink, WSKR_QUEUED, Link);
        ULONG size = RecordSize(&q->Event);
        if (used + size > room) break;
        RemoveEntryList(&q->Link);
        RtlZeroMemory(out + used, size);
        RtlCopyMemory(out + used, &q->Event, sizeof(WSKR_EVENT) + q->Event.DataLength);
        client->QueuedBytes -= q->Event.DataLength;
        used += size;
        InsertTailList(done, &q->Link);
    }
    return used;
}

/* Completes a WAIT that was pending and lets go of the client reference it held. */
static VOID CompleteWaiter(PIRP irp, NTSTATUS status, ULONG_PTR used)
{
    WSKR_CLIENT *client = (WSKR_CLIENT *)irp->Tail.Overlay.DriverContext[0];
    irp->IoStatus.Status = status;
    irp->IoStatus.Information = used;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    ClientRelease(client);
}

/* The client comes from the IRP, which holds a reference to it, not from the file object:
   Wine may close the file (CloseDevice frees the client) before it cancels the IRP. */
static VOID WaitCancelled(PDEVICE_OBJECT device, PIRP irp)
{
    WSKR_CLIENT *client = (WSKR_CLIENT *)irp->Tail.Overlay.DriverContext[0];
    KIRQL irql;
    UNREFERENCED_PARAMETER(device);
    IoReleaseCancelSpinLock(irp->CancelIrql);
    KeAcquireSpinLock(&client->Lock, &irql);
    RemoveEntryList(&irp->Tail.Overlay.ListEntry);
    KeReleaseSpinLock(&client->Lock, irql);
    CompleteWaiter(irp, STATUS_CANCELLED, 0);
}

/* A waiter whose cancel routine is not running, off the list; NULL if none. Lock held. */
static PIRP TakeWaiter(WSKR_CLIENT *client)
{
    while (!IsListEmpty(&client->Waiters)) {
        PLIST_ENTRY link = RemoveHeadList(&client->Waiters);
        PIRP irp = CONTAINING_RECORD(link, IRP, Tail.Overlay.ListEntry);
        if (IoSetCancelRoutine(irp, NULL) != NULL) return irp;
        InitializeListHead(link); /* its cancel routine runs and removes nothing */
    }
    return NULL;
}

/* Hands queued events to a pending WAIT, if there is one and anything is queued. */
static VOID Deliver(WSKR_CLIENT *client)
{
    LIST_ENTRY done;
    PIRP irp = NULL;
    ULONG used = 0;
    NTSTATUS status = STATUS_SUCCESS;
    KIRQL irql;
    InitializeListHead(&done);
    KeAcquireSpinLock(&client->Lock, &irql);
    if (!IsListEmpty(&client->Events) || client->Lost) {
        irp = TakeWaiter(client);
        if (irp != NULL) {
            if (client->Lost) {
                status = STATUS_INSUFFICIENT_RESOURCES;
                client->Lost = 0;
            } else {
                used = FillWait(client, irp, &done);
            }
        }
    }
    KeReleaseSpinLock(&client->Lock, irql);
    FreeEvents(&done);
    if (irp != NULL) CompleteWaiter(irp, status, used);
}

static VOID Enqueue(WSKR_CLIENT *client, USHORT kind, ULONG handle, ULONGLONG callId,
                    NTSTATUS status, ULONG_PTR information, const UCHAR *data, ULONG length)
{
    WSKR_QUEUED *q = (WSKR_QUEUED *)ExAllocatePoolWithTag(
        NonPagedPoolNx, sizeof(WSKR_QUEUED) + length, WSKR_TAG);
    KIRQL irql;
    if (q != NULL) {
        RtlZeroMemory(&q->Event, sizeof(WSKR_EVENT));
        q->Event.Kind = kind;
        q->Event.Handle = handle;
        q->Event.CallId = callId;
        q->Event.Status = status;
        q->Event.DataLength = length;
        q->Event.Information = information;
        q->Event.Qpc = Qpc();
        if (length) RtlCopyMemory(q + 1, data, length);
    }
    KeAcquireSpinLock(&client->Lock, &irql);
    if (q == NULL) {
        client->Lost++;
    } else {
        InsertTailList(&client->Events, &q->Link);
        client->QueuedBytes += length;
    }
    KeReleaseSpinLock(&client->Lock, irql);
    Deliver(client);
}

/* ---- provider calls ------------------------------------------------------------------ */

static VOID CallRelease(WSKR_CALL *call)
{
    if (InterlockedDecrement(&call->Refs) == 0) {
        PMDL mdl = call->Mdl;
        while (mdl != NULL) {
            PMDL next = mdl->Next;
            IoFreeMdl(mdl);
            mdl = next;
        }
        if (call->Buffer) ExFreePoolWithTag(call->Buffer, WSKR_TAG);
        IoFreeIrp(call->Irp);
        ExFreePoolWithTag(call, WSKR_TAG);
    }
}

/* Whoever settles a call first (its completion, or a stub's STATUS_NOT_IMPLEMENTED)
   accounts for it; TRUE for that one. */
static BOOLEAN Settle(WSKR_CALL *call)
{
    if (InterlockedExchange(&call->Settled, 1) != 0) return FALSE;
    if (call->Send) InterlockedDecrement(&call->Socket->Client->SendsInFlight);
    OutstandingDown();
    return TRUE;
}

static NTSTATUS CallCompleted(PDEVICE_OBJECT device, PIRP irp, PVOID context)
{
    WSKR_CALL *call = (WSKR_CALL *)context;
    WSKR_SOCKET *s = call->Socket;
    UNREFERENCED_PARAMETER(device);
    call->Status = irp->IoStatus.Status;
    call->Information = irp->IoStatus.Information;
    if (call->Kind == 0) KeSetEvent(&call->Done, IO_NO_INCREMENT, FALSE);
    if (Settle(call) && s != NULL) {
        if (call->Kind != 0)
            Enqueue(s->Client, call->Kind, s->Handle, call->CallId, call->Status,
                    call->Information, NULL, 0);
        SocketRelease(s);
    }
    CallRelease(call);
    return STATUS_MORE_PROCESSING_REQUIRED;
}

static WSKR_CALL *NewCall(WSKR_SOCKET *s, USHORT kind, ULONGLONG callId)
{
    WSKR_CALL *call = (WSKR_CALL *)ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(WSKR_CALL),
                                                         WSKR_TAG);
    if (call == NULL) return NULL;
    RtlZeroMemory(call, sizeof(*call));
    call->Irp = IoAllocateIrp(1, FALSE);
    if (call->Irp == NULL) {
        ExFreePoolWithTag(call, WSKR_TAG);
        return NULL;
    }
    KeInitializeEvent(&call->Done, NotificationEvent, FALSE);
    call->Socket = s;
    call->Kind = kind;
    call->CallId = callId;
    call->Refs = 2;
    IoSetCompletionRoutine(call->Irp, CallCompleted, call, TRUE, TRUE, TRUE);
    if (s != NULL) InterlockedIncrement(&s->Refs);
    OutstandingUp();
    return call;
}

/* After the provider routine returned: a stub's STATUS_NOT_IMPLEMENTED settles the call
   now (its IRP will never complete). TRUE when it did. */
static BOOLEAN SettledByStub(WSKR_CALL *call, NTSTATUS returned)
{
    if (returned != STATUS_NOT_IMPLEMENTED || !Settle(call)) return FALSE;
    if (call->Socket != NULL) SocketRelease(call->Socket);
    return TRUE;
}

/* The result of a call waited for (at most Ms); the issuer's reference is dropped. */
static NTSTATUS Finish(WSKR_CALL *call, NTSTATUS returned, ULONG ms, ULONG_PTR *information)
{
    NTSTATUS status;
    LARGE_INTEGER timeout;
    if (SettledByStub(call, returned)) {
        status = returned;
    } else {
        timeout.QuadPart = -10000LL * ms;
        if (KeWaitForSingleObject(&call->Done, Executive, KernelMode, FALSE, &timeout) ==
            STATUS_TIMEOUT) {
            status = STATUS_IO_TIMEOUT;
        } else {
            status = call->Status;
            if (information) *information = call->Information;
        }
    }
    CallRelease(call);
    return status;
}

/* ---- receiving ------------------------------------------------------------------------ */

static VOID PostReceive(WSKR_SOCKET *s);

static NTSTATUS ReceiveDone(PDEVICE_OBJECT device, PIRP irp, PVOID context)
{
    WSKR_SOCKET *s = (WSKR_SOCKET *)context;
    WSKR_CLIENT *client = s->Client;
    NTSTATUS status = irp->IoStatus.Status;
    ULONG got = (ULONG)irp->IoStatus.Information;
    KIRQL irql;
    BOOLEAN again = FALSE;
    UNREFERENCED_PARAMETER(device);
    if (!s->Closing) {
        if (NT_SUCCESS(status) && got > 0 && got <= WSKR_RECEIVE_CHUNK) {
            Enqueue(client, WSKR_EVENT_RECEIVED, s->Handle, 0, status, got, s->ReceiveBuffer,
                    got);
            KeAcquireSpinLock(&client->Lock, &irql);
            if (client->QueuedBytes >= WSKR_MAX_QUEUED_BYTES) s->ReceivePaused = TRUE;
            else again = TRUE;
            KeReleaseSpinLock(&client->Lock, irql);
        } else {
            Enqueue(client, WSKR_EVENT_RECEIVE_ENDED, s->Handle, 0, status, got, NULL, 0);
        }
    }
    if (again) PostReceive(s);
    OutstandingDown();
    SocketRelease(s);
    return STATUS_MORE_PROCESSING_REQUIRED;
}

static VOID PostReceive(WSKR_SOCKET *s)
{
    WSK_BUF buf;
    IoReuseIrp(s->ReceiveIrp, STATUS_UNSUCCESSFUL);
    IoSetCompletionRoutine(s->ReceiveIrp, ReceiveDone, s, TRUE, TRUE, TRUE);
    buf.Mdl = s->ReceiveMdl;
    buf.Offset = 0;
    buf.Length = WSKR_RECEIVE_CHUNK;
    InterlockedIncrement(&s->Refs);
    OutstandingUp();
    s->Dispatch->WskReceive(s->Wsk, &buf, 0, s->ReceiveIrp);
}

/* Receives paused while the client's queue was full, started again once it drained. */
static VOID ResumeReceives(WSKR_CLIENT *client)
{
    ULONG i;
    for (i = 0; i < WSKR_MAX_SOCKETS; i++) {
        WSKR_SOCKET *s = NULL;
        KIRQL irql;
        KeAcquireSpinLock(&client->Lock, &irql);
        if (client->QueuedBytes < WSKR_MAX_QUEUED_BYTES / 2 && client->Sockets[i] != NULL &&
            client->Sockets[i]->ReceivePaused && !client->Sockets[i]->Closing) {
            s = client->Sockets[i];
            s->ReceivePaused = FALSE;
        }
        KeReleaseSpinLock(&client->Lock, irql);
        if (s != NULL) PostReceive(s);
    }
}

/* ---- the provider -------------------------------------------------------------------- */

static NTSTATUS CaptureProvider(VOID)
{
    NTSTATUS status = STATUS_SUCCESS;
    ExAcquireFastMutex(&g_CaptureLock);
    if (!g_Captured) {
        status = WskCaptureProviderNPI(&g_Registration, WSKR_CONNECT_TIMEOUT_MS, &g_Provider);
        if (NT_SUCCESS(status)) {
            g_Captured = TRUE;
            if (g_Provider.Dispatch->WskSocketConnect == NULL)
                InterlockedOr(&g_ProviderFlags, WSKR_PROVIDER_SOCKET_CONNECT_MISSING);
        }
    }
    ExReleaseFastMutex(&g_CaptureLock);
    return status;
}

static VOID WrapDispatch(const WSK_PROVIDER_CONNECTION_DISPATCH *dispatch)
{
    if (InterlockedCompareExchange(&g_Wrapped, 1, 0) == 0) {
        WskReplayWrapConnectionDispatch(dispatch, &g_Recorded);
        if (dispatch->WskSendEx == NULL)
            InterlockedOr(&g_ProviderFlags, WSKR_PROVIDER_SENDEX_MISSING);
    }
}

/* ---- IOCTLs ---------------------------------------------------------------------------- */

static WSKR_SOCKET *Lookup(WSKR_CLIENT *client, ULONG handle)
{
    ULONG index = handle & 0xFFFF;
    WSKR_SOCKET *s = NULL;
    KIRQL irql;
    if (index >= WSKR_MAX_SOCKETS) return NULL;
    KeAcquireSpinLock(&client->Lock, &irql);
    if (client->Sockets[index] != NULL && client->Sockets[index]->Handle == handle &&
        !client->Sockets[index]->Closing) {
        s = client->Sockets[index];
        InterlockedIncrement(&s->Refs);
    }
    KeReleaseSpinLock(&client->Lock, irql);
    return s;
}

static BOOLEAN AddressValid(const WSKR_ADDRESS *a, USHORT family)
{
    return ((const SOCKADDR *)a->Bytes)->sa_family == family;
}

static NTSTATUS CloseWsk(PWSK_SOCKET wsk, const WSK_PROVIDER_CONNECTION_DISPATCH *dispatch)
{
    WSKR_CALL *call = NewCall(NULL, 0, 0);
    if (call == NULL) return STATUS_INSUFFICIENT_RESOURCES;
    return Finish(call, dispatch->Basic.WskCloseSocket(wsk, call->Irp), WSKR_CONNECT_TIMEOUT_MS,
                  NULL);
}

/* WskSocketConnect where the provider has it, else WskSocket + WskBind + WskConnect. */
static NTSTATUS Connect(const WSKR_OPEN_IN *in, WSKR_OPEN_OUT *out, PWSK_SOCKET *wsk)
{
    SOCKADDR_IN6 wildcard;
    PSOCKADDR local = (PSOCKADDR)in->Local.Bytes;
    PSOCKADDR remote = (PSOCKADDR)in->Remote.Bytes;
    const WSK_PROVIDER_CONNECTION_DISPATCH *dispatch;
    ULONG_PTR info = 0;
    WSKR_CALL *call;
    NTSTATUS status;

    if (!(in->Flags & WSKR_OPEN_BIND_LOCAL)) {
        RtlZeroMemory(&wildcard, sizeof(wildcard));
        wildcard.sin6_family = in->Family;
        local = (PSOCKADDR)&wildcard;
    }
    out->Step = 1;
    if (!(g_ProviderFlags & WSKR_PROVIDER_SOCKET_CONNECT_MISSING)) {
        call = NewCall(NULL, 0, 0);
        if (call == NULL) return STATUS_INSUFFICIENT_RESOURCES;
        status = g_Provider.Dispatch->WskSocketConnect(
            g_Provider.Client, SOCK_STREAM, IPPROTO_TCP, local, remote, 0, NULL, NULL, NULL,
            NULL, NULL, call->Irp);
        status = Finish(call, status, WSKR_CONNECT_TIMEOUT_MS, &info);
        if (status != STATUS_NOT_IMPLEMENTED) {
            if (NT_SUCCESS(status)) {
                *wsk = (PWSK_SOCKET)info;
                out->OpenedBy = WSKR_OPENED_BY_SOCKET_CONNECT;
            }
            return status;
        }
        InterlockedOr(&g_ProviderFlags, WSKR_PROVIDER_SOCKET_CONNECT_MISSING);
    }
    call = NewCall(NULL, 0, 0);
    if (call == NULL) return STATUS_INSUFFICIENT_RESOURCES;
    status = g_Provider.Dispatch->WskSocket(g_Provider.Client, in->Family, SOCK_STREAM,
                                            IPPROTO_TCP, WSK_FLAG_CONNECTION_SOCKET, NULL, NULL,
                                            NULL, NULL, NULL, call->Irp);
    status = Finish(call, status, WSKR_CONNECT_TIMEOUT_MS, &info);
    if (!NT_SUCCESS(status)) return status;
    *wsk = (PWSK_SOCKET)info;
    dispatch = (const WSK_PROVIDER_CONNECTION_DISPATCH *)(*wsk)->Dispatch;
    out->OpenedBy = WSKR_OPENED_BY_SOCKET_BIND_CONNECT;
    out->Step = 2;
    call = NewCall(NULL, 0, 0);
    status = call == NULL ? STATUS_INSUFFICIENT_RESOURCES
                          : Finish(call, dispatch->WskBind(*wsk, local, 0, call->Irp),
                                   WSKR_CONNECT_TIMEOUT_MS, NULL);
    if (NT_SUCCESS(status)) {
        out->Step = 3;
        call = NewCall(NULL, 0, 0);
        status = call == NULL ? STATUS_INSUFFICIENT_RESOURCES
                              : Finish(call, dispatch->WskConnect(*wsk, remote, 0, call->Irp),
                                       WSKR_CONNECT_TIMEOUT_MS, NULL);
    }
    if (!NT_SUCCESS(status)) {
        CloseWsk(*wsk, dispatch);
        *wsk = NULL;
    }
    return status;
}

/* The local port (host order), when the provider answers WskGetLocalAddress in time. */
static USHORT LocalPort(PWSK_SOCKET wsk, const WSK_PROVIDER_CONNECTION_DISPATCH *dispatch)
{
    WSKR_CALL *call;
    NTSTATUS status;
    LARGE_INTEGER timeout;
    USHORT port = 0;
    if (g_ProviderFlags & WSKR_PROVIDER_LOCAL_ADDRESS_MISSING) return 0;
    call = NewCall(NULL, 0, 0);
    if (call == NULL) return 0;
    status = dispatch->WskGetLocalAddress(wsk, (PSOCKADDR)&call->Address, call->Irp);
    timeout.QuadPart = -10000LL * WSKR_QUERY_TIMEOUT_MS;
    if (SettledByStub(call, status) ||
        KeWaitForSingleObject(&call->Done, Executive, KernelMode, FALSE, &timeout) ==
            STATUS_TIMEOUT) {
        InterlockedOr(&g_ProviderFlags, WSKR_PROVIDER_LOCAL_ADDRESS_MISSING);
    } else if (NT_SUCCESS(call->Status)) {
        port = (USHORT)((call->Address.sin6_port >> 8) | (call->Address.sin6_port << 8));
    }
    CallRelease(call);
    return port;
}

static NTSTATUS Open(WSKR_CLIENT *client, PIRP irp, ULONG inLength, ULONG outLength)
{
    WSKR_OPEN_IN in;
    WSKR_OPEN_OUT out;
    WSKR_SOCKET *s;
    ULONG index = WSKR_MAX_SOCKETS, i;
    PWSK_SOCKET wsk = NULL;
    NTSTATUS status;
    KIRQL irql;

    if (inLength != sizeof(in) || outLength < sizeof(out)) return STATUS_INVALID_BUFFER_SIZE;
    RtlCopyMemory(&in, irp->AssociatedIrp.SystemBuffer, sizeof(in));
    if ((in.Family != AF_INET && in.Family != AF_INET6) || (in.Flags & ~WSKR_OPEN_BIND_LOCAL) ||
        !AddressValid(&in.Remote, in.Family) ||
        ((in.Flags & WSKR_OPEN_BIND_LOCAL) && !AddressValid(&in.Local, in.Family)))
        return STATUS_INVALID_PARAMETER;
    status = CaptureProvider();
    if (!NT_SUCCESS(status)) return status;

    s = (WSKR_SOCKET *)ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(*s), WSKR_TAG);
    if (s == NULL) return STATUS_INSUFFICIENT_RESOURCES;
    RtlZeroMemory(s, sizeof(*s));
    s->Client = client;
    s->Refs = 1;
    s->ReceiveBuffer = (PUCHAR)ExAllocatePoolWithTag(NonPagedPoolNx, WSKR_RECEIVE_CHUNK,
                                                     WSKR_TAG);
    s->ReceiveIrp = IoAllocateIrp(1, FALSE);
    if (s->ReceiveBuffer)
        s->ReceiveMdl = IoAllocateMdl(s->ReceiveBuffer, WSKR_RECEIVE_CHUNK, FALSE, FALSE, NULL);
    InterlockedIncrement(&client->Refs);
    if (s->ReceiveMdl == NULL || s->ReceiveIrp == NULL) {
        SocketRelease(s);
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    MmBuildMdlForNonPagedPool(s->ReceiveMdl);

    KeAcquireSpinLock(&client->Lock, &irql);
    for (i = 0; i < WSKR_MAX_SOCKETS && !client->Closing; i++) {
        if (client->Sockets[i] == NULL) {
            index = i;
            client->Generation[i]++;
            s->Handle = ((ULONG)client->Generation[i] << 16) | i;
            s->Closing = 1; /* not usable until connected */
            client->Sockets[i] = s;
            break;
        }
    }
    KeReleaseSpinLock(&client->Lock, irql);
    if (index == WSKR_MAX_SOCKETS) {
        SocketRelease(s);
        return STATUS_TOO_MANY_OPENED_FILES;
    }

    RtlZeroMemory(&out, sizeof(out));
    status = Connect(&in, &out, &wsk);
    if (NT_SUCCESS(status)) {
        s->Wsk = wsk;
        s->Dispatch = (const WSK_PROVIDER_CONNECTION_DISPATCH *)wsk->Dispatch;
        WrapDispatch(s->Dispatch);
        out.LocalPort = LocalPort(wsk, s->Dispatch);
        out.Handle = s->Handle;
        InterlockedExchange(&s->Closing, 0);
        PostReceive(s);
    } else {
        KeAcquireSpinLock(&client->Lock, &irql);
        client->Sockets[index] = NULL;
        KeReleaseSpinLock(&client->Lock, irql);
        SocketRelease(s);
    }
    out.Status = status;
    RtlCopyMemory(irp->AssociatedIrp.SystemBuffer, &out, sizeof(out));
    irp->IoStatus.Information = sizeof(out);
    return STATUS_SUCCESS;
}

/* The payload in nonpaged memory, as an MDL chain of the recorded pieces. */
static NTSTATUS BuildPayload(WSKR_CALL *call, const WSKR_SEND_IN *in, const UCHAR *payload)
{
    ULONG pieces = in->MdlPieces ? in->MdlPieces : 1, i, offset = 0;
    PMDL *tail = &call->Mdl;
    if (in->PayloadLength == 0) return STATUS_SUCCESS;
    call->Buffer = (PUCHAR)ExAllocatePoolWithTag(NonPagedPoolNx, in->PayloadLength, WSKR_TAG);
    if (call->Buffer == NULL) return STATUS_INSUFFICIENT_RESOURCES;
    RtlCopyMemory(call->Buffer, payload, in->PayloadLength);
    for (i = 0; i < pieces; i++) {
        ULONG length = in->MdlPieces > 1 ? in->MdlLengths[i] : in->PayloadLength;
        PMDL mdl = IoAllocateMdl(call->Buffer + offset, length, FALSE, FALSE, NULL);
        if (mdl == NULL) return STATUS_INSUFFICIENT_RESOURCES;
        MmBuildMdlForNonPagedPool(mdl);
        *tail = mdl;
        tail = &mdl->Next;
        offset += length;
    }
    return STATUS_SUCCESS;
}

static NTSTATUS CheckSend(const WSKR_SEND_IN *in, ULONG inLength)
{
    ULONG i, sum = 0;
    if (in->ControlInfoLength > WSKR_MAX_CONTROL_INFO || in->PayloadLength > WSKR_MAX_PAYLOAD ||
        (!in->HasControlInfo && in->ControlInfoLength) ||
        (in->HasControlInfo && in->ControlInfoLength < sizeof(CMSGHDR)) ||
        inLength != sizeof(*in) + in->ControlInfoLength + in->PayloadLength ||
        (in->Irql != WSKR_IRQL_AS_CALLER && in->Irql > DISPATCH_LEVEL) ||
        in->MdlPieces > WSKR_MAX_MDL_PIECES)
        return STATUS_INVALID_PARAMETER;
    if (in->MdlPieces > 1) {
        for (i = 0; i < in->MdlPieces; i++) {
            if (in->MdlLengths[i] == 0 || in->MdlLengths[i] > in->PayloadLength)
                return STATUS_INVALID_PARAMETER;
            sum += in->MdlLengths[i];
        }
        if (sum != in->PayloadLength) return STATUS_INVALID_PARAMETER;
    }
    return STATUS_SUCCESS;
}

static NTSTATUS Send(WSKR_CLIENT *client, PIRP irp, ULONG inLength, ULONG outLength)
{
    const UCHAR *system = (const UCHAR *)irp->AssociatedIrp.SystemBuffer;
    WSKR_SEND_IN in;
    WSKR_SEND_OUT out;
    WSKR_SOCKET *s;
    WSKR_CALL *call;
    WSK_BUF buf;
    PCMSGHDR control;
    KIRQL old = PASSIVE_LEVEL;
    BOOLEAN raised = FALSE;
    NTSTATUS status;

    if (inLength < sizeof(in) || outLength < sizeof(out)) return STATUS_INVALID_BUFFER_SIZE;
    RtlCopyMemory(&in, system, sizeof(in));
    status = CheckSend(&in, inLength);
    if (!NT_SUCCESS(status)) return status;
    s = Lookup(client, in.Handle);
    if (s == NULL) return STATUS_INVALID_HANDLE;
    if (InterlockedIncrement(&client->SendsInFlight) > WSKR_MAX_SENDS_IN_FLIGHT) {
        InterlockedDecrement(&client->SendsInFlight);
        SocketRelease(s);
        return STATUS_QUOTA_EXCEEDED;
    }
    RtlZeroMemory(&out, sizeof(out));
    control = in.HasControlInfo ? (PCMSGHDR)(system + sizeof(in)) : NULL;
    call = NewCall(s, WSKR_EVENT_SEND_COMPLETED, in.CallId);
    if (call != NULL) call->Send = TRUE;
    status = call == NULL ? STATUS_INSUFFICIENT_RESOURCES
                          : BuildPayload(call, &in, system + sizeof(in) + in.ControlInfoLength);
    if (!NT_SUCCESS(status)) {
        if (call != NULL) {
            Settle(call);
            SocketRelease(s);
            CallRelease(call);
            CallRelease(call);
        } else {
            InterlockedDecrement(&client->SendsInFlight);
        }
        SocketRelease(s);
        return status;
    }
    buf.Mdl = call->Mdl;
    buf.Offset = 0;
    buf.Length = in.PayloadLength;
    if (control != NULL && (g_ProviderFlags & WSKR_PROVIDER_SENDEX_MISSING)) {
        /* WskSend cannot carry ControlInfo: refused, and the IRP completes with the
           refusal, as the provider completes every IRP of a call it fails. */
        out.QpcEntry = out.QpcReturn = Qpc();
        out.Status = STATUS_NOT_SUPPORTED;
        out.Sent = WSKR_SENT_FALLBACK;
        Settle(call);
        Enqueue(client, WSKR_EVENT_SEND_COMPLETED, s->Handle, in.CallId, STATUS_NOT_SUPPORTED,
                0, NULL, 0);
        SocketRelease(s);
        CallRelease(call);
        CallRelease(call);
    } else {
        if (in.Irql != WSKR_IRQL_AS_CALLER && in.Irql > KeGetCurrentIrql()) {
            KeRaiseIrql(in.Irql, &old);
            raised = TRUE;
        }
        out.QpcEntry = Qpc();
        if (!(g_ProviderFlags & WSKR_PROVIDER_SENDEX_MISSING)) {
            status = g_Recorded.WskSendEx(s->Wsk, &buf, in.Flags, in.ControlInfoLength, control,
                                          call->Irp);
        } else {
            status = s->Dispatch->WskSend(s->Wsk, &buf, in.Flags, call->Irp);
            out.Sent = WSKR_SENT_FALLBACK;
        }
        out.QpcReturn = Qpc();
        if (raised) KeLowerIrql(old);
        if (out.Sent == 0 && SettledByStub(call, status)) {
            /* The provider has no WskSendEx: this call and those after it use WskSend. */
            InterlockedOr(&g_ProviderFlags, WSKR_PROVIDER_SENDEX_MISSING);
            CallRelease(call);
            SocketRelease(s);
            return Send(client, irp, inLength, outLength);
        }
        out.Status = status;
        CallRelease(call);
    }
    SocketRelease(s);
    RtlCopyMemory(irp->AssociatedIrp.SystemBuffer, &out, sizeof(out));
    irp->IoStatus.Information = sizeof(out);
    return STATUS_SUCCESS;
}

static NTSTATUS Disconnect(WSKR_CLIENT *client, PIRP irp, ULONG inLength, ULONG outLength)
{
    WSKR_DISCONNECT_IN in;
    WSKR_STATUS_OUT out;
    WSKR_SOCKET *s;
    WSKR_CALL *call;
    if (inLength != sizeof(in) || outLength < sizeof(out)) return STATUS_INVALID_BUFFER_SIZE;
    RtlCopyMemory(&in, irp->AssociatedIrp.SystemBuffer, sizeof(in));
    if (in.Abortive > 1) return STATUS_INVALID_PARAMETER;
    s = Lookup(client, in.Handle);
    if (s == NULL) return STATUS_INVALID_HANDLE;
    RtlZeroMemory(&out, sizeof(out));
    call = NewCall(s, WSKR_EVENT_DISCONNECTED, in.CallId);
    if (call == NULL) {
        out.Status = STATUS_INSUFFICIENT_RESOURCES;
    } else {
        out.Qpc = Qpc();
        out.Status = s->Dispatch->WskDisconnect(s->Wsk, NULL,
                                                in.Abortive ? WSK_FLAG_ABORTIVE : 0, call->Irp);
        SettledByStub(call, out.Status);
        CallRelease(call);
    }
    SocketRelease(s);
    RtlCopyMemory(irp->AssociatedIrp.SystemBuffer, &out, sizeof(out));
    irp->IoStatus.Information = sizeof(out);
    return STATUS_SUCCESS;
}

/* Takes the socket out of the table and closes it; the table's reference goes with the
   close's completion. */
static NTSTATUS CloseSocket(WSKR_SOCKET *s, ULONGLONG callId, BOOLEAN report)
{
    WSKR_CLIENT *client = s->Client;
    WSKR_CALL *call;
    NTSTATUS status;
    KIRQL irql;
    KeAcquireSpinLock(&client->Lock, &irql);
    client->Sockets[s->Handle & 0xFFFF] = NULL;
    KeReleaseSpinLock(&client->Lock, irql);
    InterlockedExchange(&s->Closing, 1);
    call = NewCall(s, report ? WSKR_EVENT_CLOSED : 0, callId);
    if (call == NULL) return STATUS_INSUFFICIENT_RESOURCES;
    status = s->Dispatch->Basic.WskCloseSocket(s->Wsk, call->Irp);
    SettledByStub(call, status);
    CallRelease(call);
    SocketRelease(s); /* the table's */
    return status;
}

static NTSTATUS Close(WSKR_CLIENT *client, PIRP irp, ULONG inLength, ULONG outLength)
{
    WSKR_CLOSE_IN in;
    WSKR_STATUS_OUT out;
    WSKR_SOCKET *s;
    if (inLength != sizeof(in) || outLength < sizeof(out)) return STATUS_INVALID_BUFFER_SIZE;
    RtlCopyMemory(&in, irp->AssociatedIrp.SystemBuffer, sizeof(in));
    s = Lookup(client, in.Handle);
    if (s == NULL) return STATUS_INVALID_HANDLE;
    RtlZeroMemory(&out, sizeof(out));
    out.Qpc = Qpc();
    out.Status = CloseSocket(s, in.CallId, TRUE);
    SocketRelease(s); /* Lookup's */
    RtlCopyMemory(irp->AssociatedIrp.SystemBuffer, &out, sizeof(out));
    irp->IoStatus.Information = sizeof(out);
    return STATUS_SUCCESS;
}

static NTSTATUS Wait(WSKR_CLIENT *client, PIRP irp, ULONG outLength)
{
    LIST_ENTRY done;
    ULONG used = 0;
    NTSTATUS status = STATUS_PENDING;
    KIRQL irql;
    if (outLength < WSKR_WAIT_MIN_OUTPUT) return STATUS_BUFFER_TOO_SMALL;
    InitializeListHead(&done);
    KeAcquireSpinLock(&client->Lock, &irql);
    if (client->Closing) {
        status = STATUS_CANCELLED;
    } else if (client->Lost) {
        client->Lost = 0;
        status = STATUS_INSUFFICIENT_RESOURCES;
    } else if (!IsListEmpty(&client->Events)) {
        used = FillWait(client, irp, &done);
        status = STATUS_SUCCESS;
    } else {
        InterlockedIncrement(&client->Refs);
        irp->Tail.Overlay.DriverContext[0] = client;
        IoSetCancelRoutine(irp, WaitCancelled);
        if (irp->Cancel && IoSetCancelRoutine(irp, NULL) != NULL) {
            status = STATUS_CANCELLED;
            InterlockedDecrement(&client->Refs); /* never the last: the file holds one */
        } else {
            IoMarkIrpPending(irp);
            InsertTailList(&client->Waiters, &irp->Tail.Overlay.ListEntry);
        }
    }
    KeReleaseSpinLock(&client->Lock, irql);
    FreeEvents(&done);
    if (status == STATUS_SUCCESS) ResumeReceives(client);
    irp->IoStatus.Information = used;
    return status;
}

static NTSTATUS Info(PIRP irp, ULONG outLength)
{
    WSKR_INFO info;
    NTSTATUS status = CaptureProvider();
    if (outLength < sizeof(info)) return STATUS_INVALID_BUFFER_SIZE;
    if (!NT_SUCCESS(status)) return status;
    RtlZeroMemory(&info, sizeof(info));
    info.InterfaceVersion = WSKR_INTERFACE_VERSION;
    info.Provider = (ULONG)g_ProviderFlags;
    info.ProviderVersion = g_Provider.Dispatch->Version;
    info.MaxSockets = WSKR_MAX_SOCKETS;
    info.MaxSendsInFlight = WSKR_MAX_SENDS_IN_FLIGHT;
    info.MaxPayload = WSKR_MAX_PAYLOAD;
    info.MaxControlInfo = WSKR_MAX_CONTROL_INFO;
    info.ReceiveChunk = WSKR_RECEIVE_CHUNK;
    RtlCopyMemory(irp->AssociatedIrp.SystemBuffer, &info, sizeof(info));
    irp->IoStatus.Information = sizeof(info);
    return STATUS_SUCCESS;
}

static NTSTATUS ClockQuery(PIRP irp, ULONG outLength)
{
    WSKR_CLOCK clock;
    LARGE_INTEGER frequency;
    if (outLength < sizeof(clock)) return STATUS_INVALID_BUFFER_SIZE;
    clock.Qpc = KeQueryPerformanceCounter(&frequency).QuadPart;
    clock.Frequency = frequency.QuadPart;
    RtlCopyMemory(irp->AssociatedIrp.SystemBuffer, &clock, sizeof(clock));
    irp->IoStatus.Information = sizeof(clock);
    return STATUS_SUCCESS;
}

static NTSTATUS DeviceControl(PDEVICE_OBJECT device, PIRP irp)
{
    PIO_STACK_LOCATION sp = IoGetCurrentIrpStackLocation(irp);
    WSKR_CLIENT *client = (WSKR_CLIENT *)sp->FileObject->FsContext;
    ULONG in = sp->Parameters.DeviceIoControl.InputBufferLength;
    ULONG out = sp->Parameters.DeviceIoControl.OutputBufferLength;
    NTSTATUS status;
    UNREFERENCED_PARAMETER(device);
    irp->IoStatus.Information = 0;
    if (client == NULL) {
        status = STATUS_INVALID_DEVICE_REQUEST;
    } else {
        switch (sp->Parameters.DeviceIoControl.IoControlCode) {
        case IOCTL_WSKR_INFO: status = Info(irp, out); break;
        case IOCTL_WSKR_CLOCK: status = ClockQuery(irp, out); break;
        case IOCTL_WSKR_OPEN: status = Open(client, irp, in, out); break;
        case IOCTL_WSKR_SEND: status = Send(client, irp, in, out); break;
        case IOCTL_WSKR_DISCONNECT: status = Disconnect(client, irp, in, out); break;
        case IOCTL_WSKR_CLOSE: status = Close(client, irp, in, out); break;
        case IOCTL_WSKR_WAIT: status = Wait(client, irp, out); break;
        default: status = STATUS_INVALID_DEVICE_REQUEST; break;
        }
    }
    if (status == STATUS_PENDING) return status;
    irp->IoStatus.Status = status;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return status;
}

/* ---- handles of the device -------------------------------------------------------------- */

static NTSTATUS Create(PDEVICE_OBJECT device, PIRP irp)
{
    PIO_STACK_LOCATION sp = IoGetCurrentIrpStackLocation(irp);
    WSKR_CLIENT *client;
    NTSTATUS status = STATUS_SUCCESS;
    UNREFERENCED_PARAMETER(device);
    client = (WSKR_CLIENT *)ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(WSKR_CLIENT), WSKR_TAG);
    if (client == NULL) {
        status = STATUS_INSUFFICIENT_RESOURCES;
    } else {
        RtlZeroMemory(client, sizeof(*client));
        KeInitializeSpinLock(&client->Lock);
        InitializeListHead(&client->Events);
        InitializeListHead(&client->Waiters);
        client->Refs = 1;
        sp->FileObject->FsContext = client;
    }
    irp->IoStatus.Status = status;
    irp->IoStatus.Information = 0;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return status;
}

/* The handle's last user is gone (or died): its sockets are closed, its WAIT cancelled. */
static NTSTATUS Cleanup(PDEVICE_OBJECT device, PIRP irp)
{
    WSKR_CLIENT *client = (WSKR_CLIENT *)IoGetCurrentIrpStackLocation(irp)->FileObject->FsContext;
    ULONG i;
    KIRQL irql;
    UNREFERENCED_PARAMETER(device);
    if (client != NULL) {
        PIRP waiter;
        KeAcquireSpinLock(&client->Lock, &irql);
        client->Closing = TRUE;
        KeReleaseSpinLock(&client->Lock, irql);
        for (;;) {
            KeAcquireSpinLock(&client->Lock, &irql);
            waiter = TakeWaiter(client);
            KeReleaseSpinLock(&client->Lock, irql);
            if (waiter == NULL) break;
            CompleteWaiter(waiter, STATUS_CANCELLED, 0);
        }
        for (i = 0; i < WSKR_MAX_SOCKETS; i++) {
            WSKR_SOCKET *s = NULL;
            KeAcquireSpinLock(&client->Lock, &irql);
            if (client->Sockets[i] != NULL && !client->Sockets[i]->Closing) {
                s = client->Sockets[i];
                InterlockedIncrement(&s->Refs);
            }
            KeReleaseSpinLock(&client->Lock, irql);
            if (s != NULL) {
                CloseSocket(s, 0, FALSE);
                SocketRelease(s);
            }
        }
    }
    irp->IoStatus.Status = STATUS_SUCCESS;
    irp->IoStatus.Information = 0;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return STATUS_SUCCESS;
}

static NTSTATUS CloseDevice(PDEVICE_OBJECT device, PIRP irp)
{
    PFILE_OBJECT file = IoGetCurrentIrpStackLocation(irp)->FileObject;
    UNREFERENCED_PARAMETER(device);
    if (file->FsContext != NULL) {
        ClientRelease((WSKR_CLIENT *)file->FsContext);
        file->FsContext = NULL;
    }
    irp->IoStatus.Status = STATUS_SUCCESS;
    irp->IoStatus.Information = 0;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return STATUS_SUCCESS;
}

/* ---- load and unload ---------------------------------------------------------------------- */

static VOID Unload(PDRIVER_OBJECT driver)
{
    UNICODE_STRING link;
    LARGE_INTEGER timeout;
    RtlInitUnicodeString(&link, WSKR_DOS_NAME);
    IoDeleteSymbolicLink(&link);
    timeout.QuadPart = -10000LL * WSKR_UNLOAD_TIMEOUT_MS;
    if (KeWaitForSingleObject(&g_Idle, Executive, KernelMode, FALSE, &timeout) == STATUS_TIMEOUT)
        DbgPrint("wskrtest: unloading with %ld provider calls never completed\n",
                 (long)g_Outstanding);
    if (g_Captured) WskReleaseProviderNPI(&g_Registration);
    if (g_Registered) WskDeregister(&g_Registration);
    WskReplayUnregister();
    IoDeleteDevice(driver->DeviceObject);
    DbgPrint("wskrtest: unloaded\n");
}

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registryPath)
{
    UNICODE_STRING name, link;
    WSK_CLIENT_NPI npi;
    NTSTATUS status;
    UNREFERENCED_PARAMETER(registryPath);
    ExInitializeFastMutex(&g_CaptureLock);
    KeInitializeEvent(&g_Idle, NotificationEvent, TRUE);
    RtlInitUnicodeString(&name, WSKR_DEVICE_NAME);
    RtlInitUnicodeString(&link, WSKR_DOS_NAME);
#ifdef WSKRTEST_WDK
    {
        UNICODE_STRING sddl;
        RtlInitUnicodeString(&sddl, WSKR_DEVICE_SDDL);
        status = IoCreateDeviceSecure(driver, 0, &name, FILE_DEVICE_NETWORK,
                                      FILE_DEVICE_SECURE_OPEN, FALSE, &sddl, NULL, &g_Device);
    }
#else
    status = IoCreateDevice(driver, 0, &name, FILE_DEVICE_NETWORK, FILE_DEVICE_SECURE_OPEN,
                            FALSE, &g_Device);
#endif
    if (!NT_SUCCESS(status)) return status;
    status = IoCreateSymbolicLink(&link, &name);
    if (!NT_SUCCESS(status)) {
        IoDeleteDevice(g_Device);
        return status;
    }
    npi.ClientContext = NULL;
    npi.Dispatch = &g_ClientDispatch;
    status = WskRegister(&npi, &g_Registration);
    if (!NT_SUCCESS(status)) {
        IoDeleteSymbolicLink(&link);
        IoDeleteDevice(g_Device);
        return status;
    }
    g_Registered = TRUE;
    WskReplayRegister();
    driver->MajorFunction[IRP_MJ_CREATE] = Create;
    driver->MajorFunction[IRP_MJ_CLEANUP] = Cleanup;
    driver->MajorFunction[IRP_MJ_CLOSE] = CloseDevice;
    driver->MajorFunction[IRP_MJ_DEVICE_CONTROL] = DeviceControl;
    driver->DriverUnload = Unload;
    DbgPrint("wskrtest: loaded\n");
    return STATUS_SUCCESS;
}
