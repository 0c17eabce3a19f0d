/*-------------------------------------------------------------------------
 *
 * frame.c
 *		  Sealing and opening frames (layout and key schedule in frame.h).
 *
 * A sealer or an opener lives in its own memory context, a child of the
 * one its creator gives; the zstd context and the AES-GCM context are
 * freed by reset callbacks on it, so they cannot outlive it, and the
 * secrets it holds are wiped then.  de_sealer_free() and de_opener_free()
 * simply delete that context.
 *
 * A body of plain_len 0 (a position frame) is not compressed at all: its
 * sealed body is the tag alone.  Any other body is exactly one zstd frame
 * that records its content size.
 *
 * The opener commits its state (stream key, next sequence number, chain
 * hash, end LSN) only after every check has passed and the body has been
 * decompressed, so a frame that fails leaves it exactly as it was.  The
 * key of a stream's first frame is derived into a scratch context that
 * becomes the stream's key context once the frame has been authenticated.
 *
 * IDENTIFICATION
 *		  src/seal/frame.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <zstd.h>

#include "port/pg_bswap.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "seal/frame.h"

/* HKDF info prefix; followed by sysid, dboid and kind */
#define DE_FRAME_INFO		"data_embassy frame v3"
#define DE_FRAME_INFO_LEN	(sizeof(DE_FRAME_INFO) - 1 + 8 + 4 + 1)

/* HKDF info of the session's MAC key; followed by kind */
#define DE_MAC_KEY_INFO		"data_embassy frame v3 session"
#define DE_MAC_KEY_INFO_LEN (sizeof(DE_MAC_KEY_INFO) - 1 + 1)

/* field offsets, as documented in frame.h */
#define OFF_MAGIC		0
#define OFF_VERSION		4
#define OFF_KIND		5
#define OFF_FLAGS		6
#define OFF_SYSID		8
#define OFF_DBOID		16
#define OFF_TIMELINE	20
#define OFF_EPH_PUB		24
#define OFF_SESSION		56
#define OFF_SEQ			88
#define OFF_START_LSN	96
#define OFF_END_LSN		104
#define OFF_COMMIT_LSN	112
#define OFF_SOURCE_LSN	120
#define OFF_SOURCE_TIME	128
#define OFF_PLAIN_LEN	136
#define OFF_SEALED_LEN	140
#define OFF_PREV_HASH	144

/*
 * What the session MAC and the register's signature cover: a label of
 * their own, then the frame's SHA-256 (header and sealed body).
 */
#define DE_FRAME_MAC_LABEL		"data_embassy frame v3 mac"
#define DE_FRAME_SIG_LABEL		"data_embassy frame v3 signature"
#define DE_FRAME_MAC_MSG_LEN	(sizeof(DE_FRAME_MAC_LABEL) - 1 + DE_HASH_LEN)
#define DE_FRAME_SIG_MSG_LEN	(sizeof(DE_FRAME_SIG_LABEL) - 1 + DE_HASH_LEN)

StaticAssertDecl(OFF_PREV_HASH + DE_HASH_LEN == DE_FRAME_HEADER_SIZE,
				 "frame header layout does not add up");

/*
 * Working space for deriving a stream key.  It lives inside the sealer or
 * opener, whose reset callback wipes it, so that no secret is left behind
 * when an ERROR interrupts a derivation; the normal path wipes it at once.
 */
typedef struct DeKeyWork
{
	uint8		eph_priv[DE_KEY_LEN];	/* sealer only */
	uint8		dh_eph[DE_KEY_LEN];
	uint8		dh_static[DE_KEY_LEN];
	uint8		ikm[2 * DE_KEY_LEN];
	uint8		okm[DE_KEY_LEN + DE_NONCE_LEN];
	uint8		key[DE_KEY_LEN];
	uint8		dh_session[DE_KEY_LEN];
} DeKeyWork;

struct DeSealer
{
	MemoryContext cxt;			/* owns everything below */
	DeAead	   *aead;
	uint8		nonce_base[DE_NONCE_LEN];
	uint8		eph_pub[DE_KEY_LEN];
	uint8		session[DE_SESSION_LEN];
	uint8		mac_key[DE_KEY_LEN];	/* the session's MAC key */
	DeSignKey  *sign_key;		/* the register's Ed25519 key */
	TimestampTz last_signed_at; /* when a frame was last signed */
	uint64		sysid;
	Oid			dboid;
	TimeLineID	timeline;
	char		kind;
	int			zstd_level;
	uint64		next_seq;
	XLogRecPtr	start_lsn;
	uint8		prev_hash[DE_HASH_LEN];
	ZSTD_CCtx  *zctx;
	DeKeyWork	work;
	MemoryContextCallback cb;
};

struct DeOpener
{
	MemoryContext cxt;			/* owns everything below */
	MemoryContext key_cxt;		/* holds the current stream's AEAD */
	MemoryContext scratch_cxt;	/* a candidate AEAD; reset for every frame */

	/* fixed at creation */
	uint8		embassy_priv[DE_KEY_LEN];
	uint8		embassy_pub[DE_KEY_LEN];
	uint8		register_pub[DE_KEY_LEN];
	uint8		static_dh[DE_KEY_LEN];	/* DH(embassy, register) */
	DeSignKey  *verify_key;		/* the register's Ed25519 key */
	bool		check_session;	/* false: a debugging tool, no MACs */
	uint8		session[DE_SESSION_LEN];	/* the session's public key */
	uint8		mac_key[DE_KEY_LEN];	/* the session's MAC key */
	char		kind;
	bool		require_first;
	uint64		expect_sysid;
	Oid			expect_dboid;

