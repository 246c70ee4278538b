/*
 * The part of the WDK's km/wsk.h (and the ws2def.h types it uses) that wskrtest.sys and
 * instrument/wskreplay_recorder.h need, for building with mingw-w64, whose DDK headers
 * have no wsk.h. Names, types and member order are the WDK's (x64 offsets asserted at the
 * end); a WDK build uses the WDK's own header instead.
 */
#ifndef WSKREPLAY_MINGW_WSK_H
#define WSKREPLAY_MINGW_WSK_H

#include <stddef.h>

#define WSKAPI NTAPI
#ifndef AF_INET
#define AF_INET 2
#define AF_INET6 23
#endif
#define SOCK_STREAM 1
#define IPPROTO_TCP 6

typedef USHORT ADDRESS_FAMILY;
typedef struct sockaddr { ADDRESS_FAMILY sa_family; CHAR sa_data[14]; } SOCKADDR, *PSOCKADDR;
typedef struct sockaddr_in {
    ADDRESS_FAMILY sin_family; USHORT sin_port; ULONG sin_addr; CHAR sin_zero[8];
} SOCKADDR_IN;
typedef struct sockaddr_in6 {
    ADDRESS_FAMILY sin6_family; USHORT sin6_port; ULONG sin6_flowinfo; UCHAR sin6_addr[16];
    ULONG sin6_scope_id;
} SOCKADDR_IN6;
typedef struct _WSACMSGHDR { SIZE_T cmsg_len; INT cmsg_level; INT cmsg_type; } CMSGHDR,
    *PCMSGHDR;

#define MAKE_WSK_VERSION(Mj, Mn) ((USHORT)((Mj) << 8) | (USHORT)((Mn) & 0xff))
#define WSK_NO_WAIT 0
#define WSK_INFINITE_WAIT 0xffffffff

#define WSK_FLAG_BASIC_SOCKET 0x00000000
#define WSK_FLAG_LISTEN_SOCKET 0x00000001
#define WSK_FLAG_CONNECTION_SOCKET 0x00000002
#define WSK_FLAG_DATAGRAM_SOCKET 0x00000004
#define WSK_FLAG_STREAM_SOCKET 0x00000008
#define WSK_FLAG_ABORTIVE 0x00000001
#define WSK_FLAG_NODELAY 0x00000002

typedef PVOID PWSK_CLIENT;
typedef struct _WSK_SOCKET { const VOID *Dispatch; } WSK_SOCKET, *PWSK_SOCKET;
typedef struct _WSK_BUF { PMDL Mdl; ULONG Offset; SIZE_T Length; } WSK_BUF, *PWSK_BUF;
typedef struct _WSK_DATA_INDICATION WSK_DATA_INDICATION, *PWSK_DATA_INDICATION;
typedef struct _WSK_BUF_LIST WSK_BUF_LIST, *PWSK_BUF_LIST;
typedef enum { WskSetOption, WskGetOption, WskIoctl } WSK_CONTROL_SOCKET_TYPE;

typedef NTSTATUS (WSKAPI *PFN_WSK_CLIENT_EVENT)(PVOID ClientContext, ULONG EventType,
                                                PVOID Information, SIZE_T InformationLength);
typedef struct _WSK_CLIENT_DISPATCH {
    USHORT Version;
    USHORT Reserved;
    PFN_WSK_CLIENT_EVENT WskClientEvent;
} WSK_CLIENT_DISPATCH, *PWSK_CLIENT_DISPATCH;

typedef struct _WSK_CLIENT_NPI {
    PVOID ClientContext;
    const WSK_CLIENT_DISPATCH *Dispatch;
} WSK_CLIENT_NPI, *PWSK_CLIENT_NPI;

typedef struct _WSK_REGISTRATION {
    ULONGLONG ReservedRegistrationState;
    PVOID ReservedRegistrationContext;
    KSPIN_LOCK ReservedRegistrationLock;
} WSK_REGISTRATION, *PWSK_REGISTRATION;

typedef NTSTATUS (WSKAPI *PFN_WSK_SOCKET)(PWSK_CLIENT Client, ADDRESS_FAMILY AddressFamily,
                                          USHORT SocketType, ULONG Protocol, ULONG Flags,
                                          PVOID SocketContext, const VOID *Dispatch,
                                          PEPROCESS OwningProcess, PETHREAD OwningThread,
                                          PSECURITY_DESCRIPTOR SecurityDescriptor, PIRP Irp);
typedef NTSTATUS (WSKAPI *PFN_WSK_SOCKET_CONNECT)(
    PWSK_CLIENT Client, USHORT SocketType, ULONG Protocol, PSOCKADDR LocalAddress,
    PSOCKADDR RemoteAddress, ULONG Flags, PVOID SocketContext, const VOID *Dispatch,
    PEPROCESS OwningProcess, PETHREAD OwningThread, PSECURITY_DESCRIPTOR SecurityDescriptor,
    PIRP Irp);
typedef NTSTATUS (WSKAPI *PFN_WSK_ANY)(VOID);

typedef struct _WSK_PROVIDER_DISPATCH {
    USHORT Version;
    USHORT Reserved;
    PFN_WSK_SOCKET WskSocket;
    PFN_WSK_SOCKET_CONNECT WskSocketConnect;
    PFN_WSK_ANY WskControlClient;
    PFN_WSK_ANY WskGetAddressInfo;
    PFN_WSK_ANY WskFreeAddressInfo;
    PFN_WSK_ANY WskGetNameInfo;
} WSK_PROVIDER_DISPATCH, *PWSK_PROVIDER_DISPATCH;

