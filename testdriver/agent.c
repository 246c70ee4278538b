/*
 * wskreplay-agent.exe: serves the agent protocol (docs/agent-protocol.md, version 2) to a
 * replayer and makes its calls through wskrtest.sys.
 *
 *   wskreplay-agent.exe [--listen 127.0.0.1:7393] [--token-file FILE] [--allow-dest CIDR]...
 *
 * One replayer at a time (others wait in the listen backlog); each gets a handle of the
 * device of its own, closed when it leaves, which closes its sockets in the driver. Times
 * are the driver's QPC in nanoseconds. What the protocol refuses (a client that cannot
 * prove it holds the token, a wrong version, an oversized, malformed or wrongly tagged
 * frame, a destination that is neither the replayer's address nor within --allow-dest,
 * too much in flight) ends that client's connection with an error message naming why.
 */
#define _WIN32_WINNT 0x0601
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <bcrypt.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_device.h"
#include "wire.h"

#define AGENT_NAME "wskreplay-agent.exe 1"
#define TOKEN_ENV "WSKREPLAY_AGENT_TOKEN"
#define HELLO_TIMEOUT_MS 10000
#define SEND_TIMEOUT_MS 30000
#define DRAIN_MS 2000
#define MAX_ALLOW 64
#define MAX_IN_FLIGHT_CALLS 4096
#define MAX_IN_FLIGHT_BYTES (64LL << 20)
#define MAX_RECEIVED_BYTES (256LL << 20)
#define STATUS_PENDING_VALUE 0x00000103L
#define STATUS_INVALID_PARAMETER_VALUE ((LONG)0xC000000D)
#define STATUS_FILE_FORCED_CLOSED_VALUE ((LONG)0xC00000B6)
#define DISPATCH_LEVEL_VALUE 2

typedef struct {
    int family;
    unsigned char bytes[16];
    int prefix;
} network;

typedef struct {
    char host[64];
    unsigned short port;
    network allow[MAX_ALLOW];
    int allow_count;
    char token[1024];
    size_t token_len;
} options;

typedef struct {
    int used;
    int64_t sid;
    ULONG handle;
    int closed;
    unsigned char *received;
    size_t received_len, received_size;
} replay_socket;

typedef struct {
    int64_t irp;
    uint32_t bytes;
} in_flight;

typedef struct {
    SOCKET s;
    struct sockaddr_storage peer;
    const options *opt;
    device dev;
    int dev_open;
    uint8_t key[WIRE_TAG_BYTES];
    int keyed;
    uint64_t sent_seq, recv_seq;
    unsigned char *rx;
    size_t rx_used, rx_size;
    replay_socket sockets[WSKR_MAX_SOCKETS];
    in_flight flights[MAX_IN_FLIGHT_CALLS];
    int flight_count;
    long long flight_bytes, received_total;
    unsigned long fallback_sends;
    char why[512];
    char code[32];
} client;

/* ---- refusals ---- */

static int fail(client *c, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof(c->why), fmt, ap);
    va_end(ap);
    snprintf(c->code, sizeof(c->code), "%s", code);
    return -1;
}

/* ---- sockets ---- */

static int wait_socket(SOCKET s, int write, DWORD ms)
{
    fd_set set;
    struct timeval tv;
    FD_ZERO(&set);
    FD_SET(s, &set);
    tv.tv_sec = (long)(ms / 1000);
    tv.tv_usec = (long)(ms % 1000) * 1000;
    return select(0, write ? NULL : &set, write ? &set : NULL, NULL, &tv);
}

static int send_all(client *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        int sent = send(c->s, (const char *)p, n > 0x100000 ? 0x100000 : (int)n, 0);
        if (sent == SOCKET_ERROR) {
            if (WSAGetLastError() != WSAEWOULDBLOCK || wait_socket(c->s, 1, SEND_TIMEOUT_MS) <= 0)
                return fail(c, "closed", "the replayer stopped reading (error %d)",
                            WSAGetLastError());
            continue;
        }
        p += sent;
        n -= (size_t)sent;
    }
    return 0;
}

static int send_message(client *c, mp_buffer *body)
{
    uint8_t header[4], tag[WIRE_TAG_BYTES];
    size_t n = body->used + (c->keyed ? WIRE_TAG_BYTES : 0);
    if (body->failed) return fail(c, "failed", "out of memory encoding a message");
    header[0] = (uint8_t)(n >> 24);
    header[1] = (uint8_t)(n >> 16);
    header[2] = (uint8_t)(n >> 8);
    header[3] = (uint8_t)n;
    if (send_all(c, header, 4) || send_all(c, body->data, body->used)) return -1;
    if (c->keyed) {
        wire_frame_tag(c->key, 'A', c->sent_seq++, body->data, body->used, tag);
        if (send_all(c, tag, WIRE_TAG_BYTES)) return -1;
    }
    return 0;
}

/* The next whole frame in c->rx, reading for at most ms (0: only what is buffered).
   1: frame and n set (consume with drop_frame); 0: none yet; -1: refused or closed. */