	bool		check_start;	/* the first frame must start exactly... */
	XLogRecPtr	expect_start;	/* ...here */

	/* the stream, once its first frame has been opened */
	bool		in_stream;
	uint8		eph_pub[DE_KEY_LEN];
	DeAead	   *aead;
	uint8		nonce_base[DE_NONCE_LEN];
	uint64		sysid;
	Oid			dboid;
	uint64		next_seq;
	uint8		prev_hash[DE_HASH_LEN];
	XLogRecPtr	prev_end_lsn;

	ZSTD_DCtx  *dctx;
	StringInfoData body;		/* decrypted, still compressed body */
	DeKeyWork	work;
	MemoryContextCallback cb;
};

static const uint8 de_zero_hash[DE_HASH_LEN] = {0};

static void de_opener_foreign(const DeFrameHeader *hdr, uint64 sysid,
							  Oid dboid) pg_attribute_noreturn();

/* ---------- big-endian helpers ---------- */

/*
 * The header has fixed offsets in a raw buffer (and is read before any
 * length is trusted), so these write and read in place rather than
 * appending to a StringInfo as pqformat.h's functions and codec.c do.
 */

static inline void
de_put16(uint8 *p, uint16 v)
{
	v = pg_hton16(v);
	memcpy(p, &v, sizeof(v));
}

static inline void
de_put32(uint8 *p, uint32 v)
{
	v = pg_hton32(v);
	memcpy(p, &v, sizeof(v));
}

static inline void
de_put64(uint8 *p, uint64 v)
{
	v = pg_hton64(v);
	memcpy(p, &v, sizeof(v));
}

static inline uint16
de_get16(const uint8 *p)
{
	uint16		v;

	memcpy(&v, p, sizeof(v));
	return pg_ntoh16(v);
}

static inline uint32
de_get32(const uint8 *p)
{
	uint32		v;

	memcpy(&v, p, sizeof(v));
	return pg_ntoh32(v);
}

static inline uint64
de_get64(const uint8 *p)
{
	uint64		v;

	memcpy(&v, p, sizeof(v));
	return pg_ntoh64(v);
}

/* ---------- shared pieces ---------- */

static void
de_frame_write_header(uint8 *buf, const DeFrameHeader *hdr)
{
	memcpy(buf + OFF_MAGIC, DE_FRAME_MAGIC, 4);
	buf[OFF_VERSION] = hdr->version;
	buf[OFF_KIND] = (uint8) hdr->kind;
	de_put16(buf + OFF_FLAGS, hdr->flags);
	de_put64(buf + OFF_SYSID, hdr->sysid);
	de_put32(buf + OFF_DBOID, hdr->dboid);
	de_put32(buf + OFF_TIMELINE, hdr->timeline);
	memcpy(buf + OFF_EPH_PUB, hdr->eph_pub, DE_KEY_LEN);
	memcpy(buf + OFF_SESSION, hdr->session, DE_SESSION_LEN);
	de_put64(buf + OFF_SEQ, hdr->seq);
	de_put64(buf + OFF_START_LSN, hdr->start_lsn);
	de_put64(buf + OFF_END_LSN, hdr->end_lsn);
	de_put64(buf + OFF_COMMIT_LSN, hdr->commit_lsn);
	de_put64(buf + OFF_SOURCE_LSN, hdr->source_lsn);
	de_put64(buf + OFF_SOURCE_TIME, (uint64) hdr->source_time);
	de_put32(buf + OFF_PLAIN_LEN, hdr->plain_len);
	de_put32(buf + OFF_SEALED_LEN, hdr->sealed_len);
	memcpy(buf + OFF_PREV_HASH, hdr->prev_hash, DE_HASH_LEN);
}

/*
 * de_frame_peek_header
 *		Parse the clear header without authenticating anything.
 */
void
de_frame_peek_header(const char *frame, size_t len, DeFrameHeader *hdr)
{
	const uint8 *buf = (const uint8 *) frame;

	if (len < OFF_VERSION + 1 ||
		memcmp(buf + OFF_MAGIC, DE_FRAME_MAGIC, 4) != 0)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("data is not a data_embassy frame"),
				errdetail("A frame starts with the bytes \"%s\".",
						  DE_FRAME_MAGIC));

	/* another version's header may have another size: say so first */
	if (buf[OFF_VERSION] != DE_FRAME_VERSION)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("frame format version %d is not supported",
					   (int) buf[OFF_VERSION]),
				errdetail("This server reads frame format version %d; the frame was written in version %d.",
						  DE_FRAME_VERSION, (int) buf[OFF_VERSION]),
				errhint("Run the same version of data_embassy on the register and on the embassy."));

	if (len < DE_FRAME_HEADER_SIZE)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("frame is truncated"),
				errdetail("The frame has %zu bytes, fewer than the %d bytes of a frame header.",
						  len, DE_FRAME_HEADER_SIZE));

	hdr->version = buf[OFF_VERSION];
	hdr->kind = (char) buf[OFF_KIND];
	hdr->flags = de_get16(buf + OFF_FLAGS);
	hdr->sysid = de_get64(buf + OFF_SYSID);
	hdr->dboid = de_get32(buf + OFF_DBOID);
	hdr->timeline = de_get32(buf + OFF_TIMELINE);
	memcpy(hdr->eph_pub, buf + OFF_EPH_PUB, DE_KEY_LEN);
	memcpy(hdr->session, buf + OFF_SESSION, DE_SESSION_LEN);
	hdr->seq = de_get64(buf + OFF_SEQ);
	hdr->start_lsn = de_get64(buf + OFF_START_LSN);
	hdr->end_lsn = de_get64(buf + OFF_END_LSN);
	hdr->commit_lsn = de_get64(buf + OFF_COMMIT_LSN);
	hdr->source_lsn = de_get64(buf + OFF_SOURCE_LSN);
	hdr->source_time = (TimestampTz) de_get64(buf + OFF_SOURCE_TIME);
	hdr->plain_len = de_get32(buf + OFF_PLAIN_LEN);
	hdr->sealed_len = de_get32(buf + OFF_SEALED_LEN);
	memcpy(hdr->prev_hash, buf + OFF_PREV_HASH, DE_HASH_LEN);
}

