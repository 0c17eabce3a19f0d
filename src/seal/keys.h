/*-------------------------------------------------------------------------
 *
 * keys.h
 *		  This site's X25519 identity key and the text form of public keys.
 *
 * The private key lives in $PGDATA/data_embassy/identity.key (mode 0600,
 * written atomically and fsynced); it never enters a table, a log line, an
 * error message or a plugin option.  Public keys travel as text: 64
 * lower-case hexadecimal digits (upper case accepted on input).
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
#define DE_SLOT_PREFIX		"data_embassy_"

/*
 * Load this site's identity.  Returns false when no key has been generated;
 * raises ERROR when the file exists but cannot be read or is malformed.
 * The private key is cached in process memory after the first load.
 */
extern bool de_identity_load(uint8 *priv, uint8 *pub);

/* As de_identity_load(), but a missing key is an ERROR with a hint. */
extern void de_identity_require(uint8 *priv, uint8 *pub);

/* Public key to text (palloc'd, 64 hex digits). */
extern char *de_key_to_text(const uint8 *pub);

/*
 * Text to public key.  Callers pass the name of the SQL argument or plugin
 * option in "what"; it appears quoted in the messages; NULL raises ERRCODE_NULL_VALUE_NOT_ALLOWED, bad length or
 * digits and keys no key agreement can use (points of small order) raise
 * ERRCODE_INVALID_PARAMETER_VALUE.
 */
extern void de_key_from_text(const char *text, const char *what, uint8 *pub);

/*
 * Replication slot name an embassy with this public key uses in one
 * register database: "data_embassy_", the first 16 hex digits of
 * SHA-256(key), "_" and the register database's OID (slots are per cluster,
 * and one register cluster may hold several register databases).
 */
extern char *de_slot_name_for_key(const uint8 *pub, Oid register_dboid);

#endif							/* DE_KEYS_H */
