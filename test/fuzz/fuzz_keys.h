/*-------------------------------------------------------------------------
 *
 * fuzz_keys.h
 *		  The fixed test identities shared by the fuzz target and the seed
 *		  generator, and the layout of a fuzz input.
 *
 * These keys are public test data: they seal the seed corpus so that the
 * fuzzer starts from frames whose tag verifies.  They never appear in a
 * server.
 *
 * A fuzz input is a mode byte, then the mode's data:
 *
 *	 'd' (FUZZ_MODE_DECODE) a frame body, read with de_read_record() to its
 *		 end: the record decoder without any cryptography in the way.
 *	 'o' (FUZZ_MODE_OPEN) a flags byte (FUZZ_OPEN_*), then frames, each a
 *		 4-byte big-endian length and the frame: every frame goes through
 *		 de_opener_open() (one opener for the whole sequence), and every
 *		 body it returns through the record decoder.
 *	 's' (FUZZ_MODE_SEAL) a control byte, a 2-byte tamper offset and a
 *		 tamper mask, then bodies, each a 2-byte big-endian length and the
 *		 body: the harness seals every body with de_sealer_seal(), opens
 *		 the frames again, checks that each opens to exactly its body and
 *		 decodes it; with FUZZ_SEAL_TAMPER it first offers one frame with
 *		 the mask XORed into one byte, which must be refused, then the
 *		 intact frame, which must open.
 *
 * Any other mode byte is reduced to one of these (byte % 3), so that
 * arbitrary data reaches all three.
 *
 * IDENTIFICATION
 *		  test/fuzz/fuzz_keys.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef FUZZ_KEYS_H
#define FUZZ_KEYS_H

#define FUZZ_MODE_DECODE	'd'
#define FUZZ_MODE_OPEN		'o'
#define FUZZ_MODE_SEAL		's'

/* flags of FUZZ_MODE_OPEN */
#define FUZZ_OPEN_COPY			0x01	/* expect an initial-copy stream */
#define FUZZ_OPEN_ANY_FIRST		0x02	/* require_first = false */
#define FUZZ_OPEN_ANY_REGISTER	0x04	/* no expected sysid and dboid */

/* control byte of FUZZ_MODE_SEAL */
#define FUZZ_SEAL_TAMPER		0x01	/* tamper with one frame */
#define FUZZ_SEAL_COPY			0x02	/* seal an initial-copy stream */
/* bits 2..7: which frame to tamper with (modulo the number of frames) */

#define FUZZ_SYSID		UINT64CONST(7364519282736459281)
#define FUZZ_DBOID		((Oid) 16384)

static const uint8 fuzz_embassy_priv[32] = {
	0x45, 0x4d, 0x42, 0x41, 0x53, 0x53, 0x59, 0x2d,
	0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x74, 0x65, 0x73,
	0x74, 0x2d, 0x6b, 0x65, 0x79, 0x2d, 0x6f, 0x6e,
	0x6c, 0x79, 0x2d, 0x30, 0x30, 0x30, 0x30, 0x31
};

static const uint8 fuzz_register_priv[32] = {
	0x52, 0x45, 0x47, 0x49, 0x53, 0x54, 0x45, 0x52,
	0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x74, 0x65,
	0x73, 0x74, 0x2d, 0x6b, 0x65, 0x79, 0x2d, 0x6f,
	0x6e, 0x6c, 0x79, 0x2d, 0x30, 0x30, 0x30, 0x32
};

/* the embassy's key for the session of every stream the harness opens */
static const uint8 fuzz_session_priv[32] = {
	0x53, 0x45, 0x53, 0x53, 0x49, 0x4f, 0x4e, 0x2d,
	0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x74, 0x65, 0x73,
	0x74, 0x2d, 0x6b, 0x65, 0x79, 0x2d, 0x6f, 0x6e,
	0x6c, 0x79, 0x2d, 0x30, 0x30, 0x30, 0x30, 0x33
};

#endif							/* FUZZ_KEYS_H */