/*
 * de_frame_derive_key
 *		The stream's AES key (into work->key) and nonce base, by HKDF-SHA256
 *		(see frame.h), from work->dh_eph = DH(ephemeral, embassy) and
 *		work->dh_static = DH(register, embassy).
 */
static void
de_frame_derive_key(DeKeyWork *work,
					const uint8 *eph_pub, const uint8 *embassy_pub,
					const uint8 *register_pub,
					uint64 sysid, Oid dboid, char kind,
					uint8 *nonce_base)
{
	uint8		salt[3 * DE_KEY_LEN];
	uint8		info[DE_FRAME_INFO_LEN];
	uint8	   *p;

	memcpy(work->ikm, work->dh_eph, DE_KEY_LEN);
	memcpy(work->ikm + DE_KEY_LEN, work->dh_static, DE_KEY_LEN);

	memcpy(salt, eph_pub, DE_KEY_LEN);
	memcpy(salt + DE_KEY_LEN, embassy_pub, DE_KEY_LEN);
	memcpy(salt + 2 * DE_KEY_LEN, register_pub, DE_KEY_LEN);

	p = info;
	memcpy(p, DE_FRAME_INFO, sizeof(DE_FRAME_INFO) - 1);
	p += sizeof(DE_FRAME_INFO) - 1;
	de_put64(p, sysid);
	p += 8;
	de_put32(p, dboid);
	p += 4;
	*p = (uint8) kind;

	de_hkdf_sha256(salt, sizeof(salt), work->ikm, sizeof(work->ikm),
				   info, sizeof(info), work->okm, sizeof(work->okm));
	memcpy(work->key, work->okm, DE_KEY_LEN);
	memcpy(nonce_base, work->okm + DE_KEY_LEN, DE_NONCE_LEN);
}

/* Nonce of frame "seq": the nonce base XOR the big-endian sequence number. */
static void
de_frame_nonce(const uint8 *nonce_base, uint64 seq, uint8 *nonce)
{
	uint8		seqbuf[8];

	de_put64(seqbuf, seq);
	memcpy(nonce, nonce_base, DE_NONCE_LEN);
	for (int i = 0; i < 8; i++)
		nonce[DE_NONCE_LEN - 8 + i] ^= seqbuf[i];
}

/* The message a frame's signature covers: a label, then the frame's hash. */
static void
de_frame_sig_msg(const uint8 *hash, uint8 *msg)
{
	memcpy(msg, DE_FRAME_SIG_LABEL, sizeof(DE_FRAME_SIG_LABEL) - 1);
	memcpy(msg + sizeof(DE_FRAME_SIG_LABEL) - 1, hash, DE_HASH_LEN);
}

/* A frame's session MAC: HMAC-SHA256 of a label, then the frame's hash. */
static void
de_frame_mac(const uint8 *mac_key, const uint8 *hash, uint8 *mac)
{
	uint8		msg[DE_FRAME_MAC_MSG_LEN];

	memcpy(msg, DE_FRAME_MAC_LABEL, sizeof(DE_FRAME_MAC_LABEL) - 1);
	memcpy(msg + sizeof(DE_FRAME_MAC_LABEL) - 1, hash, DE_HASH_LEN);
	de_hmac_sha256(mac_key, DE_KEY_LEN, msg, sizeof(msg), mac);
}

/*
 * de_frame_derive_mac_key
 *		The session's MAC key (see frame.h), by HKDF-SHA256 from
 *		work->dh_session = DH(register, session).
 */
static void
de_frame_derive_mac_key(DeKeyWork *work, const uint8 *session_pub,
						const uint8 *embassy_pub, const uint8 *register_pub,
						char kind, uint8 *mac_key)
{
	uint8		salt[3 * DE_KEY_LEN];
	uint8		info[DE_MAC_KEY_INFO_LEN];

	memcpy(salt, session_pub, DE_KEY_LEN);
	memcpy(salt + DE_KEY_LEN, embassy_pub, DE_KEY_LEN);
	memcpy(salt + 2 * DE_KEY_LEN, register_pub, DE_KEY_LEN);
	memcpy(info, DE_MAC_KEY_INFO, sizeof(DE_MAC_KEY_INFO) - 1);
	info[sizeof(DE_MAC_KEY_INFO) - 1] = (uint8) kind;

	de_hkdf_sha256(salt, sizeof(salt), work->dh_session, DE_KEY_LEN,
				   info, sizeof(info), mac_key, DE_KEY_LEN);
}

/* ---------- sealing ---------- */