static int next_frame(client *c, DWORD ms, uint8_t **frame, size_t *n)
{
    DWORD start = GetTickCount();
    for (;;) {
        if (c->rx_used >= 4) {
            size_t size = (size_t)c->rx[0] << 24 | (size_t)c->rx[1] << 16 |
                          (size_t)c->rx[2] << 8 | c->rx[3];
            if (size > WIRE_MAX_FRAME)
                return fail(c, "too-large", "frame of %zu bytes, limit %u", size, WIRE_MAX_FRAME);
            if (c->rx_used >= 4 + size) {
                *frame = c->rx + 4;
                *n = size;
                return 1;
            }
            if (c->rx_size < 4 + size) {
                unsigned char *grown = (unsigned char *)realloc(c->rx, 4 + size);
                if (grown == NULL) return fail(c, "failed", "out of memory for a frame");
                c->rx = grown;
                c->rx_size = 4 + size;
            }
        } else if (c->rx_size < 4096) {
            unsigned char *grown = (unsigned char *)realloc(c->rx, 4096);
            if (grown == NULL) return fail(c, "failed", "out of memory for a frame");
            c->rx = grown;
            c->rx_size = 4096;
        }
        {
            int got = recv(c->s, (char *)c->rx + c->rx_used, (int)(c->rx_size - c->rx_used), 0);
            if (got == 0) return fail(c, "closed", "the replayer closed the connection");
            if (got > 0) {
                c->rx_used += (size_t)got;
                continue;
            }
            if (WSAGetLastError() != WSAEWOULDBLOCK)
                return fail(c, "closed", "connection error %d", WSAGetLastError());
        }
        {
            DWORD spent = GetTickCount() - start;
            if (ms == 0 || spent >= ms) return ms == 0 ? 0 : fail(c, "no-hello", "nothing received in time");
            if (wait_socket(c->s, 0, ms - spent) < 0) return fail(c, "closed", "select failed");
        }
    }
}

static void drop_frame(client *c, size_t n)
{
    memmove(c->rx, c->rx + 4 + n, c->rx_used - 4 - n);
    c->rx_used -= 4 + n;
}

/* A frame's message, its tag checked when keyed: body and len are the message bytes. */
static int open_frame(client *c, uint8_t *frame, size_t n, const uint8_t **body, size_t *len)
{
    const char *why;
    if (c->keyed) {
        uint8_t tag[WIRE_TAG_BYTES];
        if (n < WIRE_TAG_BYTES) return fail(c, "bad-mac", "frame %llu failed its authentication tag (changed, injected or reordered on the way)", (unsigned long long)c->recv_seq);
        n -= WIRE_TAG_BYTES;
        wire_frame_tag(c->key, 'C', c->recv_seq, frame, n, tag);
        if (!tags_equal(tag, frame + n, WIRE_TAG_BYTES))
            return fail(c, "bad-mac", "frame %llu failed its authentication tag (changed, injected or reordered on the way)", (unsigned long long)c->recv_seq);
        c->recv_seq++;
    }
    if (wire_check(frame, n, WIRE_MAX_FRAME, &why) != 0)
        return fail(c, "malformed", "not a msgpack message: %s", why);
    *body = frame;
    *len = n;
    return 0;
}

static void refuse(client *c)
{
    mp_buffer b;
    char buf[256];
    DWORD start = GetTickCount();
    if (strcmp(c->code, "closed") == 0) return;
    mp_init(&b);
    mp_map(&b, 3);
    mp_str(&b, "op"); mp_str(&b, "error");
    mp_str(&b, "code"); mp_str(&b, c->code);
    mp_str(&b, "message"); mp_str(&b, c->why);
    send_message(c, &b);
    mp_free(&b);
    shutdown(c->s, SD_SEND);
    while (GetTickCount() - start < DRAIN_MS && wait_socket(c->s, 0, DRAIN_MS) > 0 &&
           recv(c->s, buf, sizeof(buf), 0) > 0) {
    }
}

/* ---- addresses ---- */

static int parse_address(const char *text, int *family, unsigned char bytes[16])
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, text, &a4) == 1) {
        *family = AF_INET;
        memcpy(bytes, &a4, 4);
        return 1;
    }
    if (inet_pton(AF_INET6, text, &a6) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(&a6, mapped, 12) == 0) {
            *family = AF_INET;
            memcpy(bytes, (unsigned char *)&a6 + 12, 4);
        } else {
            *family = AF_INET6;
            memcpy(bytes, &a6, 16);
        }
        return 1;
    }
    return 0;
}

static int parse_network(const char *text, network *net)
{
    char host[128];
    const char *slash = strchr(text, '/');
    size_t len = slash ? (size_t)(slash - text) : strlen(text);
    int max;
    if (len >= sizeof(host)) return 0;
    memcpy(host, text, len);
    host[len] = 0;
    if (!parse_address(host, &net->family, net->bytes)) return 0;
    max = net->family == AF_INET ? 32 : 128;
    net->prefix = max;
    if (slash) {
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || p < 0 || p > max) return 0;
        net->prefix = (int)p;
    }
    return 1;
}

static int in_network(const network *net, int family, const unsigned char *bytes)
{
    int full = net->prefix / 8, rest = net->prefix % 8;
    if (family != net->family || memcmp(bytes, net->bytes, (size_t)full) != 0) return 0;
    return rest == 0 || ((bytes[full] ^ net->bytes[full]) & (0xff << (8 - rest))) == 0;
}

static void peer_address(const struct sockaddr_storage *ss, int *family, unsigned char bytes[16])
{
    char text[INET6_ADDRSTRLEN] = "";
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, text, sizeof(text));
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, text, sizeof(text));
    if (!parse_address(text, family, bytes)) *family = 0;
}

static void peer_text(const struct sockaddr_storage *ss, char *text, size_t n)
{
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, text, n);
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, text, n);
}

static int destination_allowed(client *c, const char *host, int *family, unsigned char bytes[16])
{
    int pf, i;
    unsigned char pb[16];
    if (!parse_address(host, family, bytes)) return 0;
    peer_address(&c->peer, &pf, pb);
    if (pf == *family && memcmp(pb, bytes, pf == AF_INET ? 4 : 16) == 0) return 1;
    for (i = 0; i < c->opt->allow_count; i++)
        if (in_network(&c->opt->allow[i], *family, bytes)) return 1;
    return 0;
}

