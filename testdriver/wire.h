/*
 * The agent protocol's wire (docs/agent-protocol.md), portable C shared by the agent and
 * its fuzz test on Linux: frames, frame tags, and the msgpack subset of its messages.
 *
 * A received body is checked once (wire_check: the same acceptances and refusals as the
 * Python reference's decode: no extension types, strict UTF-8 strings, string or binary
 * map keys, at most 65,536 array items, 1,024 map entries and 1,024 nested containers,
 * nothing after the message, a map with a string "op"); after that, the accessors walk the
 * checked bytes without copying them.
 */
#ifndef WSKR_WIRE_H
#define WSKR_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

#define WIRE_VERSION 2
#define WIRE_MAX_FRAME (4u << 20)
#define WIRE_NONCE_BYTES 32
#define WIRE_TAG_BYTES SHA256_BYTES
#define WIRE_MAX_ARRAY 65536u
#define WIRE_MAX_MAP 1024u
#define WIRE_MAX_DEPTH 1024

/* A msgpack value inside a checked body. */
typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} mp_value;

/* 0 when body[0..n) is one acceptable message; else -1 and *why says what is wrong. */
int wire_check(const uint8_t *body, size_t n, size_t limit, const char **why);

/* Accessors of a checked message (a map). Each returns 1 when the field is there with the
   type asked for, else 0. */
int mp_find(const uint8_t *body, size_t n, const char *key, mp_value *out);
int mp_as_int(mp_value v, int64_t *out);
int mp_as_str(mp_value v, const uint8_t **s, uint32_t *len);
int mp_as_bin(mp_value v, const uint8_t **b, uint32_t *len);
int mp_as_bool(mp_value v, int *out);
int mp_is_nil(mp_value v);
int mp_is_map(mp_value v);
/* An array's items: mp_array_first then mp_next over count items. */
int mp_as_array(mp_value v, uint32_t *count, mp_value *first);
mp_value mp_next(mp_value v);
int field_is(const uint8_t *body, size_t n, const char *key, const char *text);

/* An encoder into a growing buffer; any allocation failure sticks in ->failed. */
typedef struct {
    uint8_t *data;
    size_t used, size;
    int failed;
} mp_buffer;

void mp_init(mp_buffer *b);
void mp_free(mp_buffer *b);
void mp_map(mp_buffer *b, uint32_t entries);
void mp_array(mp_buffer *b, uint32_t items);
void mp_str(mp_buffer *b, const char *s);
void mp_strn(mp_buffer *b, const char *s, size_t n);
void mp_bin(mp_buffer *b, const void *p, size_t n);
void mp_int(mp_buffer *b, int64_t v);
void mp_uint(mp_buffer *b, uint64_t v);
void mp_nil(mp_buffer *b);
void mp_bool(mp_buffer *b, int v);
void mp_raw(mp_buffer *b, const void *p, size_t n);

/* Handshake values and frame tags, as the Python reference computes them. */
void wire_agent_proof(const uint8_t *token, size_t token_len, const uint8_t *client_nonce,
                      const uint8_t *agent_nonce, uint8_t out[WIRE_TAG_BYTES]);
void wire_session_key(const uint8_t *token, size_t token_len, const uint8_t *client_nonce,
                      const uint8_t *agent_nonce, uint8_t out[WIRE_TAG_BYTES]);
void wire_frame_tag(const uint8_t key[WIRE_TAG_BYTES], char side, uint64_t sequence,
                    const uint8_t *body, size_t n, uint8_t out[WIRE_TAG_BYTES]);

#endif