/*
 * de_frame_try_dh
 *		X25519 of our private key and a peer's public key that came over an
 *		unauthenticated channel.  Returns false for a peer key X25519
 *		refuses (a point of small order), so that the caller can say which
 *		key is at fault; any other failure is raised unchanged.
 */
static bool
de_frame_try_dh(const uint8 *priv, const uint8 *peer_pub, uint8 *secret)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		de_x25519_dh(priv, peer_pub, secret);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_INVALID_PARAMETER_VALUE)
			PG_RE_THROW();
		FlushErrorState();
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * de_sealer_session_dh
 *		DH(register, session) into work->dh_session.
 *
 * The session key comes from the embassy over an unauthenticated channel
 * (a START_REPLICATION option, a copy_frames() argument).  One of small
 * order is refused by name: the generic X25519 error would not say which
 * key is at fault, and the embassy relays only the message.
 */
static void
de_sealer_session_dh(DeKeyWork *work, const uint8 *register_priv,
					 const uint8 *session)
{
	if (!de_frame_try_dh(register_priv, session, work->dh_session))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("session key is an X25519 point of small order"),
				errdetail("No MAC key that only the embassy could check can be derived from it.  An embassy never makes such a key: it was changed on its way to the register, or given by hand."));
}

static void
de_sealer_reset_callback(void *arg)
{
	DeSealer   *sealer = (DeSealer *) arg;

	ZSTD_freeCCtx(sealer->zctx);
	sealer->zctx = NULL;
	de_secure_zero(sealer->nonce_base, DE_NONCE_LEN);
	de_secure_zero(sealer->mac_key, DE_KEY_LEN);
	de_secure_zero(&sealer->work, sizeof(DeKeyWork));
}

/*
 * de_sealer_create
 *		Start a stream: make its ephemeral key pair and derive its key and
 *		the session's MAC key.  The session key comes from the embassy over
 *		an unauthenticated channel; one of small order is refused here.
 */
DeSealer *
de_sealer_create(MemoryContext mcxt,
				 const uint8 *register_priv,
				 const uint8 *register_pub,
				 const uint8 *embassy_pub,
				 const uint8 *session,
				 uint64 sysid, Oid dboid, TimeLineID timeline,
				 char kind, int zstd_level, XLogRecPtr start_lsn)
{
	MemoryContext cxt;
	DeSealer   *sealer;
	DeKeyWork  *work;
	uint8		seed[DE_KEY_LEN];

	Assert(kind == DE_FRAME_KIND_STREAM || kind == DE_FRAME_KIND_COPY);

	cxt = AllocSetContextCreate(mcxt, "data_embassy sealer",
								ALLOCSET_SMALL_SIZES);
	sealer = MemoryContextAllocZero(cxt, sizeof(DeSealer));
	sealer->cxt = cxt;
	sealer->cb.func = de_sealer_reset_callback;
	sealer->cb.arg = sealer;
	MemoryContextRegisterResetCallback(cxt, &sealer->cb);

	sealer->zctx = ZSTD_createCCtx();
	if (sealer->zctx == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OUT_OF_MEMORY),
				errmsg("out of memory"),
				errdetail("Could not create a zstd compression context."));

	work = &sealer->work;
	de_x25519_generate(work->eph_priv, sealer->eph_pub);
	de_x25519_dh(work->eph_priv, embassy_pub, work->dh_eph);
	de_x25519_dh(register_priv, embassy_pub, work->dh_static);
	de_frame_derive_key(work, sealer->eph_pub, embassy_pub, register_pub,
						sysid, dboid, kind, sealer->nonce_base);
	sealer->aead = de_aead_create(cxt, work->key);
	de_secure_zero(work, sizeof(DeKeyWork));

	de_sealer_session_dh(work, register_priv, session);
	de_frame_derive_mac_key(work, session, embassy_pub, register_pub, kind,
							sealer->mac_key);
	de_secure_zero(work, sizeof(DeKeyWork));

	de_derive_sign_seed(register_priv, seed);
	sealer->sign_key = de_sign_key_create(cxt, seed, true);
	de_secure_zero(seed, sizeof(seed));

	memcpy(sealer->session, session, DE_SESSION_LEN);
	sealer->sysid = sysid;
	sealer->dboid = dboid;
	sealer->timeline = timeline;
	sealer->kind = kind;
	sealer->zstd_level = zstd_level;
	sealer->next_seq = 1;
	sealer->start_lsn = start_lsn;
	sealer->last_signed_at = 0;
	memset(sealer->prev_hash, 0, DE_HASH_LEN);

	return sealer;
}

/*
 * de_sealer_seal
 *		Compress, seal and append one frame to "out".
 *
 * Every frame gets the session MAC.  The frame is also signed when "sign"
 * asks for it, when it is the stream's first, or when the last signature
 * is DE_SIGN_INTERVAL_MS old.
 *
 * The body is compressed straight into "out" after room for the header and
 * encrypted in place.  "out" and the sealer change only once the frame is
 * complete, so an ERROR leaves both as they were.
 */
