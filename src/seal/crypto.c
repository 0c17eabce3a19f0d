/*-------------------------------------------------------------------------
 *
 * crypto.c
 *		  X25519, Ed25519, HKDF-SHA256, SHA-256, HMAC-SHA256 and AES-256-GCM
 *		  over OpenSSL 3 EVP.
 *
 * This is the only file that includes OpenSSL headers.  Every primitive
 * comes from OpenSSL; nothing here implements cryptography itself.
 *
 * OpenSSL objects are not palloc'd, so an ERROR must never be raised while
 * one is held only by a local variable: each function frees what it made
 * before it reports a failure.  The one long-lived handle, the cipher
 * context of a DeAead, is owned by a memory context and freed by a reset
 * callback, as well as by de_aead_free(); the key of a DeSignKey likewise.
 *
 * Messages never contain key material; a failed OpenSSL call is reported
 * as "could not ..." with OpenSSL's reason in errdetail
 * (de_openssl_errdetail).
 *
 * IDENTIFICATION
 *		  src/seal/crypto.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "seal/crypto.h"

struct DeAead
{
	EVP_CIPHER_CTX *ctx;		/* NULL once freed */
	MemoryContextCallback cb;
};

/* An Ed25519 key, private (signing) or public (verifying). */
struct DeSignKey
{
	EVP_PKEY   *pkey;			/* NULL once freed */
	bool		is_private;
	MemoryContextCallback cb;
};

/*
 * Algorithms fetched once per process; OpenSSL's explicit fetches are
 * cheaper than the implicit ones done by every EVP_get_*() call.
 */
static EVP_MD *de_sha256_md = NULL;
static EVP_CIPHER *de_aes_gcm = NULL;
static EVP_KDF *de_hkdf = NULL;
static EVP_MAC *de_hmac = NULL;

/* Largest chunk handed to one EVP_*Update() call (their lengths are int). */
#define DE_EVP_CHUNK	(1 << 30)

/*
 * de_openssl_errdetail
 *		errdetail() with OpenSSL's reason for the latest failure, for use
 *		inside ereport():
 *
 *		ereport(ERROR,
 *				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
 *				errmsg("could not ..."),
 *				de_openssl_errdetail());
 *
 * Empties the thread's error queue, so that stale errors cannot be
 * reported later.
 */
static int
de_openssl_errdetail(void)
{
	unsigned long err = ERR_get_error();
	const char *reason = (err != 0) ? ERR_reason_error_string(err) : NULL;

	/* the reason strings are static: clearing the queue keeps them */
	ERR_clear_error();
	if (err == 0)
		return errdetail("OpenSSL reported no error.");
	if (reason != NULL)
		return errdetail("OpenSSL reported: %s.", reason);
	return errdetail("OpenSSL reported error code %lu.", err);
}

/* Fetch the algorithms this file uses, once. */
static void
de_crypto_init(void)
{
	if (de_sha256_md == NULL)
	{
		de_sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
		if (de_sha256_md == NULL)
			ereport(ERROR,
					errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
					errmsg("could not load the SHA-256 implementation"),
					de_openssl_errdetail());
	}
	if (de_aes_gcm == NULL)
	{
		de_aes_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
		if (de_aes_gcm == NULL)
			ereport(ERROR,
					errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
					errmsg("could not load the AES-256-GCM implementation"),
					de_openssl_errdetail());
	}
	if (de_hkdf == NULL)
	{
		de_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
		if (de_hkdf == NULL)
			ereport(ERROR,
					errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
					errmsg("could not load the HKDF implementation"),
					de_openssl_errdetail());
	}
	if (de_hmac == NULL)
	{
		de_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
		if (de_hmac == NULL)
			ereport(ERROR,
					errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
					errmsg("could not load the HMAC implementation"),
					de_openssl_errdetail());
	}
}

/*
 * de_x25519_generate
 *		Make a fresh X25519 key pair from OpenSSL's random generator.
 */