static int is_loopback_storage(const struct sockaddr_storage *ss)
{
    int family;
    unsigned char bytes[16];
    static const unsigned char v6loop[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    peer_address(ss, &family, bytes);
    return (family == AF_INET && bytes[0] == 127) ||
           (family == AF_INET6 && memcmp(bytes, v6loop, 16) == 0);
}

/* ---- the handshake ---- */

static int receive_message(client *c, DWORD ms, const uint8_t **body, size_t *len, size_t *frame_len)
{
    uint8_t *frame;
    int r = next_frame(c, ms, &frame, frame_len);
    if (r <= 0) return r < 0 ? -1 : fail(c, "no-hello", "nothing received in time");
    return open_frame(c, frame, *frame_len, body, len);
}

static int handshake(client *c)
{
    const uint8_t *body, *nonce;
    size_t len, frame_len;
    uint32_t nonce_len;
    int64_t version;
    mp_value v;
    uint8_t agent_nonce[WIRE_NONCE_BYTES], client_nonce[WIRE_NONCE_BYTES], proof[WIRE_TAG_BYTES];
    mp_buffer b;

    if (receive_message(c, HELLO_TIMEOUT_MS, &body, &len, &frame_len)) return -1;
    if (!field_is(body, len, "op", "hello"))
        return fail(c, "no-hello", "the first message must be hello");
    if (!mp_find(body, len, "version", &v) || !mp_as_int(v, &version) || version != WIRE_VERSION) {
        int64_t shown = 0;
        int known = mp_find(body, len, "version", &v) && mp_as_int(v, &shown);
        if (known) return fail(c, "version", "protocol version %lld unknown (this agent: %d)", (long long)shown, WIRE_VERSION);
        return fail(c, "version", "protocol version unknown (this agent: %d)", WIRE_VERSION);
    }
    if (!mp_find(body, len, "nonce", &v) || !mp_as_bin(v, &nonce, &nonce_len) ||
        nonce_len != WIRE_NONCE_BYTES)
        return fail(c, "malformed", "hello: nonce of %d bytes expected", WIRE_NONCE_BYTES);
    memcpy(client_nonce, nonce, WIRE_NONCE_BYTES);
    drop_frame(c, frame_len);
    if (BCryptGenRandom(NULL, agent_nonce, WIRE_NONCE_BYTES, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
        return fail(c, "failed", "no random numbers for the nonce");
    wire_agent_proof((const uint8_t *)c->opt->token, c->opt->token_len, client_nonce, agent_nonce, proof);
    mp_init(&b);
    mp_map(&b, 5);
    mp_str(&b, "op"); mp_str(&b, "challenge");
    mp_str(&b, "id"); mp_int(&b, 1);
    mp_str(&b, "version"); mp_int(&b, WIRE_VERSION);
    mp_str(&b, "nonce"); mp_bin(&b, agent_nonce, WIRE_NONCE_BYTES);
    mp_str(&b, "proof"); mp_bin(&b, proof, WIRE_TAG_BYTES);
    if (send_message(c, &b)) { mp_free(&b); return -1; }
    mp_free(&b);
    wire_session_key((const uint8_t *)c->opt->token, c->opt->token_len, client_nonce, agent_nonce, c->key);
    c->keyed = 1;
    if (receive_message(c, HELLO_TIMEOUT_MS, &body, &len, &frame_len)) {
        if (strcmp(c->code, "bad-mac") == 0) {
            c->keyed = 0;
            return fail(c, "bad-token", "the replayer did not prove it holds the token (a different token?)");
        }
        return -1;
    }
    if (!field_is(body, len, "op", "auth")) return fail(c, "malformed", "expected auth");
    if (!mp_find(body, len, "profile", &v) || !mp_is_map(v))
        return fail(c, "malformed", "auth: field 'profile' missing or wrong type");
    drop_frame(c, frame_len);
    return 0;
}

/* ---- replay sockets and sends in flight ---- */

static replay_socket *by_sid(client *c, int64_t sid)
{
    int i;
    for (i = 0; i < WSKR_MAX_SOCKETS; i++)
        if (c->sockets[i].used && c->sockets[i].sid == sid) return &c->sockets[i];
    return NULL;
}

static replay_socket *by_handle(client *c, ULONG handle)
{
    int i;
    for (i = 0; i < WSKR_MAX_SOCKETS; i++)
        if (c->sockets[i].used && c->sockets[i].handle == handle)
            return &c->sockets[i];
    return NULL;
}

static void flight_done(client *c, int64_t irp)
{
    int i;
    for (i = 0; i < c->flight_count; i++) {
        if (c->flights[i].irp == irp) {
            c->flight_bytes -= c->flights[i].bytes;
            c->flights[i] = c->flights[--c->flight_count];
            return;
        }
    }
}

static void put_event4(mp_buffer *b, const char *kind, int64_t who, int has_who, LONG status, LONGLONG ns)
{
    mp_array(b, 4);
    mp_str(b, kind);
    if (has_who) mp_int(b, who); else mp_nil(b);
    mp_int(b, (uint32_t)status);
    mp_int(b, ns);
}

static void put_completed(mp_buffer *b, int64_t irp, LONG status, uint64_t info, LONGLONG ns)
{
    mp_array(b, 5);
    mp_str(b, "completed");
    mp_int(b, irp);
    mp_int(b, (uint32_t)status);
    mp_uint(b, info);
    mp_int(b, ns);
}

static void put_violation(mp_buffer *b, int64_t irp, int has_irp, const char *kind, const char *detail, LONGLONG ns)
{
    mp_array(b, 5);
    mp_str(b, "violation");
    if (has_irp) mp_int(b, irp); else mp_nil(b);
    mp_str(b, kind);
    mp_str(b, detail);
    mp_int(b, ns);
}

/* ---- requests ---- */

static int want_int(client *c, const uint8_t *body, size_t len, const char *op, const char *name, int64_t *out)
{
    mp_value v;
    if (!mp_find(body, len, name, &v) || !mp_as_int(v, out))
        return fail(c, "malformed", "%s: field '%s' missing or wrong type", op, name);
    return 0;
}

static void reply_header(mp_buffer *b, const char *op, const uint8_t *body, size_t len, uint32_t extra)
{
    mp_value id;
    mp_map(b, 2 + extra);
    mp_str(b, "op"); mp_str(b, op);
    mp_str(b, "id");
    if (mp_find(body, len, "id", &id)) mp_raw(b, id.p, (size_t)(id.end - id.p)); else mp_nil(b);
}

static int op_open(client *c, const uint8_t *body, size_t len)
{
    int64_t sid, port;
    mp_value v;
    const uint8_t *hs;
    uint32_t hn;
    char host[64];
    int family, i;
    unsigned char addr[16];
    WSKR_OPEN_IN in;
    WSKR_OPEN_OUT out;
    DWORD got;
    LONG status;
    replay_socket *slot = NULL;
    mp_buffer b;
    static const char *steps[] = {"", "WskSocketConnect/WskSocket", "WskBind", "WskConnect"};

    if (want_int(c, body, len, "open", "socket", &sid) || want_int(c, body, len, "open", "port", &port)) return -1;
    if (!mp_find(body, len, "host", &v) || !mp_as_str(v, &hs, &hn))
        return fail(c, "malformed", "open: field 'host' missing or wrong type");
    if (hn >= sizeof(host) || port < 0 || port > 65535)
        return fail(c, "malformed", "open: host or port out of range");
    memcpy(host, hs, hn);
    host[hn] = 0;
    if (!destination_allowed(c, host, &family, addr)) {
        char from[INET6_ADDRSTRLEN] = "";
        peer_text(&c->peer, from, sizeof(from));
        return fail(c, "destination", "open %s: neither the replayer's address %s nor within --allow-dest", host, from);
    }
    for (i = 0; i < WSKR_MAX_SOCKETS && slot == NULL; i++)
        if (!c->sockets[i].used) slot = &c->sockets[i];
    if (slot == NULL) return fail(c, "limit", "more than %d sockets", WSKR_MAX_SOCKETS);
    ZeroMemory(&in, sizeof(in));
    in.Family = (USHORT)(family == AF_INET ? 2 : 23);
    if (family == AF_INET) {
        struct sockaddr_in *r = (struct sockaddr_in *)in.Remote.Bytes;
        r->sin_family = AF_INET;
        r->sin_port = htons((u_short)port);
        memcpy(&r->sin_addr, addr, 4);
    } else {
        struct sockaddr_in6 *r = (struct sockaddr_in6 *)in.Remote.Bytes;
        r->sin6_family = 23;
        r->sin6_port = htons((u_short)port);
        memcpy(&r->sin6_addr, addr, 16);
    }
    ZeroMemory(&out, sizeof(out));
    status = device_call(&c->dev, IOCTL_WSKR_OPEN, &in, sizeof(in), &out, sizeof(out), &got);
    if (status != 0) return fail(c, "failed", "open %s:%lld: the driver refused it (0x%08lX)", host, (long long)port, (unsigned long)status);
    if (out.Status < 0)
        return fail(c, "failed", "open %s:%lld: %s returned 0x%08lX", host, (long long)port,
                    steps[out.Step <= 3 ? out.Step : 0], (unsigned long)out.Status);
    ZeroMemory(slot, sizeof(*slot));
    slot->used = 1;
    slot->sid = sid;
    slot->handle = out.Handle;
    mp_init(&b);
    reply_header(&b, "opened", body, len, 1);
    mp_str(&b, "local_port"); mp_int(&b, out.LocalPort);
    status = send_message(c, &b);
    mp_free(&b);
    return status ? -1 : 0;
}

static int op_send(client *c, const uint8_t *body, size_t len)
{
    int64_t sid, flags, irp = 0, irql = -1;
    int has_irp = 0;
    mp_value v, piece;
    const uint8_t *payload, *control = NULL;
    uint32_t payload_len, control_len = 0, pieces = 0, i;
    replay_socket *sock;
    WSKR_SEND_IN head;
    WSKR_SEND_OUT out;
    unsigned char *request;
    DWORD got;
    LONG status;
    mp_buffer b;
    LONGLONG now;

    if (want_int(c, body, len, "send", "socket", &sid) || want_int(c, body, len, "send", "flags", &flags)) return -1;
    if (!mp_find(body, len, "payload", &v) || !mp_as_bin(v, &payload, &payload_len))
        return fail(c, "malformed", "send: field 'payload' missing or wrong type");
    if (mp_find(body, len, "irp", &v) && mp_as_int(v, &irp)) has_irp = 1;
    if (mp_find(body, len, "control_info", &v) && !mp_as_bin(v, &control, &control_len)) control = NULL;
    if (mp_find(body, len, "irql", &v) && !mp_as_int(v, &irql)) irql = -1;
    if (c->flight_count + 1 > MAX_IN_FLIGHT_CALLS)
        return fail(c, "in-flight", "%d sends in flight, limit %d", c->flight_count, MAX_IN_FLIGHT_CALLS);
    if (c->flight_bytes + payload_len > MAX_IN_FLIGHT_BYTES)
        return fail(c, "in-flight", "%lld bytes in flight, limit %lld", c->flight_bytes, MAX_IN_FLIGHT_BYTES);
    sock = by_sid(c, sid);
    if (sock == NULL) return fail(c, "failed", "send on socket %lld, which was never opened", (long long)sid);

    mp_init(&b);
    ZeroMemory(&out, sizeof(out));
    if (sock->closed || !has_irp) {
        now = device_now_ns(&c->dev);
        /* What real WSK would crash on is not made: reported as the emulator reports it. */
        reply_header(&b, "sent", body, len, 2);
        mp_str(&b, "issue_ns"); mp_int(&b, now);
        mp_str(&b, "events");
        if (sock->closed) {
            mp_array(&b, has_irp ? 3 : 2);
            put_violation(&b, irp, has_irp, "use-after-close", "WskSendEx after WskCloseSocket", now);
            if (has_irp) put_completed(&b, irp, STATUS_FILE_FORCED_CLOSED_VALUE, 0, now);
            put_event4(&b, "returned", irp, has_irp, STATUS_FILE_FORCED_CLOSED_VALUE, now);
        } else {
            mp_array(&b, 1);
            put_event4(&b, "returned", 0, 0, STATUS_INVALID_PARAMETER_VALUE, now);
        }
        status = send_message(c, &b);
        mp_free(&b);
        return status ? -1 : 0;
    }
    ZeroMemory(&head, sizeof(head));
    head.Handle = sock->handle;
    head.Flags = (ULONG)flags;
    head.CallId = (ULONGLONG)irp;
    head.PayloadLength = payload_len;
    head.ControlInfoLength = control ? control_len : 0;
    head.HasControlInfo = control != NULL;
    head.Irql = irql >= 0 && irql <= DISPATCH_LEVEL_VALUE ? (UCHAR)irql : WSKR_IRQL_AS_CALLER;
    if (mp_find(body, len, "mdl", &v) && mp_as_array(v, &pieces, &piece)) {
        if (pieces > WSKR_MAX_MDL_PIECES) return fail(c, "malformed", "send: more than %d MDL pieces", WSKR_MAX_MDL_PIECES);
        for (i = 0; i < pieces; i++, piece = mp_next(piece)) {
            int64_t n;
            if (!mp_as_int(piece, &n) || n <= 0 || n > payload_len) return fail(c, "malformed", "send: an MDL piece is not a length");
            head.MdlLengths[i] = (ULONG)n;
        }
        head.MdlPieces = (USHORT)pieces;
    }
    request = (unsigned char *)malloc(sizeof(head) + head.ControlInfoLength + payload_len);
    if (request == NULL) return fail(c, "failed", "out of memory for a send");
    memcpy(request, &head, sizeof(head));
    if (head.ControlInfoLength) memcpy(request + sizeof(head), control, head.ControlInfoLength);
    memcpy(request + sizeof(head) + head.ControlInfoLength, payload, payload_len);
    status = device_call(&c->dev, IOCTL_WSKR_SEND, request,
                         (DWORD)(sizeof(head) + head.ControlInfoLength + payload_len), &out,
                         sizeof(out), &got);
    free(request);
    if (status != 0) {
        mp_free(&b);
        return fail(c, "failed", "send on socket %lld: the driver refused it (0x%08lX)", (long long)sid, (unsigned long)status);
    }
    if (out.Sent & WSKR_SENT_FALLBACK) c->fallback_sends++;
    c->flights[c->flight_count].irp = irp;
    c->flights[c->flight_count].bytes = payload_len;
    c->flight_count++;
    c->flight_bytes += payload_len;
    reply_header(&b, "sent", body, len, 3);
    mp_str(&b, "issue_ns"); mp_int(&b, device_ns(&c->dev, out.QpcEntry));
    mp_str(&b, "fallback"); mp_bool(&b, (out.Sent & WSKR_SENT_FALLBACK) != 0);
    mp_str(&b, "events");
    if (irql > DISPATCH_LEVEL_VALUE) {
        char detail[64];
        snprintf(detail, sizeof(detail), "IRQL %lld > DISPATCH_LEVEL", (long long)irql);
        mp_array(&b, 2);
        put_violation(&b, irp, 1, "irql", detail, device_ns(&c->dev, out.QpcEntry));
    } else {
        mp_array(&b, 1);
    }
    put_event4(&b, "returned", irp, 1, out.Status, device_ns(&c->dev, out.QpcReturn));
    status = send_message(c, &b);
    mp_free(&b);
    return status ? -1 : 0;
}

static int op_end(client *c, const uint8_t *body, size_t len, int close)
{
    int64_t sid, abortive = 0;
    mp_value v;
    replay_socket *sock;
    WSKR_STATUS_OUT out;
    DWORD got;
    LONG status = 0;
    mp_buffer b;
    if (want_int(c, body, len, close ? "close" : "disconnect", "socket", &sid)) return -1;
    if (mp_find(body, len, "abortive", &v)) {
        int flag;
        if (mp_as_bool(v, &flag)) abortive = flag;
    }
    sock = by_sid(c, sid);
    if (sock == NULL) return fail(c, "failed", "socket %lld was never opened", (long long)sid);
    if (!sock->closed) {
        if (close) {
            WSKR_CLOSE_IN in;
            ZeroMemory(&in, sizeof(in));
            in.Handle = sock->handle;
            status = device_call(&c->dev, IOCTL_WSKR_CLOSE, &in, sizeof(in), &out, sizeof(out), &got);
            sock->closed = 1;
        } else {
            WSKR_DISCONNECT_IN in;
            ZeroMemory(&in, sizeof(in));
            in.Handle = sock->handle;
            in.Abortive = abortive != 0;
            status = device_call(&c->dev, IOCTL_WSKR_DISCONNECT, &in, sizeof(in), &out, sizeof(out), &got);
        }
        if (status != 0) return fail(c, "failed", "%s socket %lld: the driver refused it (0x%08lX)", close ? "close" : "disconnect", (long long)sid, (unsigned long)status);
    }
    mp_init(&b);
    reply_header(&b, "done", body, len, 1);
    mp_str(&b, "events"); mp_array(&b, 0);
    status = send_message(c, &b);
    mp_free(&b);
    return status ? -1 : 0;
}

static void put_driver(client *c, mp_buffer *b)
{
    WSKR_INFO info;
    DWORD got;
    ZeroMemory(&info, sizeof(info));
    device_call(&c->dev, IOCTL_WSKR_INFO, NULL, 0, &info, sizeof(info), &got);
    mp_map(b, 5);
    mp_str(b, "interface"); mp_int(b, info.InterfaceVersion);
    mp_str(b, "provider_version"); mp_int(b, info.ProviderVersion);
    mp_str(b, "send"); mp_str(b, info.Provider & WSKR_PROVIDER_SENDEX_MISSING ? "WskSend (fallback: the provider has no WskSendEx)" : "WskSendEx");
    mp_str(b, "connect"); mp_str(b, info.Provider & WSKR_PROVIDER_SOCKET_CONNECT_MISSING ? "WskSocket+WskBind+WskConnect" : "WskSocketConnect");
    mp_str(b, "fallback_sends"); mp_uint(b, c->fallback_sends);
}

static int op_bye(client *c)
{
    mp_buffer b;
    int i, count = 0, status;
    for (i = 0; i < WSKR_MAX_SOCKETS; i++) count += c->sockets[i].used;
    mp_init(&b);
    mp_map(&b, 3);
    mp_str(&b, "op"); mp_str(&b, "bye");
    mp_str(&b, "driver"); put_driver(c, &b);
    mp_str(&b, "received"); mp_map(&b, (uint32_t)count);
    for (i = 0; i < WSKR_MAX_SOCKETS; i++) {
        char key[32];
        if (!c->sockets[i].used) continue;
        snprintf(key, sizeof(key), "%lld", (long long)c->sockets[i].sid);
        mp_str(&b, key);
        mp_bin(&b, c->sockets[i].received ? c->sockets[i].received : (unsigned char *)"", c->sockets[i].received_len);
    }
    status = send_message(c, &b);
    mp_free(&b);
    return status;
}

static int op_clock(client *c, const uint8_t *body, size_t len)
{
    mp_buffer b;
    int status;
    mp_init(&b);
    reply_header(&b, "clock", body, len, 1);
    mp_str(&b, "now_ns"); mp_int(&b, device_now_ns(&c->dev));
    status = send_message(c, &b);
    mp_free(&b);
    return status;
}

/* ---- the driver's events ---- */

static int deliver_events(client *c)
{
    DWORD got, offset = 0;
    LONG status = device_wait_result(&c->dev, &got);
    mp_buffer b;
    uint32_t count = 0;
    int result;
    if (status != 0) return fail(c, "failed", "the driver's event queue failed (0x%08lX)", (unsigned long)status);
    while (offset + sizeof(WSKR_EVENT) <= got) {
        const WSKR_EVENT *e = (const WSKR_EVENT *)(c->dev.wait_buffer + offset);
        if (e->DataLength > got - offset - sizeof(WSKR_EVENT)) return fail(c, "failed", "the driver sent a truncated event");
        if (e->Kind == WSKR_EVENT_SEND_COMPLETED) count++;
        if (e->Kind == WSKR_EVENT_RECEIVE_ENDED && e->Status < 0) count++;
        offset += (DWORD)((sizeof(WSKR_EVENT) + e->DataLength + 7) & ~(size_t)7);
    }
    mp_init(&b);
    mp_map(&b, 2);
    mp_str(&b, "op"); mp_str(&b, "event");
    mp_str(&b, "events"); mp_array(&b, count);
    for (offset = 0; offset + sizeof(WSKR_EVENT) <= got;) {
        const WSKR_EVENT *e = (const WSKR_EVENT *)(c->dev.wait_buffer + offset);
        replay_socket *sock = by_handle(c, e->Handle);
        LONGLONG ns = device_ns(&c->dev, e->Qpc);
        if (e->Kind == WSKR_EVENT_SEND_COMPLETED) {
            put_completed(&b, (int64_t)e->CallId, e->Status, e->Information, ns);
            flight_done(c, (int64_t)e->CallId);
        } else if (e->Kind == WSKR_EVENT_RECEIVE_ENDED && e->Status < 0) {
            put_event4(&b, "reset", sock ? sock->sid : -1, 1, e->Status, ns);
        } else if (e->Kind == WSKR_EVENT_RECEIVED && sock != NULL) {
            size_t need = sock->received_len + e->DataLength;
            c->received_total += e->DataLength;
            if (c->received_total > MAX_RECEIVED_BYTES) { mp_free(&b); return fail(c, "limit", "more than %lld bytes received", MAX_RECEIVED_BYTES); }
            if (need > sock->received_size) {
                size_t size = sock->received_size ? sock->received_size : 65536;
                unsigned char *grown;
                while (size < need) size *= 2;
                grown = (unsigned char *)realloc(sock->received, size);
                if (grown == NULL) { mp_free(&b); return fail(c, "failed", "out of memory for received bytes"); }
                sock->received = grown;
                sock->received_size = size;
            }
            memcpy(sock->received + sock->received_len, e + 1, e->DataLength);
            sock->received_len = need;
        }
        offset += (DWORD)((sizeof(WSKR_EVENT) + e->DataLength + 7) & ~(size_t)7);
    }
    result = count ? send_message(c, &b) : 0;
    mp_free(&b);
    return result;
}

/* ---- one replayer ---- */

static int dispatch(client *c, const uint8_t *body, size_t len)
{
    if (field_is(body, len, "op", "clock")) return op_clock(c, body, len);
    if (field_is(body, len, "op", "open")) return op_open(c, body, len);
    if (field_is(body, len, "op", "send")) return op_send(c, body, len);
    if (field_is(body, len, "op", "disconnect")) return op_end(c, body, len, 0);
    if (field_is(body, len, "op", "close")) return op_end(c, body, len, 1);
    if (field_is(body, len, "op", "bye")) return op_bye(c) ? -1 : 1;
    {
        mp_value v;
        const uint8_t *s;
        uint32_t n;
        mp_find(body, len, "op", &v);
        mp_as_str(v, &s, &n);
        return fail(c, "unknown-op", "no operation '%.*s'", (int)(n > 64 ? 64 : n), s);
    }
}

static int welcome(client *c)
{
    mp_buffer b;
    int status;
    mp_init(&b);
    mp_map(&b, 7);
    mp_str(&b, "op"); mp_str(&b, "hello");
    mp_str(&b, "version"); mp_int(&b, WIRE_VERSION);
    mp_str(&b, "agent"); mp_str(&b, AGENT_NAME);
    mp_str(&b, "clock"); mp_str(&b, "qpc");
    mp_str(&b, "now_ns"); mp_int(&b, device_now_ns(&c->dev));
    mp_str(&b, "limits");
    mp_map(&b, 4);
    mp_str(&b, "max_frame"); mp_int(&b, WIRE_MAX_FRAME);
    mp_str(&b, "max_in_flight_calls"); mp_int(&b, MAX_IN_FLIGHT_CALLS);
    mp_str(&b, "max_in_flight_bytes"); mp_int(&b, MAX_IN_FLIGHT_BYTES);
    mp_str(&b, "max_sockets"); mp_int(&b, WSKR_MAX_SOCKETS);
    mp_str(&b, "driver"); put_driver(c, &b);
    status = send_message(c, &b);
    mp_free(&b);
    return status;
}

static int serve_loop(client *c)
{
    WSAEVENT readable = WSACreateEvent();
    int result = 0;
    if (readable == WSA_INVALID_EVENT || WSAEventSelect(c->s, readable, FD_READ | FD_CLOSE) != 0)
        return fail(c, "failed", "cannot watch the connection");
    while (result == 0) {
        HANDLE waits[2];
        DWORD which;
        LONG status = device_wait_start(&c->dev);
        if (status != 0) { result = fail(c, "failed", "the driver's event queue failed (0x%08lX)", (unsigned long)status); break; }
        waits[0] = readable;
        waits[1] = c->dev.wait.hEvent;
        which = WaitForMultipleObjects(2, waits, FALSE, 1000);
        if (which == WAIT_OBJECT_0 + 1) {
            result = deliver_events(c);
        } else if (which == WAIT_OBJECT_0 || c->rx_used > 0) {
            WSANETWORKEVENTS happened;
            WSAEnumNetworkEvents(c->s, readable, &happened);
            for (;;) {
                uint8_t *frame;
                const uint8_t *body;
                size_t n, len;
                int r = next_frame(c, 0, &frame, &n);
                if (r < 0) { result = -1; break; }
                if (r == 0) break;
                if (open_frame(c, frame, n, &body, &len) != 0) { result = -1; break; }
                r = dispatch(c, body, len);
                drop_frame(c, n);
                if (r != 0) { result = r; break; }
                if (WaitForSingleObject(c->dev.wait.hEvent, 0) == WAIT_OBJECT_0 &&
                    (result = deliver_events(c)) != 0)
                    break;
                if (device_wait_start(&c->dev) != 0) break;
            }
        }
    }
    WSAEventSelect(c->s, readable, 0);
    WSACloseEvent(readable);
    return result;
}

static void serve_client(const options *opt, SOCKET s, const struct sockaddr_storage *peer)
{
    client *c = (client *)calloc(1, sizeof(client));
    char from[INET6_ADDRSTRLEN] = "";
    int i;
    DWORD error;
    if (c == NULL) {
        closesocket(s);
        return;
    }
    c->s = s;
    c->peer = *peer;
    c->opt = opt;
    {
        u_long nonblocking = 1;
        ioctlsocket(s, FIONBIO, &nonblocking);
    }
    peer_text(peer, from, sizeof(from));
    if (handshake(c) == 0) {
        error = device_open(&c->dev);
        if (error != 0) {
            fail(c, "failed", "cannot open \\\\.\\WskReplayTest (error %lu): is wskrtest.sys started?", (unsigned long)error);
        } else {
            c->dev_open = 1;
            if (welcome(c) == 0 && serve_loop(c) > 0) c->code[0] = 0;
        }
    }
    if (c->code[0]) {
        fprintf(stderr, "wskreplay-agent: %s: %s: %s\n", from, c->code, c->why);
        refuse(c);
    }
    if (c->dev_open) device_close(&c->dev);
    closesocket(s);
    for (i = 0; i < WSKR_MAX_SOCKETS; i++) free(c->sockets[i].received);
    free(c->rx);
    free(c);
}

/* ---- the program ---- */

static int usage(const char *why)
{
    fprintf(stderr, "wskreplay-agent: %s (usage: wskreplay-agent.exe [--listen HOST:PORT] [--token-file FILE] [--allow-dest CIDR]...)\n", why);
    return 2;
}

static int read_token(options *opt, const char *file)
{
    const char *text = NULL;
    static char buf[1024];
    size_t n;
    if (file != NULL) {
        FILE *f = fopen(file, "rb");
        if (f == NULL) { fprintf(stderr, "wskreplay-agent: %s: cannot read the agent token\n", file); return -1; }
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        text = buf;
    } else {
        text = getenv(TOKEN_ENV);
        if (text == NULL) text = "";
    }
    while (*text == ' ' || *text == '\t' || *text == '\r' || *text == '\n') text++;
    n = strlen(text);
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t' || text[n - 1] == '\r' || text[n - 1] == '\n')) n--;
    if (n < 16 || n >= sizeof(opt->token)) {
        fprintf(stderr, "wskreplay-agent: the agent needs a shared token of at least 16 characters in $%s or a file named by --token-file\n", TOKEN_ENV);
        return -1;
    }
    memcpy(opt->token, text, n);
    opt->token[n] = 0;
    opt->token_len = n;
    return 0;
}

int main(int argc, char **argv)
{
    options opt;
    const char *token_file = NULL, *listen_text = "127.0.0.1:7393";
    const char *colon;
    WSADATA wsa;
    SOCKET listener;
    struct sockaddr_storage bound;
    int bound_len = sizeof(bound), i, family;
    unsigned char addr[16];
    char shown[INET6_ADDRSTRLEN];
    ZeroMemory(&opt, sizeof(opt));
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) listen_text = argv[++i];
        else if (strcmp(argv[i], "--token-file") == 0 && i + 1 < argc) token_file = argv[++i];
        else if (strcmp(argv[i], "--allow-dest") == 0 && i + 1 < argc) {
            if (opt.allow_count == MAX_ALLOW) return usage("too many --allow-dest");
            if (!parse_network(argv[++i], &opt.allow[opt.allow_count++])) {
                fprintf(stderr, "wskreplay-agent: --allow-dest %s: expected an address or CIDR\n", argv[i]);
                return 2;
            }
        } else {
            char why[256];
            snprintf(why, sizeof(why), "unknown or incomplete option %s", argv[i]);
            return usage(why);
        }
    }
    colon = strrchr(listen_text, ':');
    if (colon == NULL || (size_t)(colon - listen_text) >= sizeof(opt.host) || colon[1] == 0 ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1) || atoi(colon + 1) > 65535) {
        fprintf(stderr, "wskreplay-agent: --listen %s: expected HOST:PORT\n", listen_text);
        return 2;
    }
    memcpy(opt.host, listen_text, (size_t)(colon - listen_text));
    if (opt.host[0] == '[') {
        size_t n = strlen(opt.host);
        memmove(opt.host, opt.host + 1, n);
        if (n >= 2 && opt.host[n - 2] == ']') opt.host[n - 2] = 0;
    }
    opt.port = (unsigned short)atoi(colon + 1);
    if (!parse_address(opt.host, &family, addr)) {
        fprintf(stderr, "wskreplay-agent: --listen %s: expected an address\n", listen_text);
        return 2;
    }
    if (read_token(&opt, token_file)) return 2;
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) {
        fprintf(stderr, "wskreplay-agent: no Winsock\n");
        return 1;
    }
    listener = socket(family, SOCK_STREAM, IPPROTO_TCP);
    {
        struct sockaddr_storage ss;
        int len;
        ZeroMemory(&ss, sizeof(ss));
        if (family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            a->sin_family = AF_INET;
            a->sin_port = htons(opt.port);
            memcpy(&a->sin_addr, addr, 4);
            len = sizeof(*a);
        } else {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            a->sin6_family = AF_INET6;
            a->sin6_port = htons(opt.port);
            memcpy(&a->sin6_addr, addr, 16);
            len = sizeof(*a);
        }
        if (listener == INVALID_SOCKET || bind(listener, (struct sockaddr *)&ss, len) != 0 ||
            listen(listener, 16) != 0) {
            fprintf(stderr, "wskreplay-agent: --listen %s: cannot listen (error %d)\n", listen_text, WSAGetLastError());
            return 2;
        }
    }
    getsockname(listener, (struct sockaddr *)&bound, &bound_len);
    peer_text(&bound, shown, sizeof(shown));
    fprintf(stderr, "wskreplay-agent: listening on %s:%u\n", shown,
            ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                             : ((struct sockaddr_in6 *)&bound)->sin6_port));
    fflush(stderr);
    for (;;) {
        struct sockaddr_storage peer;
        int peer_len = sizeof(peer);
        SOCKET s = accept(listener, (struct sockaddr *)&peer, &peer_len);
        if (s == INVALID_SOCKET) continue;
        {
            BOOL nodelay = TRUE;
            setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&nodelay, sizeof(nodelay));
        }
        if ((family == AF_INET ? addr[0] == 127 : is_loopback_storage(&bound)) && !is_loopback_storage(&peer)) {
            client refused;
            char from[INET6_ADDRSTRLEN] = "";
            ZeroMemory(&refused, sizeof(refused));
            refused.s = s;
            peer_text(&peer, from, sizeof(from));
            fail(&refused, "not-loopback", "this agent serves loopback clients only, not %s", from);
            refuse(&refused);
            fprintf(stderr, "wskreplay-agent: refused %s (not loopback)\n", from);
            closesocket(s);
            continue;
        }
        serve_client(&opt, s, &peer);
    }
}
