/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), portable C: the agent protocol's
   handshake and frame tags. */
#ifndef WSKR_SHA256_H
#define WSKR_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_BYTES 32

typedef struct {
    uint32_t state[8];
    uint64_t length;
    uint8_t block[64];
    size_t used;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t out[SHA256_BYTES]);

typedef struct {
    sha256_ctx inner, outer;
} hmac_sha256_ctx;

void hmac_sha256_init(hmac_sha256_ctx *h, const void *key, size_t key_len);
void hmac_sha256_update(hmac_sha256_ctx *h, const void *data, size_t n);
void hmac_sha256_final(hmac_sha256_ctx *h, uint8_t out[SHA256_BYTES]);
/* Constant-time comparison of two tags: 1 when equal. */
int tags_equal(const uint8_t *a, const uint8_t *b, size_t n);

#endif