void
de_x25519_generate(uint8 *priv, uint8 *pub)
{
	EVP_PKEY_CTX *pctx;
	EVP_PKEY   *pkey = NULL;
	size_t		privlen = DE_KEY_LEN;
	size_t		publen = DE_KEY_LEN;
	bool		ok;

	pctx = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
	ok = pctx != NULL &&
		EVP_PKEY_keygen_init(pctx) > 0 &&
		EVP_PKEY_keygen(pctx, &pkey) > 0 &&
		EVP_PKEY_get_raw_private_key(pkey, priv, &privlen) > 0 &&
		EVP_PKEY_get_raw_public_key(pkey, pub, &publen) > 0 &&
		privlen == DE_KEY_LEN && publen == DE_KEY_LEN;

	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(pctx);
	if (!ok)
	{
		de_secure_zero(priv, DE_KEY_LEN);
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not generate an X25519 key pair"),
				de_openssl_errdetail());
	}
}

/*
 * de_x25519_public
 *		Public half of an X25519 private key.
 */
void
de_x25519_public(const uint8 *priv, uint8 *pub)
{
	EVP_PKEY   *pkey;
	size_t		publen = DE_KEY_LEN;
	bool		ok;

	pkey = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL,
										   priv, DE_KEY_LEN);
	ok = pkey != NULL &&
		EVP_PKEY_get_raw_public_key(pkey, pub, &publen) > 0 &&
		publen == DE_KEY_LEN;

	EVP_PKEY_free(pkey);
	if (!ok)
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not compute an X25519 public key"),
				de_openssl_errdetail());
}

/*
 * de_x25519_dh
 *		X25519 shared secret of our private key and a peer's public key.
 *
 * OpenSSL refuses a peer key of small order (the result would be all
 * zeros), and so do we if a provider does not; that is the only way a
 * derivation with a valid private key fails, so it is reported as a bad
 * argument.
 */
void
de_x25519_dh(const uint8 *priv, const uint8 *peer_pub, uint8 *secret)
{
	static const uint8 zeros[DE_KEY_LEN] = {0};
	EVP_PKEY   *pkey = NULL;
	EVP_PKEY   *peer = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	size_t		secretlen = DE_KEY_LEN;
	bool		ok;

	pkey = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL,
										   priv, DE_KEY_LEN);
	if (pkey == NULL)
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not load an X25519 private key"),
				de_openssl_errdetail());

	peer = EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL,
										  peer_pub, DE_KEY_LEN);
	if (peer == NULL)
	{
		EVP_PKEY_free(pkey);
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not load an X25519 public key"),
				de_openssl_errdetail());
	}

	pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	ok = pctx != NULL &&
		EVP_PKEY_derive_init(pctx) > 0 &&
		EVP_PKEY_derive_set_peer(pctx, peer) > 0 &&
		EVP_PKEY_derive(pctx, secret, &secretlen) > 0 &&
		secretlen == DE_KEY_LEN &&
		CRYPTO_memcmp(secret, zeros, DE_KEY_LEN) != 0;

	EVP_PKEY_CTX_free(pctx);
	EVP_PKEY_free(peer);
	EVP_PKEY_free(pkey);

	if (!ok)
	{
		/* OpenSSL's own reason adds nothing to the detail below */
		ERR_clear_error();
		de_secure_zero(secret, DE_KEY_LEN);
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("public key is not usable for X25519 key agreement"),
				errdetail("The key is a point of small order or otherwise invalid."));
	}
}

/*
 * de_hkdf_sha256
 *		HKDF-SHA256 (RFC 5869), extract then expand, into outlen bytes.
 */
