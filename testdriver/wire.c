#include "wire.h"

#include <stdlib.h>
#include <string.h>

static uint64_t be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    unsigned i;
    for (i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Strict UTF-8 as Python decodes it: no overlongs, no surrogates, nothing past U+10FFFF. */
static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        unsigned extra;
        uint32_t cp, min;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) { extra = 1; cp = c & 0x1f; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { extra = 2; cp = c & 0x0f; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { extra = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if (n - i <= extra) return 0;
        for (unsigned k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += extra + 1;
    }
    return 1;
}

typedef struct {
    const uint8_t *end;
    size_t limit;
    const char *why;
} checker;

enum { KIND_OTHER, KIND_STR, KIND_BIN };

/* The length of a string/binary/container head at p and where its contents start; the
   kind of value. Returns NULL when p is not a valid head. */
static const uint8_t *head(const uint8_t *p, const uint8_t *end, int *kind, uint64_t *len,
                           int *container, const char **why)
{
    uint8_t c = *p++;
    unsigned n = 0;
    *kind = KIND_OTHER;
    *len = 0;
    *container = 0; /* 1 array, 2 map */
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) return p;
    if ((c & 0xe0) == 0xa0) { *kind = KIND_STR; *len = c & 0x1f; return p; }
    if ((c & 0xf0) == 0x90) { *container = 1; *len = c & 0x0f; return p; }
    if ((c & 0xf0) == 0x80) { *container = 2; *len = c & 0x0f; return p; }
    switch (c) {
    case 0xcc: case 0xd0: n = 1; break;
    case 0xcd: case 0xd1: n = 2; break;
    case 0xce: case 0xd2: case 0xca: n = 4; break;
    case 0xcf: case 0xd3: case 0xcb: n = 8; break;
    case 0xd9: case 0xc4: n = 1; break;
    case 0xda: case 0xc5: case 0xdc: case 0xde: n = 2; break;
    case 0xdb: case 0xc6: case 0xdd: case 0xdf: n = 4; break;
    default:
        *why = (c >= 0xc7 && c <= 0xc9) || (c >= 0xd4 && c <= 0xd8)
                   ? "msgpack extension types are not allowed"
                   : "not a msgpack value";
        return NULL;
    }
    if ((size_t)(end - p) < n) { *why = "incomplete msgpack value"; return NULL; }
    if (c >= 0xca && c <= 0xd3) return p + n; /* numbers */
    *len = be(p, n);
    if (c == 0xd9 || c == 0xda || c == 0xdb) *kind = KIND_STR;
    else if (c == 0xc4 || c == 0xc5 || c == 0xc6) *kind = KIND_BIN;
    else *container = (c == 0xdc || c == 0xdd) ? 1 : 2;
    return p + n;
}

static const uint8_t *check_value(checker *k, const uint8_t *p, int depth, int *kind_out)
{
    int kind, container;
    uint64_t len, i;
    if (p >= k->end) { k->why = "incomplete msgpack value"; return NULL; }
    p = head(p, k->end, &kind, &len, &container, &k->why);
    if (p == NULL) return NULL;
    if (kind_out) *kind_out = kind;
    if (kind != KIND_OTHER) {
        if (len > k->limit) { k->why = "string or binary longer than the frame limit"; return NULL; }
        if ((uint64_t)(k->end - p) < len) { k->why = "incomplete msgpack value"; return NULL; }
        if (kind == KIND_STR && !utf8_valid(p, (size_t)len)) { k->why = "a string is not UTF-8"; return NULL; }
        return p + len;
    }
    if (!container) {
        /* numbers of 1, 2, 4, 8 bytes were skipped by head(); p is past them */
        return p;
    }
    if (depth >= WIRE_MAX_DEPTH) { k->why = "msgpack nested too deeply"; return NULL; }
    if (container == 1 && len > WIRE_MAX_ARRAY) { k->why = "msgpack array too long"; return NULL; }
    if (container == 2 && len > WIRE_MAX_MAP) { k->why = "msgpack map too large"; return NULL; }
    for (i = 0; i < len; i++) {
        if (container == 2) {
            int key_kind = KIND_OTHER;
            const uint8_t *key = p;
            if (key >= k->end) { k->why = "incomplete msgpack value"; return NULL; }
            p = check_value(k, p, depth + 1, &key_kind);
            if (p == NULL) return NULL;
            if (key_kind == KIND_OTHER) { k->why = "a map key is not a string"; return NULL; }
        }
        p = check_value(k, p, depth + 1, NULL);
        if (p == NULL) return NULL;
    }
    return p;
}

int wire_check(const uint8_t *body, size_t n, size_t limit, const char **why)
{
    checker k;
    const uint8_t *end;
    mp_value op;
    k.end = body + n;
    k.limit = limit;
    k.why = "not a msgpack message";
    end = check_value(&k, body, 0, NULL);
    if (end == NULL) { *why = k.why; return -1; }
    if (end != body + n) { *why = "data after the msgpack message"; return -1; }
    if (n == 0 || !((body[0] & 0xf0) == 0x80 || body[0] == 0xde || body[0] == 0xdf) ||
        !mp_find(body, n, "op", &op) || !mp_as_str(op, NULL, NULL)) {
        *why = "a message is a map with a string 'op'";
        return -1;
    }
    return 0;
}

/* Past one value of a checked body. */
static const uint8_t *skip(const uint8_t *p, const uint8_t *end)
{
    int kind, container;
    uint64_t len, i;
    const char *why;
    p = head(p, end, &kind, &len, &container, &why);
    if (kind != KIND_OTHER) return p + len;
    if (!container) return p;
    for (i = 0; i < (container == 2 ? 2 * len : len); i++) p = skip(p, end);
    return p;
}

int mp_find(const uint8_t *body, size_t n, const char *key, mp_value *out)
{
    const uint8_t *end = body + n, *p;
    int kind, container;
    uint64_t len, i;
    const char *why;
    size_t want = strlen(key);
    int found = 0;
    if (n == 0) return 0;
    p = head(body, end, &kind, &len, &container, &why);
    if (p == NULL || container != 2) return 0;
    for (i = 0; i < len; i++) {
        uint64_t klen;
        int kkind, kc;
        const uint8_t *kp = head(p, end, &kkind, &klen, &kc, &why);
        const uint8_t *value = kp + klen;
        int match = kkind == KIND_STR && klen == want && memcmp(kp, key, want) == 0;
        p = skip(value, end);
        if (match) { /* the last of duplicate keys wins, as in a Python dict */
            out->p = value;
            out->end = p;
            found = 1;
        }
    }
    return found;
}

int mp_as_int(mp_value v, int64_t *out)
{
    uint8_t c = *v.p;
    if (c <= 0x7f) { *out = c; return 1; }
    if (c >= 0xe0) { *out = (int8_t)c; return 1; }
    switch (c) {
    case 0xcc: *out = v.p[1]; return 1;
    case 0xcd: *out = (int64_t)be(v.p + 1, 2); return 1;
    case 0xce: *out = (int64_t)be(v.p + 1, 4); return 1;
    case 0xcf: {
        uint64_t u = be(v.p + 1, 8);
        if (u > INT64_MAX) return 0;
        *out = (int64_t)u;
        return 1;
    }
    case 0xd0: *out = (int8_t)v.p[1]; return 1;
    case 0xd1: *out = (int16_t)be(v.p + 1, 2); return 1;
    case 0xd2: *out = (int32_t)be(v.p + 1, 4); return 1;
    case 0xd3: *out = (int64_t)be(v.p + 1, 8); return 1;
    default: return 0;
    }
}

static int as_bytes(mp_value v, int want, const uint8_t **s, uint32_t *len)
{
    int kind, container;
    uint64_t n;
    const char *why;
    const uint8_t *p = head(v.p, v.end, &kind, &n, &container, &why);
    if (p == NULL || kind != want) return 0;
    if (s) *s = p;
    if (len) *len = (uint32_t)n;
    return 1;
}

int mp_as_str(mp_value v, const uint8_t **s, uint32_t *len) { return as_bytes(v, KIND_STR, s, len); }
int mp_as_bin(mp_value v, const uint8_t **b, uint32_t *len) { return as_bytes(v, KIND_BIN, b, len); }

int mp_as_bool(mp_value v, int *out)
{
    if (*v.p != 0xc2 && *v.p != 0xc3) return 0;
    *out = *v.p == 0xc3;
    return 1;
}

int mp_is_nil(mp_value v) { return *v.p == 0xc0; }

int mp_is_map(mp_value v) { return (*v.p & 0xf0) == 0x80 || *v.p == 0xde || *v.p == 0xdf; }

int mp_as_array(mp_value v, uint32_t *count, mp_value *first)
{
    int kind, container;
    uint64_t n;
    const char *why;
    const uint8_t *p = head(v.p, v.end, &kind, &n, &container, &why);
    if (p == NULL || container != 1) return 0;
    *count = (uint32_t)n;
    first->p = p;
    first->end = v.end;
    return 1;
}

mp_value mp_next(mp_value v)
{
    mp_value next = v;
    next.p = skip(v.p, v.end);
    return next;
}

int field_is(const uint8_t *body, size_t n, const char *key, const char *text)
{
    mp_value v;
    const uint8_t *s;
    uint32_t len;
    return mp_find(body, n, key, &v) && mp_as_str(v, &s, &len) && len == strlen(text) &&
           memcmp(s, text, len) == 0;
}

/* ---- encoding ---- */

void mp_init(mp_buffer *b) { memset(b, 0, sizeof(*b)); }

void mp_free(mp_buffer *b)
{
    free(b->data);
    mp_init(b);
}

void mp_raw(mp_buffer *b, const void *p, size_t n)
{
    if (b->failed) return;
    if (b->used + n > b->size) {
        size_t size = b->size ? b->size : 256;
        uint8_t *grown;
        while (size < b->used + n) size *= 2;
        grown = (uint8_t *)realloc(b->data, size);
        if (grown == NULL) { b->failed = 1; return; }
        b->data = grown;
        b->size = size;
    }
    if (n) memcpy(b->data + b->used, p, n);
    b->used += n;
}

static void put(mp_buffer *b, uint8_t tag, uint64_t v, unsigned n)
{
    uint8_t out[9];
    unsigned i;
    out[0] = tag;
    for (i = 0; i < n; i++) out[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    mp_raw(b, out, n + 1);
}

static void sized(mp_buffer *b, uint64_t n, uint8_t fix, uint64_t fix_max, uint8_t t8,
                  uint8_t t16, uint8_t t32)
{
    if (n <= fix_max && fix) { uint8_t c = (uint8_t)(fix | n); mp_raw(b, &c, 1); }
    else if (n <= 0xff && t8) put(b, t8, n, 1);
    else if (n <= 0xffff) put(b, t16, n, 2);
    else put(b, t32, n, 4);
}

void mp_map(mp_buffer *b, uint32_t entries) { sized(b, entries, 0x80, 15, 0, 0xde, 0xdf); }
void mp_array(mp_buffer *b, uint32_t items) { sized(b, items, 0x90, 15, 0, 0xdc, 0xdd); }

void mp_strn(mp_buffer *b, const char *s, size_t n)
{
    sized(b, n, 0xa0, 31, 0xd9, 0xda, 0xdb);
    mp_raw(b, s, n);
}

void mp_str(mp_buffer *b, const char *s) { mp_strn(b, s, strlen(s)); }

void mp_bin(mp_buffer *b, const void *p, size_t n)
{
    sized(b, n, 0, 0, 0xc4, 0xc5, 0xc6);
    mp_raw(b, p, n);
}

void mp_uint(mp_buffer *b, uint64_t v)
{
    if (v <= 0x7f) { uint8_t c = (uint8_t)v; mp_raw(b, &c, 1); }
    else if (v <= 0xff) put(b, 0xcc, v, 1);
    else if (v <= 0xffff) put(b, 0xcd, v, 2);
    else if (v <= 0xffffffffu) put(b, 0xce, v, 4);
    else put(b, 0xcf, v, 8);
}

void mp_int(mp_buffer *b, int64_t v)
{
    if (v >= 0) { mp_uint(b, (uint64_t)v); return; }
    if (v >= -32) { uint8_t c = (uint8_t)(int8_t)v; mp_raw(b, &c, 1); }
    else if (v >= INT8_MIN) put(b, 0xd0, (uint64_t)v & 0xff, 1);
    else if (v >= INT16_MIN) put(b, 0xd1, (uint64_t)v & 0xffff, 2);
    else if (v >= INT32_MIN) put(b, 0xd2, (uint64_t)v & 0xffffffffu, 4);
    else put(b, 0xd3, (uint64_t)v, 8);
}

void mp_nil(mp_buffer *b) { uint8_t c = 0xc0; mp_raw(b, &c, 1); }
void mp_bool(mp_buffer *b, int v) { uint8_t c = v ? 0xc3 : 0xc2; mp_raw(b, &c, 1); }

/* ---- handshake and tags ---- */

static void keyed(const uint8_t *token, size_t token_len, const char *label,
                  const uint8_t *first, const uint8_t *second, uint8_t out[WIRE_TAG_BYTES])
{
    hmac_sha256_ctx h;
    hmac_sha256_init(&h, token, token_len);
    hmac_sha256_update(&h, label, strlen(label));
    hmac_sha256_update(&h, first, WIRE_NONCE_BYTES);
    hmac_sha256_update(&h, second, WIRE_NONCE_BYTES);
    hmac_sha256_final(&h, out);
}

void wire_agent_proof(const uint8_t *token, size_t token_len, const uint8_t *client_nonce,
                      const uint8_t *agent_nonce, uint8_t out[WIRE_TAG_BYTES])
{
    keyed(token, token_len, "wskreplay-v2 agent proof", client_nonce, agent_nonce, out);
}

void wire_session_key(const uint8_t *token, size_t token_len, const uint8_t *client_nonce,
                      const uint8_t *agent_nonce, uint8_t out[WIRE_TAG_BYTES])
{
    keyed(token, token_len, "wskreplay-v2 session key", client_nonce, agent_nonce, out);
}

void wire_frame_tag(const uint8_t key[WIRE_TAG_BYTES], char side, uint64_t sequence,
                    const uint8_t *body, size_t n, uint8_t out[WIRE_TAG_BYTES])
{
    hmac_sha256_ctx h;
    uint8_t seq[8];
    unsigned i;
    for (i = 0; i < 8; i++) seq[i] = (uint8_t)(sequence >> (56 - 8 * i));
    hmac_sha256_init(&h, key, WIRE_TAG_BYTES);
    hmac_sha256_update(&h, &side, 1);
    hmac_sha256_update(&h, seq, 8);
    hmac_sha256_update(&h, body, n);
    hmac_sha256_final(&h, out);
}
