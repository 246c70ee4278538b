/* A WSK client's use of the recorder header, as docs/recording.md shows it: compiled with
   -fsyntax-only by tests/test_instrument.py. */
#define WSKREPLAY_RECORDER_IMPLEMENTATION
#include "wskreplay_recorder.h"

static WSK_PROVIDER_CONNECTION_DISPATCH g_Dispatch;

static NTSTATUS SendOne(PWSK_SOCKET Socket, PMDL Mdl, SIZE_T Length, PIRP Irp)
{
    WSK_BUF buf;
    buf.Mdl = Mdl;
    buf.Offset = 0;
    buf.Length = Length;
    return g_Dispatch.WskSendEx(Socket, &buf, 0x2 /* WSK_FLAG_NODELAY */, 0, NULL, Irp);
}

NTSTATUS Example(PWSK_SOCKET Socket, const SOCKADDR *Local, const SOCKADDR *Remote, PMDL Mdl,
                 PIRP Irp)
{
    NTSTATUS status = WskReplayRegister();
    if (!NT_SUCCESS(status)) return status;
    WskReplayWrapConnectionDispatch(Socket->Dispatch, &g_Dispatch);
    WskReplaySocketConnected(Socket, 0x2, Local, Remote, WSKREPLAY_ORIGIN_CONNECT);
    status = SendOne(Socket, Mdl, 100, Irp);
    WskReplayDisconnect(Socket, 0, status);
    WskReplayClose(Socket);
    WskReplayUnregister();
    return status;
}