void
de_hkdf_sha256(const uint8 *salt, size_t saltlen,
			   const uint8 *ikm, size_t ikmlen,
			   const uint8 *info, size_t infolen,
			   uint8 *out, size_t outlen)
{
	EVP_KDF_CTX *kctx;
	OSSL_PARAM	params[5];
	OSSL_PARAM *p = params;
	bool		ok;

	de_crypto_init();

	/* OpenSSL takes non-const pointers but does not write through them. */
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
											(char *) "SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
											 unconstify(uint8 *, ikm), ikmlen);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
											 unconstify(uint8 *, salt),
											 saltlen);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
											 unconstify(uint8 *, info),
											 infolen);
	*p = OSSL_PARAM_construct_end();

	kctx = EVP_KDF_CTX_new(de_hkdf);
	ok = kctx != NULL && EVP_KDF_derive(kctx, out, outlen, params) > 0;
	EVP_KDF_CTX_free(kctx);

	if (!ok)
	{
		de_secure_zero(out, outlen);
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not derive a key with HKDF-SHA256"),
				de_openssl_errdetail());
	}
}

/*
 * de_hmac_sha256
 *		HMAC-SHA256 (RFC 2104) of msg under key, DE_MAC_LEN bytes.
 */
void
de_hmac_sha256(const uint8 *key, size_t keylen,
			   const uint8 *msg, size_t len, uint8 *mac)
{
	EVP_MAC_CTX *mctx;
	OSSL_PARAM	params[2];
	size_t		maclen = 0;
	bool		ok;

	de_crypto_init();
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
												 (char *) "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();

	mctx = EVP_MAC_CTX_new(de_hmac);
	ok = mctx != NULL &&
		EVP_MAC_init(mctx, key, keylen, params) > 0 &&
		EVP_MAC_update(mctx, msg, len) > 0 &&
		EVP_MAC_final(mctx, mac, &maclen, DE_MAC_LEN) > 0 &&
		maclen == DE_MAC_LEN;
	EVP_MAC_CTX_free(mctx);
	if (!ok)
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not compute an HMAC-SHA256"),
				de_openssl_errdetail());
}

/*
 * de_equal_secret
 *		Compare two buffers in time that depends only on their length (for
 *		authentication codes).
 */
bool
de_equal_secret(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

/*
 * de_sha256
 *		SHA-256 of one buffer.
 */
void
de_sha256(const void *data, size_t len, uint8 *digest)
{
	unsigned int mdlen = 0;

	de_crypto_init();
	if (EVP_Digest(data, len, digest, &mdlen, de_sha256_md, NULL) <= 0 ||
		mdlen != DE_HASH_LEN)
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not compute a SHA-256 digest"),
				de_openssl_errdetail());
}

/* Memory context reset callback of a DeAead. */
static void
de_aead_reset_callback(void *arg)
{
	DeAead	   *aead = (DeAead *) arg;

	/* EVP_CIPHER_CTX_free() also wipes the key schedule */
	EVP_CIPHER_CTX_free(aead->ctx);
	aead->ctx = NULL;
}

/*
 * de_aead_create
 *		An AES-256-GCM cipher context keyed with "key", owned by mcxt.
 *
 * The caller may wipe its copy of the key afterwards; the context keeps
 * only its key schedule.
 */
DeAead *
de_aead_create(MemoryContext mcxt, const uint8 *key)
{
	DeAead	   *aead;
	EVP_CIPHER_CTX *ctx;

	de_crypto_init();

	/*
	 * Allocate first and register the callback as soon as the cipher context
	 * exists, so that it is owned by mcxt before anything else can fail.
	 */
	aead = MemoryContextAllocZero(mcxt, sizeof(DeAead));
	ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL)
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not create a cipher context"),
				de_openssl_errdetail());
	aead->ctx = ctx;
	aead->cb.func = de_aead_reset_callback;
	aead->cb.arg = aead;
	MemoryContextRegisterResetCallback(mcxt, &aead->cb);

	/* direction and nonce are set for every message */
	if (EVP_CipherInit_ex2(ctx, de_aes_gcm, key, NULL, 1, NULL) <= 0)
	{
		de_aead_free(aead);
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not initialize AES-256-GCM"),
				de_openssl_errdetail());
	}

	return aead;
}

/*
 * de_aead_free
 *		Free the cipher context now.  The small struct itself stays in its
 *		memory context (its reset callback still points at it) and goes with
 *		that context.
 */
void
de_aead_free(DeAead *aead)
{
	if (aead == NULL)
		return;
	EVP_CIPHER_CTX_free(aead->ctx);
	aead->ctx = NULL;
}

