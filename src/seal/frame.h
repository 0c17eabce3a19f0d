/*-------------------------------------------------------------------------
 *
 * frame.h
 *		  Sealed frames: the unit data_embassy sends over the wire.
 *
 * A frame is a fixed header in the clear, the sealed body, the session
 * MAC and, on some frames, the register's signature.  The header is the
 * AES-256-GCM associated data, so none of it can be changed without the
 * tag failing.  All integers are big-endian.
 *
 *	 off len  field
 *	   0   4  magic "DEMB"
 *	   4   1  format version (3)
 *	   5   1  kind: 'S' change stream, 'C' initial-copy stream
 *	   6   2  flags (DE_FRAME_*)
 *	   8   8  register system identifier
 *	  16   4  register database oid
 *	  20   4  timeline: the register's WAL timeline when sealed
 *	  24  32  sender's ephemeral X25519 public key (names the stream)
 *	  56  32  session: the X25519 public key the embassy made for this
 *			  connection (or copy attempt); every frame of the stream or
 *			  copy carries it, so no frame of another connection can be
 *			  passed off in this one
 *	  88   8  sequence number within the stream, from 1
 *	  96   8  start_lsn: end_lsn of the previous frame; for frame 1 the
 *			  position the stream really starts from (see the HELLO record
 *			  in codec.h)
 *	 104   8  end_lsn: decoding position this frame reaches
 *	 112   8  commit_lsn: what a receiver may confirm once it has applied
 *			  and made durable everything up to and including this frame
 *	 120   8  source_lsn: the register's WAL flush position when sealed
 *	 128   8  source_time: the register's clock when sealed (TimestampTz)
 *	 136   4  plain_len: length of the body before compression
 *	 140   4  sealed_len: length of the sealed body (compressed + tag)
 *	 144  32  SHA-256 of the previous frame (header + sealed body), zeros
 *			  for frame 1: the hash chain
 *	 176      sealed body (sealed_len bytes)
 *	 then 32  session MAC: HMAC-SHA256 under the session's MAC key of
 *			  "data_embassy frame v3 mac" || SHA-256(header + sealed body)
 *	 then 64  only with DE_FRAME_SIGNED: Ed25519 signature, by the
 *			  register's signing key, of "data_embassy frame v3 signature"
 *			  || SHA-256(header + sealed body)
 *
 * Keys: per stream the sender makes an ephemeral X25519 pair.  The frame key
 * and nonce base come from HKDF-SHA256 with
 *		ikm  = DH(ephemeral, embassy) || DH(register, embassy)
 *		salt = ephemeral_pub || embassy_pub || register_pub
 *		info = "data_embassy frame v3" || sysid || dboid || kind
 * (HPKE's authenticated mode in spirit): only the embassy can open, and
 * what it keeps (an archive) it can open again with its own key alone.
 * That key alone would let whoever holds the embassy's private key seal
 * frames as the register (key-compromise impersonation: DH(register,
 * embassy) is known to both ends).  So every frame also carries a MAC
 * under a key that needs the session's private key, which exists only in
 * the memory of the embassy process that made it:
 *		ikm  = DH(register, session)
 *		salt = session_pub || embassy_pub || register_pub
 *		info = "data_embassy frame v3 session" || kind
 * Neither the embassy's key nor anything stored at the embassy yields it,
 * and a session key the network swapped yields a MAC the embassy refuses.
 * The MAC costs a hash per frame; the register's Ed25519 signature, which
 * anyone holding the register's public key can check later without any
 * secret (an archive), is made on a stream's first frame, on every frame
 * the sender asks for (heartbeats, a copy's last frame) and at least once
 * a second (DE_SIGN_INTERVAL_MS) of a busy stream; it covers every frame
 * before it through the chain.  The nonce is the nonce base XOR the
 * sequence number, so it never repeats under one key.
 *
  * IDENTIFICATION
 *		  src/seal/frame.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_FRAME_H
#define DE_FRAME_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"

#include "seal/crypto.h"

#define DE_FRAME_MAGIC			"DEMB"
#define DE_FRAME_VERSION		3
#define DE_FRAME_HEADER_SIZE	176
#define DE_SESSION_LEN			DE_KEY_LEN	/* the embassy's session key */
/* most a frame adds to its compressed body */
#define DE_FRAME_OVERHEAD		(DE_FRAME_HEADER_SIZE + DE_TAG_LEN + \
								 DE_MAC_LEN + DE_SIG_LEN)

/* a busy stream is signed at least this often */
#define DE_SIGN_INTERVAL_MS		1000

#define DE_FRAME_KIND_STREAM	'S'
#define DE_FRAME_KIND_COPY		'C'

/* flags */
#define DE_FRAME_TXN_OPEN		0x0001	/* body ends inside a transaction */
#define DE_FRAME_POSITION		0x0002	/* no records: caught up to end_lsn */
#define DE_FRAME_SIGNED			0x0004	/* the register's signature follows */
#define DE_FRAME_FLAGS_KNOWN	0x0007

/* bytes after the sealed body: the MAC, and the signature if any */
#define DE_FRAME_TRAILER_LEN(flags) \
	(DE_MAC_LEN + (((flags) & DE_FRAME_SIGNED) ? DE_SIG_LEN : 0))