void
de_sealer_seal(DeSealer *sealer, const char *plain, uint32 plain_len,
			   uint16 flags, XLogRecPtr end_lsn, XLogRecPtr commit_lsn,
			   XLogRecPtr source_lsn, bool sign, StringInfo out)
{
	DeFrameHeader hdr;
	size_t		bound = 0;
	size_t		clen = 0;
	uint8	   *frame;
	uint8	   *body;
	uint8		nonce[DE_NONCE_LEN];
	uint8		sigmsg[DE_FRAME_SIG_MSG_LEN];
	size_t		frame_len;
	TimestampTz now;

	if (sealer->zctx == NULL)
		elog(ERROR, "frame sealer used after it was freed");

	if (plain_len > DE_FRAME_MAX_PLAIN)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("frame body of %u bytes is too large", plain_len),
				errdetail("A frame body may hold at most %u bytes.",
						  DE_FRAME_MAX_PLAIN));
	if (sealer->next_seq == PG_UINT64_MAX)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("frame sequence number space of the stream is exhausted"));

	if (plain_len > 0)
	{
		bound = ZSTD_compressBound(plain_len);
		if (ZSTD_isError(bound) ||
			bound > (size_t) DE_FRAME_MAX_PLAIN - DE_TAG_LEN)
			ereport(ERROR,
					errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					errmsg("frame body of %u bytes is too large", plain_len));
	}

	enlargeStringInfo(out, DE_FRAME_HEADER_SIZE + bound + DE_TAG_LEN +
					  DE_MAC_LEN + DE_SIG_LEN);
	frame = (uint8 *) out->data + out->len;
	body = frame + DE_FRAME_HEADER_SIZE;

	if (plain_len > 0)
	{
		clen = ZSTD_compressCCtx(sealer->zctx, body, bound,
								 plain, plain_len, sealer->zstd_level);
		if (ZSTD_isError(clen))
			ereport(ERROR,
					errcode(ERRCODE_INTERNAL_ERROR),
					errmsg("could not compress frame %llu",
						   (unsigned long long) sealer->next_seq),
					errdetail("zstd reported: %s.", ZSTD_getErrorName(clen)));
	}

	Assert((flags & ~(DE_FRAME_FLAGS_KNOWN & ~DE_FRAME_SIGNED)) == 0);
	now = GetCurrentTimestamp();
	if (sealer->next_seq == 1 ||
		TimestampDifferenceExceeds(sealer->last_signed_at, now,
								   DE_SIGN_INTERVAL_MS))
		sign = true;

	hdr.version = DE_FRAME_VERSION;
	hdr.kind = sealer->kind;
	hdr.flags = flags | (sign ? DE_FRAME_SIGNED : 0);
	hdr.sysid = sealer->sysid;
	hdr.dboid = sealer->dboid;
	hdr.timeline = sealer->timeline;
	memcpy(hdr.eph_pub, sealer->eph_pub, DE_KEY_LEN);
	memcpy(hdr.session, sealer->session, DE_SESSION_LEN);
	hdr.seq = sealer->next_seq;
	hdr.start_lsn = sealer->start_lsn;
	hdr.end_lsn = end_lsn;
	hdr.commit_lsn = commit_lsn;
	hdr.source_lsn = source_lsn;
	hdr.source_time = now;
	hdr.plain_len = plain_len;
	hdr.sealed_len = (uint32) (clen + DE_TAG_LEN);
	memcpy(hdr.prev_hash, sealer->prev_hash, DE_HASH_LEN);
	de_frame_write_header(frame, &hdr);

	de_frame_nonce(sealer->nonce_base, hdr.seq, nonce);
	de_aead_seal(sealer->aead, nonce, frame, DE_FRAME_HEADER_SIZE,
				 body, clen, body);

	frame_len = DE_FRAME_HEADER_SIZE + clen + DE_TAG_LEN;
	de_sha256(frame, frame_len, sealer->prev_hash);
	de_frame_mac(sealer->mac_key, sealer->prev_hash, frame + frame_len);
	frame_len += DE_MAC_LEN;
	if (sign)
	{
		de_frame_sig_msg(sealer->prev_hash, sigmsg);
		de_sign(sealer->sign_key, sigmsg, sizeof(sigmsg), frame + frame_len);
		frame_len += DE_SIG_LEN;
		sealer->last_signed_at = now;
	}

	out->len += frame_len;
	out->data[out->len] = '\0';

	sealer->next_seq++;
	sealer->start_lsn = end_lsn;
}

/*
 * de_sealer_free
 *		Free the sealer and everything it holds now.
 */
void
de_sealer_free(DeSealer *sealer)
{
	if (sealer != NULL)
		MemoryContextDelete(sealer->cxt);
}

/* ---------- opening ---------- */

static void
de_opener_reset_callback(void *arg)
{
	DeOpener   *opener = (DeOpener *) arg;

	ZSTD_freeDCtx(opener->dctx);
	opener->dctx = NULL;
	de_secure_zero(opener->embassy_priv, DE_KEY_LEN);
	de_secure_zero(opener->static_dh, DE_KEY_LEN);
	de_secure_zero(opener->mac_key, DE_KEY_LEN);
	de_secure_zero(opener->nonce_base, DE_NONCE_LEN);
	de_secure_zero(&opener->work, sizeof(DeKeyWork));
}

/*
 * de_opener_create
 *		Receiving side of one stream, for this embassy and one register.
 */