/* Feed len bytes through EVP_CipherUpdate, in chunks that fit an int. */
static bool
de_aead_update(EVP_CIPHER_CTX *ctx, uint8 *out, const uint8 *in, size_t len)
{
	while (len > 0)
	{
		int			chunk = (int) Min(len, (size_t) DE_EVP_CHUNK);
		int			outl = 0;

		if (EVP_CipherUpdate(ctx, out, &outl, in, chunk) <= 0 ||
			outl != chunk)
			return false;
		in += chunk;
		out += chunk;
		len -= chunk;
	}
	return true;
}

/* Feed associated data, in chunks that fit an int. */
static bool
de_aead_aad(EVP_CIPHER_CTX *ctx, const uint8 *aad, size_t aadlen)
{
	while (aadlen > 0)
	{
		int			chunk = (int) Min(aadlen, (size_t) DE_EVP_CHUNK);
		int			outl = 0;

		if (EVP_CipherUpdate(ctx, NULL, &outl, aad, chunk) <= 0)
			return false;
		aad += chunk;
		aadlen -= chunk;
	}
	return true;
}

static void
de_aead_check_live(DeAead *aead)
{
	if (aead == NULL || aead->ctx == NULL)
		elog(ERROR, "AEAD context used after it was freed");
}

/*
 * de_aead_seal
 *		AES-256-GCM encryption; out receives len bytes of ciphertext then the
 *		DE_TAG_LEN-byte tag.  out may equal plain (in-place encryption).
 */
void
de_aead_seal(DeAead *aead, const uint8 *nonce,
			 const uint8 *aad, size_t aadlen,
			 const uint8 *plain, size_t len, uint8 *out)
{
	EVP_CIPHER_CTX *ctx;
	int			outl = 0;

	de_aead_check_live(aead);
	ctx = aead->ctx;

	if (EVP_CipherInit_ex2(ctx, NULL, NULL, nonce, 1, NULL) <= 0 ||
		!de_aead_aad(ctx, aad, aadlen) ||
		!de_aead_update(ctx, out, plain, len) ||
		EVP_CipherFinal_ex(ctx, out + len, &outl) <= 0 ||
		outl != 0 ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, DE_TAG_LEN,
							out + len) <= 0)
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not encrypt with AES-256-GCM"),
				de_openssl_errdetail());
}

/*
 * de_aead_open
 *		AES-256-GCM decryption and verification.  Returns false when the tag
 *		does not verify; other failures raise ERROR.
 */
bool
de_aead_open(DeAead *aead, const uint8 *nonce,
			 const uint8 *aad, size_t aadlen,
			 const uint8 *sealed, size_t sealedlen, uint8 *out)
{
	EVP_CIPHER_CTX *ctx;
	uint8		tag[DE_TAG_LEN];
	size_t		len;
	int			outl = 0;

	de_aead_check_live(aead);
	ctx = aead->ctx;

	if (sealedlen < DE_TAG_LEN)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("sealed data is too short"),
				errdetail("Sealed data of %zu bytes cannot hold a %d-byte authentication tag.",
						  sealedlen, DE_TAG_LEN));
	len = sealedlen - DE_TAG_LEN;

	/* the control call takes a non-const pointer: hand it a copy */
	memcpy(tag, sealed + len, DE_TAG_LEN);

	if (EVP_CipherInit_ex2(ctx, NULL, NULL, nonce, 0, NULL) <= 0 ||
		!de_aead_aad(ctx, aad, aadlen) ||
		!de_aead_update(ctx, out, sealed, len) ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, DE_TAG_LEN,
							tag) <= 0)
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not decrypt with AES-256-GCM"),
				de_openssl_errdetail());

	/* a failing final step is the tag not verifying */
	if (EVP_CipherFinal_ex(ctx, out + len, &outl) <= 0)
	{
		ERR_clear_error();
		return false;
	}
	return true;
}

/*
 * de_secure_zero
 *		Overwrite secret bytes; OpenSSL's cleanse is not optimised away.
 */
