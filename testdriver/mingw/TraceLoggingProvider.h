/* Stand-in for the Windows SDK's TraceLoggingProvider.h: the macros the recorder header
   uses, each expanding to a call of a typed function, so that the compiler checks every
   field's value against its TraceLogging type. Emits nothing: the mingw build of
   wskrtest.sys (for Wine, which has no ETW) records no events. */
#ifndef WSKREPLAY_STUB_TRACELOGGING_H
#define WSKREPLAY_STUB_TRACELOGGING_H

typedef struct _TLG_PROVIDER { const char *Name; GUID Id; } TLG_PROVIDER;
typedef const TLG_PROVIDER *TraceLoggingHProvider;

#define TRACELOGGING_DECLARE_PROVIDER(h) extern const TraceLoggingHProvider h
#define TRACELOGGING_DEFINE_PROVIDER(h, name, id) \
    static const TLG_PROVIDER h##_storage = {name, {_TLG_GUID id}}; \
    const TraceLoggingHProvider h = &h##_storage
#define _TLG_GUID(l, w1, w2, b1, b2, b3, b4, b5, b6, b7, b8) \
    l, w1, w2, {b1, b2, b3, b4, b5, b6, b7, b8}

static inline NTSTATUS TraceLoggingRegister(TraceLoggingHProvider h) { (void)h; return 0; }
static inline VOID TraceLoggingUnregister(TraceLoggingHProvider h) { (void)h; }

static inline int _TlgField(const char *name) { return name != 0; }
static inline int _TlgUInt8(UINT8 v, const char *n) { (void)v; return _TlgField(n); }
static inline int _TlgUInt16(UINT16 v, const char *n) { (void)v; return _TlgField(n); }
static inline int _TlgUInt32(UINT32 v, const char *n) { (void)v; return _TlgField(n); }
static inline int _TlgUInt64(UINT64 v, const char *n) { (void)v; return _TlgField(n); }
static inline int _TlgBinary(const void *p, UINT16 size, const char *n)
{
    (void)p; (void)size; return _TlgField(n);
}
static inline void _TlgWrite(TraceLoggingHProvider h, const char *event, int fields, ...)
{
    (void)h; (void)event; (void)fields;
}

#define TraceLoggingUInt8(v, n) _TlgUInt8((v), (n))
#define TraceLoggingUInt16(v, n) _TlgUInt16((v), (n))
#define TraceLoggingUInt32(v, n) _TlgUInt32((v), (n))
#define TraceLoggingUInt64(v, n) _TlgUInt64((v), (n))
#define TraceLoggingHexUInt64(v, n) _TlgUInt64((v), (n))
#define TraceLoggingBinary(p, size, n) _TlgBinary((p), (size), (n))
#define TraceLoggingWrite(h, event, ...) _TlgWrite((h), (event), __VA_ARGS__)

#endif