/* Upper bound on a body, compressed or not; checked before allocating. */
#define DE_FRAME_MAX_PLAIN		((uint32) (MaxAllocSize - 1))

typedef struct DeFrameHeader
{
	uint8		version;
	char		kind;
	uint16		flags;
	uint64		sysid;
	Oid			dboid;
	TimeLineID	timeline;
	uint8		eph_pub[DE_KEY_LEN];
	uint8		session[DE_SESSION_LEN];
	uint64		seq;
	XLogRecPtr	start_lsn;
	XLogRecPtr	end_lsn;
	XLogRecPtr	commit_lsn;
	XLogRecPtr	source_lsn;
	TimestampTz source_time;
	uint32		plain_len;
	uint32		sealed_len;
	uint8		prev_hash[DE_HASH_LEN];
} DeFrameHeader;

/*
 * Sending side: one per stream (one decoding session, or one initial copy).
 * Holds the ephemeral key, the AEAD and zstd contexts (reused for every
 * frame), the session's MAC key, the signing key, the sequence counter and
 * the chain hash.  register_priv is the register's X25519 private key (its
 * Ed25519 key is derived from it, see keys.h); session is the public key
 * the embassy made for this connection (DE_SESSION_LEN bytes; one of small
 * order raises ERRCODE_INVALID_PARAMETER_VALUE); timeline the register's
 * current timeline.
 */
typedef struct DeSealer DeSealer;

extern DeSealer *de_sealer_create(MemoryContext mcxt,
								  const uint8 *register_priv,
								  const uint8 *register_pub,
								  const uint8 *embassy_pub,
								  const uint8 *session,
								  uint64 sysid, Oid dboid, TimeLineID timeline,
								  char kind, int zstd_level,
								  XLogRecPtr start_lsn);

/*
 * Compress and seal one body and append the whole frame (header, sealed
 * body, MAC, signature if any) to "out".  plain_len may be 0 (a position
 * frame).  "sign" asks for the register's signature on this frame (the
 * first frame, and one DE_SIGN_INTERVAL_MS after the last signed one, are
 * signed anyway).  Advances the sequence number, the chain and start_lsn
 * (to end_lsn).
 */
extern void de_sealer_seal(DeSealer *sealer, const char *plain,
						   uint32 plain_len, uint16 flags,
						   XLogRecPtr end_lsn, XLogRecPtr commit_lsn,
						   XLogRecPtr source_lsn, bool sign, StringInfo out);

extern void de_sealer_free(DeSealer *sealer);

/*
 * Receiving side: one per stream.  de_opener_open() checks, in this order,
 * length, magic and version, flags, kind, register identity (when expected
 * values were given), session, stream (ephemeral key), sequence, chain,
 * session MAC, signature (on a frame that carries one), tag, the start of
 * the stream (when a limit was given) or the continuity of LSNs, and the
 * body's lengths, then decompresses.  On any failure it raises ERROR with
 *		ERRCODE_DATA_CORRUPTED		malformed, truncated, bad tag, bad chain,
 *									bad MAC, bad signature
 *		ERRCODE_PROTOCOL_VIOLATION	another format version, sequence skipped
 *									or repeated, frame from another stream,
 *									session or register, a stream that
 *									starts past the limit (a gap)
 * and leaves the opener's state untouched, so nothing from a bad frame is
 * ever returned and the stream can only continue with the right frame.
 */
typedef struct DeOpener DeOpener;

/*
 * require_first: the first frame must carry sequence 1 (a receiver reading a
 * live stream); false lets a debugging tool start anywhere.  expect_sysid
 * and expect_dboid of 0 accept any register identity.  session_priv is the
 * private half of the session key the receiver gave this connection: every
 * frame must carry its public half and a MAC under the session's key.
 * NULL (a debugging tool, which has no session) accepts any session and
 * checks no MAC, so it authenticates frames only by their tag, which the
 * embassy's key could also have made, and by the signatures they carry.
 * The register's Ed25519 key checks every signature.
 */
extern DeOpener *de_opener_create(MemoryContext mcxt,
								  const uint8 *embassy_priv,
								  const uint8 *register_pub,
								  const uint8 *register_sign_pub,
								  const uint8 *session_priv,
								  char kind, bool require_first,
								  uint64 expect_sysid, Oid expect_dboid);

/*
 * Refuse a stream whose first frame does not start exactly at "start" (the
 * position the receiver asked for and has applied up to): past it the
 * frames in between are missing, before it history is sent again.  Call
 * before the first frame is opened.
 */
extern void de_opener_expect_start(DeOpener *opener, XLogRecPtr start);

/* Open one frame; the body is left in "plain" (reset first). */
extern void de_opener_open(DeOpener *opener, const char *frame, size_t len,
						   DeFrameHeader *hdr, StringInfo plain);

extern void de_opener_free(DeOpener *opener);

/*
 * Parse only the clear header (no authentication); for diagnostics and for
 * a receiver that wants the LSNs of a frame it is about to open.  Raises
 * ERRCODE_DATA_CORRUPTED when the frame is too short or not a frame.
 */
extern void de_frame_peek_header(const char *frame, size_t len,
								 DeFrameHeader *hdr);

#endif							/* DE_FRAME_H */