void
de_secure_zero(void *p, size_t len)
{
	OPENSSL_cleanse(p, len);
}

/* ---------- Ed25519 ---------- */

void
de_derive_sign_seed(const uint8 *x25519_priv, uint8 *seed)
{
	static const char salt[] = "data_embassy identity";
	static const char info[] = "data_embassy ed25519 signing key v1";

	de_hkdf_sha256((const uint8 *) salt, sizeof(salt) - 1,
				   x25519_priv, DE_KEY_LEN,
				   (const uint8 *) info, sizeof(info) - 1, seed, DE_KEY_LEN);
}

static void
de_sign_key_reset_callback(void *arg)
{
	DeSignKey  *key = (DeSignKey *) arg;

	/* EVP_PKEY_free() wipes the private key */
	EVP_PKEY_free(key->pkey);
	key->pkey = NULL;
}

/*
 * de_sign_key_create
 *		An Ed25519 key owned by mcxt: from a 32-byte private seed when
 *		is_private, else from a 32-byte public key.  A public key that is
 *		not a valid encoding is refused with ERRCODE_INVALID_PARAMETER_VALUE.
 */
DeSignKey *
de_sign_key_create(MemoryContext mcxt, const uint8 *raw, bool is_private)
{
	DeSignKey  *key;
	EVP_PKEY   *pkey;

	key = MemoryContextAllocZero(mcxt, sizeof(DeSignKey));
	if (is_private)
		pkey = EVP_PKEY_new_raw_private_key_ex(NULL, "ED25519", NULL,
											   raw, DE_KEY_LEN);
	else
		pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL,
											  raw, DE_KEY_LEN);
	if (pkey == NULL)
		ereport(ERROR,
				errcode(is_private ?
						ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION :
						ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("could not load an Ed25519 key"),
				de_openssl_errdetail());
	key->pkey = pkey;
	key->is_private = is_private;
	key->cb.func = de_sign_key_reset_callback;
	key->cb.arg = key;
	MemoryContextRegisterResetCallback(mcxt, &key->cb);
	return key;
}

/* The public half of a key, 32 bytes. */
void
de_sign_key_public(DeSignKey *key, uint8 *pub)
{
	size_t		publen = DE_KEY_LEN;

	if (EVP_PKEY_get_raw_public_key(key->pkey, pub, &publen) <= 0 ||
		publen != DE_KEY_LEN)
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not compute an Ed25519 public key"),
				de_openssl_errdetail());
}

/*
 * de_sign
 *		Ed25519 signature (DE_SIG_LEN bytes) of msg with a private key.
 */
void
de_sign(DeSignKey *key, const uint8 *msg, size_t len, uint8 *sig)
{
	EVP_MD_CTX *ctx;
	size_t		siglen = DE_SIG_LEN;
	bool		ok;

	Assert(key->is_private && key->pkey != NULL);
	ctx = EVP_MD_CTX_new();
	ok = ctx != NULL &&
		EVP_DigestSignInit_ex(ctx, NULL, NULL, NULL, NULL, key->pkey,
							  NULL) > 0 &&
		EVP_DigestSign(ctx, sig, &siglen, msg, len) > 0 &&
		siglen == DE_SIG_LEN;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not sign with Ed25519"),
				de_openssl_errdetail());
}

/*
 * de_verify
 *		Is sig a valid Ed25519 signature of msg under key?  A bad signature
 *		is an answer (false), not an error.
 */
bool
de_verify(DeSignKey *key, const uint8 *msg, size_t len, const uint8 *sig)
{
	EVP_MD_CTX *ctx;
	int			rc;

	Assert(key->pkey != NULL);
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL ||
		EVP_DigestVerifyInit_ex(ctx, NULL, NULL, NULL, NULL, key->pkey,
								NULL) <= 0)
	{
		EVP_MD_CTX_free(ctx);
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION),
				errmsg("could not verify an Ed25519 signature"),
				de_openssl_errdetail());
	}
	rc = EVP_DigestVerify(ctx, sig, DE_SIG_LEN, msg, len);
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return rc == 1;
}