typedef struct _WSK_PROVIDER_NPI {
    PWSK_CLIENT Client;
    const WSK_PROVIDER_DISPATCH *Dispatch;
} WSK_PROVIDER_NPI, *PWSK_PROVIDER_NPI;

typedef NTSTATUS (WSKAPI *PFN_WSK_CONTROL_SOCKET)(PWSK_SOCKET Socket,
                                                  WSK_CONTROL_SOCKET_TYPE RequestType,
                                                  ULONG ControlCode, ULONG Level,
                                                  SIZE_T InputSize, PVOID InputBuffer,
                                                  SIZE_T OutputSize, PVOID OutputBuffer,
                                                  SIZE_T *OutputSizeReturned, PIRP Irp);
typedef NTSTATUS (WSKAPI *PFN_WSK_CLOSE_SOCKET)(PWSK_SOCKET Socket, PIRP Irp);
typedef NTSTATUS (WSKAPI *PFN_WSK_BIND)(PWSK_SOCKET Socket, PSOCKADDR LocalAddress, ULONG Flags,
                                        PIRP Irp);
typedef NTSTATUS (WSKAPI *PFN_WSK_CONNECT)(PWSK_SOCKET Socket, PSOCKADDR RemoteAddress,
                                           ULONG Flags, PIRP Irp);
typedef NTSTATUS (WSKAPI *PFN_WSK_GET_LOCAL_ADDRESS)(PWSK_SOCKET Socket, PSOCKADDR LocalAddress,
                                                     PIRP Irp);
typedef NTSTATUS (WSKAPI *PFN_WSK_SEND)(PWSK_SOCKET Socket, PWSK_BUF Buffer, ULONG Flags,
                                        PIRP Irp);
typedef NTSTATUS (WSKAPI *PFN_WSK_RECEIVE)(PWSK_SOCKET Socket, PWSK_BUF Buffer, ULONG Flags,
                                           PIRP Irp);
typedef NTSTATUS (WSKAPI *PFN_WSK_DISCONNECT)(PWSK_SOCKET Socket, PWSK_BUF Buffer, ULONG Flags,
                                              PIRP Irp);
typedef NTSTATUS (WSKAPI *PFN_WSK_SEND_EX)(PWSK_SOCKET Socket, PWSK_BUF Buffer, ULONG Flags,
                                           ULONG ControlInfoLength, PCMSGHDR ControlInfo,
                                           PIRP Irp);

typedef struct _WSK_PROVIDER_BASIC_DISPATCH {
    PFN_WSK_CONTROL_SOCKET WskControlSocket;
    PFN_WSK_CLOSE_SOCKET WskCloseSocket;
} WSK_PROVIDER_BASIC_DISPATCH, *PWSK_PROVIDER_BASIC_DISPATCH;

/* The members after Basic that connection and stream sockets share, in the WDK's order. */
#define WSKREPLAY_CONNECTED_MEMBERS                     \
    PFN_WSK_BIND WskBind;                               \
    PFN_WSK_CONNECT WskConnect;                         \
    PFN_WSK_GET_LOCAL_ADDRESS WskGetLocalAddress;       \
    PFN_WSK_GET_LOCAL_ADDRESS WskGetRemoteAddress;      \
    PFN_WSK_SEND WskSend;                               \
    PFN_WSK_RECEIVE WskReceive;                         \
    PFN_WSK_DISCONNECT WskDisconnect;                   \
    PFN_WSK_ANY WskRelease;                             \
    PFN_WSK_ANY WskConnectEx;                           \
    PFN_WSK_SEND_EX WskSendEx;                          \
    PFN_WSK_ANY WskReceiveEx;

typedef struct _WSK_PROVIDER_CONNECTION_DISPATCH {
    WSK_PROVIDER_BASIC_DISPATCH Basic;
    WSKREPLAY_CONNECTED_MEMBERS
} WSK_PROVIDER_CONNECTION_DISPATCH, *PWSK_PROVIDER_CONNECTION_DISPATCH;

typedef struct _WSK_PROVIDER_STREAM_DISPATCH {
    WSK_PROVIDER_BASIC_DISPATCH Basic;
    PFN_WSK_ANY WskListen;
    PFN_WSK_ANY WskAccept;
    WSKREPLAY_CONNECTED_MEMBERS
} WSK_PROVIDER_STREAM_DISPATCH, *PWSK_PROVIDER_STREAM_DISPATCH;

NTSTATUS WSKAPI WskRegister(PWSK_CLIENT_NPI WskClientNpi, PWSK_REGISTRATION WskRegistration);
NTSTATUS WSKAPI WskCaptureProviderNPI(PWSK_REGISTRATION WskRegistration, ULONG WaitTimeout,
                                      PWSK_PROVIDER_NPI WskProviderNpi);
VOID WSKAPI WskReleaseProviderNPI(PWSK_REGISTRATION WskRegistration);
VOID WSKAPI WskDeregister(PWSK_REGISTRATION WskRegistration);

#ifdef _WIN64
_Static_assert(offsetof(WSK_PROVIDER_CONNECTION_DISPATCH, WskSendEx) == 0x58, "x64 layout");
_Static_assert(offsetof(WSK_PROVIDER_STREAM_DISPATCH, WskSendEx) == 0x68, "x64 layout");
_Static_assert(offsetof(WSK_PROVIDER_CONNECTION_DISPATCH, WskReceive) == 0x38, "x64 layout");
_Static_assert(sizeof(WSK_BUF) == 24, "WSK_BUF is 24 bytes on x64");
_Static_assert(sizeof(CMSGHDR) == 16, "CMSGHDR is 16 bytes on x64");
_Static_assert(sizeof(WSK_REGISTRATION) == 24, "WSK_REGISTRATION is 24 bytes on x64");
#endif

#endif
