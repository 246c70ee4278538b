/*
 * wskr_ioctl.h: the interface between wskrtest.sys and its agent (user mode), shared by
 * both. Every request is METHOD_BUFFERED; every structure has a fixed size, and the
 * driver checks each input length, handle and field before it acts on it.
 *
 * The calls a replay makes go one per IOCTL; what happens later (a send completing,
 * bytes arriving, a connection ending) comes back through IOCTL_WSKR_WAIT, which the agent
 * keeps pending (the inverted-call pattern) and the driver completes with a batch of
 * WSKR_EVENT records.
 */
#ifndef WSKR_IOCTL_H
#define WSKR_IOCTL_H

#define WSKR_DEVICE_NAME L"\\Device\\WskReplayTest"
#define WSKR_DOS_NAME L"\\DosDevices\\WskReplayTest"
#define WSKR_USER_PATH L"\\\\.\\WskReplayTest"

#define WSKR_INTERFACE_VERSION 1

#define WSKR_CTL(n) CTL_CODE(FILE_DEVICE_NETWORK, 0x900 + (n), METHOD_BUFFERED, FILE_READ_DATA | FILE_WRITE_DATA)
#define IOCTL_WSKR_INFO WSKR_CTL(0)
#define IOCTL_WSKR_CLOCK WSKR_CTL(1)
#define IOCTL_WSKR_OPEN WSKR_CTL(2)
#define IOCTL_WSKR_SEND WSKR_CTL(3)
#define IOCTL_WSKR_DISCONNECT WSKR_CTL(4)
#define IOCTL_WSKR_CLOSE WSKR_CTL(5)
#define IOCTL_WSKR_WAIT WSKR_CTL(6)

/* Limits, per client (one open handle of the device). */
#define WSKR_MAX_SOCKETS 1024
#define WSKR_MAX_SENDS_IN_FLIGHT 4096
#define WSKR_MAX_PAYLOAD (4u << 20)
#define WSKR_MAX_CONTROL_INFO 4096
#define WSKR_MAX_MDL_PIECES 16
#define WSKR_RECEIVE_CHUNK 65536
#define WSKR_MAX_QUEUED_BYTES (16u << 20)
/* A WAIT's output buffer holds at least one event with a whole receive chunk. */
#define WSKR_WAIT_MIN_OUTPUT (sizeof(WSKR_EVENT) + WSKR_RECEIVE_CHUNK)

/* Bounded waits (milliseconds): a provider call that does not complete in time is
   reported as STATUS_IO_TIMEOUT and its IRP is left to the provider. */
#define WSKR_CONNECT_TIMEOUT_MS 10000
#define WSKR_QUERY_TIMEOUT_MS 200
#define WSKR_UNLOAD_TIMEOUT_MS 5000

/* WSKR_INFO.Provider */
#define WSKR_PROVIDER_SENDEX_MISSING 0x1  /* WskSendEx NULL or STATUS_NOT_IMPLEMENTED: WskSend used */
#define WSKR_PROVIDER_SOCKET_CONNECT_MISSING 0x2 /* WskSocket + WskBind + WskConnect used */
#define WSKR_PROVIDER_LOCAL_ADDRESS_MISSING 0x4 /* WskGetLocalAddress did not answer */

typedef struct _WSKR_INFO {
    ULONG InterfaceVersion;
    ULONG Provider;
    ULONG ProviderVersion;
    ULONG MaxSockets;
    ULONG MaxSendsInFlight;
    ULONG MaxPayload;
    ULONG MaxControlInfo;
    ULONG ReceiveChunk;
} WSKR_INFO;

typedef struct _WSKR_CLOCK {
    LONGLONG Qpc;
    LONGLONG Frequency;
} WSKR_CLOCK;

/* A sockaddr_in or sockaddr_in6, as bytes (28 holds either). */
typedef struct _WSKR_ADDRESS {
    UCHAR Bytes[28];
} WSKR_ADDRESS;

#define WSKR_OPEN_BIND_LOCAL 0x1
typedef struct _WSKR_OPEN_IN {
    USHORT Family; /* AF_INET (2) or AF_INET6 (23) */
    USHORT Flags;  /* WSKR_OPEN_BIND_LOCAL: Local is the address to bind */
    ULONG Reserved;
    WSKR_ADDRESS Local;
    WSKR_ADDRESS Remote;
} WSKR_OPEN_IN;

#define WSKR_OPENED_BY_SOCKET_CONNECT 1
#define WSKR_OPENED_BY_SOCKET_BIND_CONNECT 2
typedef struct _WSKR_OPEN_OUT {
    LONG Status;        /* the provider's NTSTATUS for the step that decided */
    ULONG Handle;       /* valid when Status is a success */
    USHORT LocalPort;   /* host order; 0 when the provider did not say */
    USHORT OpenedBy;
    ULONG Step;         /* which call decided Status: 1 socket/socketconnect, 2 bind, 3 connect */
} WSKR_OPEN_OUT;

#define WSKR_IRQL_AS_CALLER 0xFF
/* Followed by ControlInfoLength bytes of ControlInfo, then PayloadLength bytes. */
typedef struct _WSKR_SEND_IN {
    ULONG Handle;
    ULONG Flags;
    ULONGLONG CallId;
    ULONG ControlInfoLength;
    ULONG PayloadLength;
    UCHAR Irql;         /* APC_LEVEL or DISPATCH_LEVEL raises around the call */
    UCHAR HasControlInfo;
    USHORT MdlPieces;   /* 0 or 1: one MDL; more: the payload split as MdlLengths says */
    ULONG MdlLengths[WSKR_MAX_MDL_PIECES];
} WSKR_SEND_IN;

#define WSKR_SENT_FALLBACK 0x1 /* made with WskSend: the provider has no WskSendEx */
typedef struct _WSKR_SEND_OUT {
    LONG Status;        /* what the provider's call returned */
    ULONG Sent;         /* WSKR_SENT_* */
    LONGLONG QpcEntry;
    LONGLONG QpcReturn;
} WSKR_SEND_OUT;

typedef struct _WSKR_DISCONNECT_IN {
    ULONG Handle;
    ULONG Abortive;
    ULONGLONG CallId;
} WSKR_DISCONNECT_IN;

typedef struct _WSKR_CLOSE_IN {
    ULONG Handle;
    ULONG Reserved;
    ULONGLONG CallId;
} WSKR_CLOSE_IN;

typedef struct _WSKR_STATUS_OUT {
    LONG Status;
    ULONG Reserved;
    LONGLONG Qpc;
} WSKR_STATUS_OUT;

#define WSKR_EVENT_SEND_COMPLETED 1  /* CallId's IRP completed: Status, Information */
#define WSKR_EVENT_RECEIVED 2        /* DataLength bytes follow the record */
#define WSKR_EVENT_RECEIVE_ENDED 3   /* Status: success for the peer's FIN, else the error */
#define WSKR_EVENT_DISCONNECTED 4    /* the disconnect's IRP completed */
#define WSKR_EVENT_CLOSED 5          /* the close's IRP completed */
/* Records are 8-byte aligned: the next one starts at
   (offset + sizeof(WSKR_EVENT) + DataLength + 7) & ~7. */
typedef struct _WSKR_EVENT {
    USHORT Kind;
    USHORT Reserved;
    ULONG Handle;
    ULONGLONG CallId;
    LONG Status;
    ULONG DataLength;
    ULONGLONG Information;
    LONGLONG Qpc;
} WSKR_EVENT;

#endif
