/* Stand-in for the WDK's km/wsk.h (and the ws2def.h parts it uses): only what
   instrument/wskreplay_recorder.h touches, with the WDK's names and types, so that
   x86_64-w64-mingw32-gcc -fsyntax-only can check the header. Not a WSK implementation. */
#ifndef WSKREPLAY_STUB_WSK_H
#define WSKREPLAY_STUB_WSK_H

#include <stddef.h>

#define WSKAPI NTAPI
#define AF_INET 2
#define AF_INET6 23

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

typedef struct _WSK_SOCKET { const VOID *Dispatch; } WSK_SOCKET, *PWSK_SOCKET;
typedef struct _WSK_BUF { PMDL Mdl; ULONG Offset; SIZE_T Length; } WSK_BUF, *PWSK_BUF;

typedef NTSTATUS (WSKAPI *PFN_WSK_SEND_EX)(PWSK_SOCKET Socket, PWSK_BUF Buffer, ULONG Flags,
                                           ULONG ControlInfoLength, PCMSGHDR ControlInfo,
                                           PIRP Irp);
typedef NTSTATUS (WSKAPI *PFN_WSK_OTHER)(VOID);

/* Member order as in the WDK: WskSendEx at x64 offset 0x58 (connection) and 0x68 (stream),
   per shared/reference/wsk-facts.md. The entries before it are placeholders here. */
typedef struct _WSK_PROVIDER_CONNECTION_DISPATCH {
    PFN_WSK_OTHER Before[11];
    PFN_WSK_SEND_EX WskSendEx;
    PFN_WSK_OTHER After[3];
} WSK_PROVIDER_CONNECTION_DISPATCH;

typedef struct _WSK_PROVIDER_STREAM_DISPATCH {
    PFN_WSK_OTHER Before[13];
    PFN_WSK_SEND_EX WskSendEx;
    PFN_WSK_OTHER After[3];
} WSK_PROVIDER_STREAM_DISPATCH;

#ifdef _WIN64
_Static_assert(offsetof(WSK_PROVIDER_CONNECTION_DISPATCH, WskSendEx) == 0x58, "x64 layout");
_Static_assert(offsetof(WSK_PROVIDER_STREAM_DISPATCH, WskSendEx) == 0x68, "x64 layout");
_Static_assert(sizeof(WSK_BUF) == 24, "WSK_BUF is 24 bytes on x64");
_Static_assert(sizeof(CMSGHDR) == 16, "CMSGHDR is 16 bytes on x64");
#endif

#endif
