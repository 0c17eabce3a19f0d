/*-------------------------------------------------------------------------
 *
 * keys.h
 *		  This site's identity key and the text form of public keys.
 *
 * The private key lives in $PGDATA/data_embassy/identity.key (mode 0600,
 * written atomically and fsynced); it never enters a table, a log line, an
 * error message or a plugin option.  A site's public key has two halves:
 * the X25519 key frames are sealed to, and the Ed25519 key frames are
 * signed with (derived from the same secret).  It travels as text: 128
 * lower-case hexadecimal digits, X25519 then Ed25519 (upper case accepted
 * on input).
 *
 * IDENTIFICATION
 *		  src/seal/keys.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_KEYS_H
#define DE_KEYS_H

#include "seal/crypto.h"

#define DE_KEY_DIR			"data_embassy"
#define DE_KEY_FILE			"data_embassy/identity.key"
#define DE_KEY_TEXT_LEN		(2 * DE_KEY_LEN)
#define DE_PUBLIC_KEY_TEXT_LEN	(4 * DE_KEY_LEN)
#define DE_SLOT_PREFIX		"data_embassy_"

/* The first frame format whose keys carry a signing key. */
#define DE_FRAME_FORMAT_SIGNED	2

/* A site's public key. */
typedef struct DePublicKey
{
	uint8		dh[DE_KEY_LEN]; /* X25519: frames are sealed to it */
	uint8		sign[DE_KEY_LEN];	/* Ed25519: frames are signed with it */
} DePublicKey;

/*
 * Load this site's identity.  Returns false when no key has been generated;
 * raises ERROR when the file exists but cannot be read or is malformed.
 * The private key is cached in process memory after the first load.
 */
extern bool de_identity_load(uint8 *priv, uint8 *pub);

/* As de_identity_load(), but a missing key is an ERROR with a hint. */
extern void de_identity_require(uint8 *priv, uint8 *pub);

/* A site's public key to text (palloc'd, 128 hex digits). */
extern char *de_key_to_text(const DePublicKey *key);

/* One 32-byte value as 64 hex digits (palloc'd). */
extern char *de_bytes_to_hex(const uint8 *raw);

/*
 * Text to public key.  Callers pass the name of the SQL argument or plugin
 * option the text came from ("what"), for messages.  Refuses keys without a
 * signing half, non-canonical X25519 keys and keys no stream could use.
 */
extern void de_key_from_text(const char *text, const char *what,
							 DePublicKey *key);

/* This site's public key (ERROR when it has no identity yet). */
extern void de_identity_public(DePublicKey *key);

/* The Ed25519 public key derived from an X25519 private key (crypto.h). */
extern void de_identity_sign_public(const uint8 *priv, uint8 *sign_pub);

/* Slot name for an embassy's key in a register database (palloc'd). */
extern char *de_slot_name_for_key(const uint8 *pub, Oid register_dboid);

#endif							/* DE_KEYS_H */