DeOpener *
de_opener_create(MemoryContext mcxt,
				 const uint8 *embassy_priv,
				 const uint8 *register_pub,
				 const uint8 *register_sign_pub,
				 const uint8 *session_priv,
				 char kind, bool require_first,
				 uint64 expect_sysid, Oid expect_dboid)
{
	MemoryContext cxt;
	DeOpener   *opener;

	Assert(kind == DE_FRAME_KIND_STREAM || kind == DE_FRAME_KIND_COPY);

	cxt = AllocSetContextCreate(mcxt, "data_embassy opener",
								ALLOCSET_DEFAULT_SIZES);
	opener = MemoryContextAllocZero(cxt, sizeof(DeOpener));
	opener->cxt = cxt;
	opener->cb.func = de_opener_reset_callback;
	opener->cb.arg = opener;
	MemoryContextRegisterResetCallback(cxt, &opener->cb);

	opener->key_cxt = AllocSetContextCreate(cxt, "data_embassy stream key",
											ALLOCSET_SMALL_SIZES);
	opener->scratch_cxt = AllocSetContextCreate(cxt, "data_embassy stream key",
												ALLOCSET_SMALL_SIZES);

	opener->dctx = ZSTD_createDCtx();
	if (opener->dctx == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OUT_OF_MEMORY),
				errmsg("out of memory"),
				errdetail("Could not create a zstd decompression context."));

	memcpy(opener->embassy_priv, embassy_priv, DE_KEY_LEN);
	memcpy(opener->register_pub, register_pub, DE_KEY_LEN);
	de_x25519_public(embassy_priv, opener->embassy_pub);
	de_x25519_dh(embassy_priv, register_pub, opener->static_dh);
	opener->verify_key = de_sign_key_create(cxt, register_sign_pub, false);
	opener->check_session = (session_priv != NULL);
	if (session_priv != NULL)
	{
		DeKeyWork  *work = &opener->work;

		de_x25519_public(session_priv, opener->session);
		de_x25519_dh(session_priv, register_pub, work->dh_session);
		de_frame_derive_mac_key(work, opener->session, opener->embassy_pub,
								register_pub, kind, opener->mac_key);
		de_secure_zero(work, sizeof(DeKeyWork));
	}

	opener->kind = kind;
	opener->require_first = require_first;
	opener->expect_sysid = expect_sysid;
	opener->expect_dboid = expect_dboid;
	opener->in_stream = false;

	initStringInfo(&opener->body);

	return opener;
}

/* Raise the "another register" error. */
static void
de_opener_foreign(const DeFrameHeader *hdr, uint64 sysid, Oid dboid)
{
	if (sysid != 0 && hdr->sysid != sysid)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("frame is from another register"),
				errdetail("Frame %llu comes from the cluster with system identifier %llu, expected %llu.",
						  (unsigned long long) hdr->seq,
						  (unsigned long long) hdr->sysid,
						  (unsigned long long) sysid));
	ereport(ERROR,
			errcode(ERRCODE_PROTOCOL_VIOLATION),
			errmsg("frame is from another register"),
			errdetail("Frame %llu comes from the database with OID %u, expected %u.",
					  (unsigned long long) hdr->seq, hdr->dboid, dboid));
}

/*
 * de_opener_check_header
 *		Every check that needs no key, in the order frame.h gives.
 */
static void
de_opener_check_header(DeOpener *opener, const DeFrameHeader *hdr, size_t len)
{
	unsigned long long seq = (unsigned long long) hdr->seq;
	size_t		trailer = DE_FRAME_TRAILER_LEN(hdr->flags);

	/* length of the whole frame (magic, version: de_frame_peek_header) */
	if (hdr->flags & ~DE_FRAME_FLAGS_KNOWN)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("frame %llu is malformed", seq),
				errdetail("Its flags 0x%04x include unknown bits.",
						  (unsigned int) hdr->flags));
	if (hdr->sealed_len < DE_TAG_LEN)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("frame %llu is malformed", seq),
				errdetail("Its sealed body of %u bytes is shorter than an authentication tag.",
						  hdr->sealed_len));
	if (len - DE_FRAME_HEADER_SIZE < (size_t) hdr->sealed_len + trailer)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("frame is truncated"),
				errdetail("Frame %llu announces a sealed body of %u bytes and %zu bytes of MAC and signature, but only %zu bytes follow its header.",
						  seq, hdr->sealed_len, trailer,
						  len - DE_FRAME_HEADER_SIZE));
	if (len - DE_FRAME_HEADER_SIZE > (size_t) hdr->sealed_len + trailer)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("frame %llu is malformed", seq),
				errdetail("It announces a sealed body of %u bytes and %zu bytes of MAC and signature, but %zu bytes follow its header.",
						  hdr->sealed_len, trailer,
						  len - DE_FRAME_HEADER_SIZE));

	/* kind */
	if (hdr->kind != DE_FRAME_KIND_STREAM && hdr->kind != DE_FRAME_KIND_COPY)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("frame %llu is malformed", seq),
				errdetail("Its kind byte %d is unknown.", (int) (uint8) hdr->kind));
	if (hdr->kind != opener->kind)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("frame belongs to another stream"),
				(hdr->kind == DE_FRAME_KIND_COPY) ?
				errdetail("Frame %llu belongs to an initial copy, but a change stream was expected.",
						  seq) :
				errdetail("Frame %llu belongs to a change stream, but an initial copy was expected.",
						  seq));

	/* register identity */
	if ((opener->expect_sysid != 0 && hdr->sysid != opener->expect_sysid) ||
		(opener->expect_dboid != InvalidOid &&
		 hdr->dboid != opener->expect_dboid))
		de_opener_foreign(hdr, opener->expect_sysid, opener->expect_dboid);
	if (opener->in_stream &&
		(hdr->sysid != opener->sysid || hdr->dboid != opener->dboid))
		de_opener_foreign(hdr, opener->sysid, opener->dboid);

	/* session: a frame of another connection, recorded and replayed */
	if (opener->check_session &&
		memcmp(hdr->session, opener->session, DE_SESSION_LEN) != 0)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("frame belongs to another session"),
				errdetail("Frame %llu was sealed for another connection than this one (a recorded frame sent again, or the session key changed on its way to the register).",
						  seq));

	/* stream */
	if (opener->in_stream &&
		memcmp(hdr->eph_pub, opener->eph_pub, DE_KEY_LEN) != 0)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("frame belongs to another stream"),
				errdetail("Frame %llu carries a different stream key than the frames before it.",
						  seq));

	/* sequence */
	if (opener->in_stream)
	{
		if (hdr->seq < opener->next_seq)
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("frame sequence number %llu is out of order", seq),
					errdetail("Expected frame %llu; frame %llu was received before (a repeated or reordered frame).",
							  (unsigned long long) opener->next_seq, seq));
		if (hdr->seq > opener->next_seq)
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("frame sequence number %llu is out of order", seq),
					errdetail("Expected frame %llu; the frames in between are missing (skipped or reordered frames).",
							  (unsigned long long) opener->next_seq));
	}
	else if (hdr->seq == 0)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("frame %llu is malformed", seq),
				errdetail("Frame sequence numbers start at 1."));
	else if (opener->require_first && hdr->seq != 1)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("frame sequence number %llu is out of order", seq),
				errdetail("Expected frame 1, the first frame of a stream."));

	/* chain */
	if (opener->in_stream)
	{
		if (memcmp(hdr->prev_hash, opener->prev_hash, DE_HASH_LEN) != 0)
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("frame %llu breaks the hash chain", seq),
					errdetail("Its hash of the previous frame does not match frame %llu as received.",
							  seq - 1));
	}
	else if (hdr->seq == 1 &&
			 memcmp(hdr->prev_hash, de_zero_hash, DE_HASH_LEN) != 0)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("frame %llu breaks the hash chain", seq),
				errdetail("The first frame of a stream must not refer to a previous frame."));
}

