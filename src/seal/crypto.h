/*-------------------------------------------------------------------------
 *
 * crypto.h
 *		  Thin wrappers over OpenSSL 3 EVP: X25519, Ed25519, HKDF-SHA256,
 *		  SHA-256, HMAC-SHA256 and AES-256-GCM.  No other file includes
 *		  OpenSSL headers.
 *
 * Every function either succeeds or raises ERROR (never returns a partial
 * result), except de_aead_open(), which reports a failed tag by returning
 * false so the caller can word the error.
 *
 * IDENTIFICATION
 *		  src/seal/crypto.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_CRYPTO_H
#define DE_CRYPTO_H

#define DE_KEY_LEN		32		/* X25519 keys, DH results, AES-256 keys */
#define DE_HASH_LEN		32		/* SHA-256 */
#define DE_NONCE_LEN	12		/* AES-GCM nonce */
#define DE_TAG_LEN		16		/* AES-GCM tag */
#define DE_SIG_LEN		64		/* Ed25519 signature */
#define DE_MAC_LEN		32		/* HMAC-SHA256 */

/* Fresh X25519 key pair. */
extern void de_x25519_generate(uint8 *priv, uint8 *pub);

/* Public half of an X25519 private key. */
extern void de_x25519_public(const uint8 *priv, uint8 *pub);

/*
 * X25519 shared secret.  Raises ERROR (ERRCODE_INVALID_PARAMETER_VALUE) for a
 * peer key that yields the all-zero secret (a small-order point).
 */
extern void de_x25519_dh(const uint8 *priv, const uint8 *peer_pub,
						 uint8 *secret);

/* HKDF-SHA256 (RFC 5869), extract and expand. */
extern void de_hkdf_sha256(const uint8 *salt, size_t saltlen,
						   const uint8 *ikm, size_t ikmlen,
						   const uint8 *info, size_t infolen,
						   uint8 *out, size_t outlen);

/* SHA-256 of one buffer. */
extern void de_sha256(const void *data, size_t len, uint8 *digest);

/* HMAC-SHA256 of one buffer (DE_MAC_LEN bytes). */
extern void de_hmac_sha256(const uint8 *key, size_t keylen,
						   const uint8 *msg, size_t len, uint8 *mac);

/* Constant-time equality, for authentication codes. */
extern bool de_equal_secret(const void *a, const void *b, size_t len);

/*
 * An AES-256-GCM key ready for use: one EVP_CIPHER_CTX, made once per stream
 * and reused for every frame.  Freed with de_aead_free(), and in any case
 * when the memory context it was created in is reset or deleted.
 */
typedef struct DeAead DeAead;

extern DeAead *de_aead_create(MemoryContext mcxt, const uint8 *key);
extern void de_aead_free(DeAead *aead);

/* Encrypt len bytes; out receives len bytes of ciphertext then the tag. */
extern void de_aead_seal(DeAead *aead, const uint8 *nonce,
						 const uint8 *aad, size_t aadlen,
						 const uint8 *plain, size_t len, uint8 *out);

/*
 * Decrypt and verify sealedlen bytes (ciphertext then tag); out receives
 * sealedlen - DE_TAG_LEN bytes.  Returns false when the tag does not verify
 * (out is then garbage and must not be used).
 */
extern bool de_aead_open(DeAead *aead, const uint8 *nonce,
						 const uint8 *aad, size_t aadlen,
						 const uint8 *sealed, size_t sealedlen, uint8 *out);

/* Overwrite secret bytes in a way the compiler keeps. */
/*
 * Ed25519 signing keys (from a 32-byte private seed) and verifying keys
 * (from a 32-byte public key), owned by a memory context.
 */
typedef struct DeSignKey DeSignKey;

/*
 * The Ed25519 seed of an identity: HKDF-SHA256 of its X25519 private key
 * under a label of its own, so the two keys are independent and a site
 * keeps one secret.
 */
extern void de_derive_sign_seed(const uint8 *x25519_priv, uint8 *seed);

extern DeSignKey *de_sign_key_create(MemoryContext mcxt, const uint8 *raw,
									 bool is_private);
extern void de_sign_key_public(DeSignKey *key, uint8 *pub);
extern void de_sign(DeSignKey *key, const uint8 *msg, size_t len,
					uint8 *sig);
extern bool de_verify(DeSignKey *key, const uint8 *msg, size_t len,
					  const uint8 *sig);

extern void de_secure_zero(void *p, size_t len);

#endif							/* DE_CRYPTO_H */