/*
 * de_opener_stream_dh
 *		DH(embassy, ephemeral) for a stream's first frame, into work.dh_eph.
 *
 * The ephemeral key comes from a frame not yet authenticated; a point of
 * small order is a forged frame, reported as such rather than as a bad
 * argument.  Any other failure is passed on unchanged.
 */
static void
de_opener_stream_dh(DeOpener *opener, const DeFrameHeader *hdr)
{
	if (!de_frame_try_dh(opener->embassy_priv, hdr->eph_pub,
						 opener->work.dh_eph))
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("could not authenticate frame %llu",
					   (unsigned long long) hdr->seq),
				errdetail("Its stream key is not a usable X25519 public key."));
}

/*
 * de_opener_open
 *		Check, authenticate and decompress one frame into "plain".
 */
void
de_opener_open(DeOpener *opener, const char *frame, size_t len,
			   DeFrameHeader *hdr, StringInfo plain)
{
	DeFrameHeader h;
	unsigned long long seq;
	DeAead	   *aead;
	uint8		nonce_base[DE_NONCE_LEN];
	uint8		nonce[DE_NONCE_LEN];
	uint8		hash[DE_HASH_LEN];
	uint8		mac[DE_MAC_LEN];
	uint8		sigmsg[DE_FRAME_SIG_MSG_LEN];
	size_t		clen;
	size_t		hashed_len;
	const uint8 *cbody;

	if (opener->dctx == NULL)
		elog(ERROR, "frame opener used after it was freed");

	resetStringInfo(plain);
	MemoryContextReset(opener->scratch_cxt);

	de_frame_peek_header(frame, len, &h);
	de_opener_check_header(opener, &h, len);
	seq = (unsigned long long) h.seq;

	/*
	 * The session MAC, which only the register and the holder of the
	 * session's private key can make, then the register's signature where the
	 * frame carries one.  Both cover the header and the sealed body.
	 */
	hashed_len = DE_FRAME_HEADER_SIZE + (size_t) h.sealed_len;
	de_sha256(frame, hashed_len, hash);
	if (opener->check_session)
	{
		de_frame_mac(opener->mac_key, hash, mac);
		if (!de_equal_secret(mac, frame + hashed_len, DE_MAC_LEN))
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("could not authenticate frame %llu", seq),
					errdetail("Its session MAC does not verify: the frame was altered, or it was not sealed by this register for this session."));
	}
	if (h.flags & DE_FRAME_SIGNED)
	{
		de_frame_sig_msg(hash, sigmsg);
		if (!de_verify(opener->verify_key, sigmsg, sizeof(sigmsg),
					   (const uint8 *) frame + hashed_len + DE_MAC_LEN))
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("could not verify the signature of frame %llu",
						   seq),
					errdetail("The frame was altered, or it was not signed by this register."));
	}

	/* the stream's key, or a candidate one for a stream's first frame */
	if (opener->in_stream)
	{
		aead = opener->aead;
		memcpy(nonce_base, opener->nonce_base, DE_NONCE_LEN);
	}
	else
	{
		DeKeyWork  *work = &opener->work;

		de_opener_stream_dh(opener, &h);
		memcpy(work->dh_static, opener->static_dh, DE_KEY_LEN);
		de_frame_derive_key(work, h.eph_pub, opener->embassy_pub,
							opener->register_pub, h.sysid, h.dboid, h.kind,
							nonce_base);
		aead = de_aead_create(opener->scratch_cxt, work->key);
		de_secure_zero(work, sizeof(DeKeyWork));
	}

	/* tag */
	clen = h.sealed_len - DE_TAG_LEN;
	enlargeStringInfo(&opener->body, clen);
	de_frame_nonce(nonce_base, h.seq, nonce);
	if (!de_aead_open(aead, nonce,
					  (const uint8 *) frame, DE_FRAME_HEADER_SIZE,
					  (const uint8 *) frame + DE_FRAME_HEADER_SIZE,
					  h.sealed_len, (uint8 *) opener->body.data))
	{
		de_secure_zero(nonce_base, sizeof(nonce_base));
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("could not authenticate frame %llu", seq),
				errdetail("The frame was altered, or it was not sealed by this register for this embassy."));
	}
	cbody = (const uint8 *) opener->body.data;

	/* from here on the header is authentic */
	if (!opener->in_stream && opener->check_start &&
		h.start_lsn > opener->expect_start)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("gap in the stream before frame %llu", seq),
				errdetail("The stream starts at %X/%X, but changes are applied only up to %X/%X.",
						  LSN_FORMAT_ARGS(h.start_lsn),
						  LSN_FORMAT_ARGS(opener->expect_start)),
				errhint("The register's replication slot moved past what this embassy has applied.  Copy the register anew with data_embassy.resync_register()."));
	if (!opener->in_stream && opener->check_start &&
		h.start_lsn < opener->expect_start)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("stream starts before what this embassy has applied"),
				errdetail("The stream starts at %X/%X, but this embassy asked for %X/%X, up to which it has applied changes.",
						  LSN_FORMAT_ARGS(h.start_lsn),
						  LSN_FORMAT_ARGS(opener->expect_start)));
	if (opener->in_stream && h.start_lsn != opener->prev_end_lsn)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("frame %llu does not continue the previous frame", seq),
				errdetail("It starts at %X/%X, but the previous frame ended at %X/%X.",
						  LSN_FORMAT_ARGS(h.start_lsn),
						  LSN_FORMAT_ARGS(opener->prev_end_lsn)));

	/* body lengths, then the body */
	if (h.plain_len > DE_FRAME_MAX_PLAIN)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("frame %llu has an invalid body", seq),
				errdetail("It announces %u plain bytes, more than the limit of %u.",
						  h.plain_len, DE_FRAME_MAX_PLAIN));
	if (h.plain_len == 0)
	{
		if (clen != 0)
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("frame %llu has an invalid body", seq),
					errdetail("It announces an empty body but carries %zu bytes.",
							  clen));
	}
	else
	{
		unsigned long long content_size;
		size_t		zframe_len;
		size_t		dlen;

		if (clen == 0)
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("frame %llu has an invalid body", seq),
					errdetail("It announces %u plain bytes but carries none.",
							  h.plain_len));

		zframe_len = ZSTD_findFrameCompressedSize(cbody, clen);
		if (ZSTD_isError(zframe_len) || zframe_len != clen)
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("frame %llu has an invalid body", seq),
					errdetail("The body is not exactly one zstd frame."));

		content_size = ZSTD_getFrameContentSize(cbody, clen);
		if (content_size == ZSTD_CONTENTSIZE_ERROR ||
			content_size == ZSTD_CONTENTSIZE_UNKNOWN ||
			content_size != h.plain_len)
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("frame %llu has an invalid body", seq),
					errdetail("It announces %u plain bytes, but its compressed body does not say the same.",
							  h.plain_len));

		enlargeStringInfo(plain, h.plain_len);
		dlen = ZSTD_decompressDCtx(opener->dctx, plain->data, h.plain_len,
								   cbody, clen);
		if (ZSTD_isError(dlen) || dlen != h.plain_len)
		{
			resetStringInfo(plain);
			if (ZSTD_isError(dlen))
				ereport(ERROR,
						errcode(ERRCODE_DATA_CORRUPTED),
						errmsg("could not decompress frame %llu", seq),
						errdetail("zstd reported: %s.", ZSTD_getErrorName(dlen)));
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("could not decompress frame %llu", seq),
					errdetail("It announces %u plain bytes, but %zu were decompressed.",
							  h.plain_len, dlen));
		}
		plain->len = (int) h.plain_len;
		plain->data[plain->len] = '\0';
	}

	/* every check passed: commit the new state */
	if (!opener->in_stream)
	{
		MemoryContext tmp = opener->key_cxt;

		/* the candidate key becomes the stream's */
		opener->key_cxt = opener->scratch_cxt;
		opener->scratch_cxt = tmp;
		opener->aead = aead;
		memcpy(opener->nonce_base, nonce_base, DE_NONCE_LEN);
		memcpy(opener->eph_pub, h.eph_pub, DE_KEY_LEN);
		opener->sysid = h.sysid;
		opener->dboid = h.dboid;
		opener->in_stream = true;
	}
	opener->next_seq = h.seq + 1;
	memcpy(opener->prev_hash, hash, DE_HASH_LEN);
	opener->prev_end_lsn = h.end_lsn;
	de_secure_zero(nonce_base, sizeof(nonce_base));

	*hdr = h;
}

/*
 * de_opener_expect_start
 *		The stream's first frame must start exactly at "start" (the position
 *		the receiver asked for, up to which it has applied): a later start is
 *		a gap, an earlier one history sent again.
 */
void
de_opener_expect_start(DeOpener *opener, XLogRecPtr start)
{
	opener->check_start = true;
	opener->expect_start = start;
}

/*
 * de_opener_free
 *		Free the opener and everything it holds now.
 */
void
de_opener_free(DeOpener *opener)
{
	if (opener != NULL)
		MemoryContextDelete(opener->cxt);
}
