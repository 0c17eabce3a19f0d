/*-------------------------------------------------------------------------
 *
 * gen_seeds.c
 *		  Writes the seed corpus of the frame fuzzer: bodies holding every
 *		  record kind of codec.h, and frames sealed with the fixed test keys
 *		  of fuzz_keys.h by the real sealer (src/frame.c), in the three
 *		  input layouts the target reads.
 *
 * Usage: gen_seeds DIR.  The bodies are written by hand, field by field as
 * codec.h documents them, because the real writers need a server's
 * catalog; the fuzz target checks that each of them decodes cleanly.
 * Stream keys are fresh each run, so the sealed seeds differ from run to
 * run; test/fuzz/run.sh --seeds replaces the committed ones.
 *
 * IDENTIFICATION
 *		  test/fuzz/gen_seeds.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

#include "lib/stringinfo.h"
#include "utils/memutils.h"

#include "seal/codec.h"
#include "seal/crypto.h"
#include "seal/frame.h"

#include "fuzz_keys.h"
#include "pg_shim.h"

#undef fprintf
#undef snprintf

static const char *outdir;
static uint8 embassy_pub[DE_KEY_LEN];
static uint8 register_pub[DE_KEY_LEN];
static uint8 register_sign_pub[DE_KEY_LEN];
static uint8 fuzz_session[DE_SESSION_LEN];	/* of fuzz_session_priv */

/* ---------- writing fields ---------- */

static void
put_u8(StringInfo s, uint8 v)
{
	appendBinaryStringInfo(s, (const char *) &v, 1);
}

static void
put_u16(StringInfo s, uint16 v)
{
	uint8		b[2] = {v >> 8, v & 0xff};

	appendBinaryStringInfo(s, (const char *) b, 2);
}

static void
put_u32(StringInfo s, uint32 v)
{
	uint8		b[4] = {v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff};

	appendBinaryStringInfo(s, (const char *) b, 4);
}

static void
put_u64(StringInfo s, uint64 v)
{
	put_u32(s, (uint32) (v >> 32));
	put_u32(s, (uint32) v);
}

static void
put_str(StringInfo s, const char *str)
{
	put_u32(s, strlen(str));
	appendBinaryStringInfo(s, str, strlen(str));
}

static void
put_value(StringInfo s, char kind, const void *data, uint32 len)
{
	put_u8(s, kind);
	if (kind == DE_COL_BINARY || kind == DE_COL_TEXT)
	{
		put_u32(s, len);
		appendBinaryStringInfo(s, data, len);
	}
}

/* ---------- records ---------- */

static void
rec_begin(StringInfo s, uint64 final_lsn, uint32 xid)
{
	put_u8(s, DE_REC_BEGIN);
	put_u64(s, final_lsn);
	put_u64(s, 822000000000000);	/* 2026, in microseconds since 2000 */
	put_u32(s, xid);
}

static void
rec_commit(StringInfo s, uint64 commit_lsn)
{
	put_u8(s, DE_REC_COMMIT);
	put_u64(s, commit_lsn);
	put_u64(s, commit_lsn + 0x30);
	put_u64(s, 822000000000000);
}

/* people (id int8 key binary, name text binary, born date binary,
 * addr address text) */
static void
rec_relation(StringInfo s, uint32 relid)
{
	put_u8(s, DE_REC_RELATION);
	put_u32(s, relid);
	put_str(s, "public");
	put_str(s, "people");
	put_u8(s, 'd');
	put_u16(s, 4);

	put_u8(s, 1);
	put_str(s, "id");
	put_u32(s, 20);
	put_u32(s, (uint32) -1);
	put_u8(s, DE_COL_BINARY);
	put_str(s, "bigint");

	put_u8(s, 0);
	put_str(s, "name");
	put_u32(s, 25);
	put_u32(s, (uint32) -1);
	put_u8(s, DE_COL_BINARY);
	put_str(s, "text");

	put_u8(s, 0);
	put_str(s, "born");
	put_u32(s, 1082);
	put_u32(s, (uint32) -1);
	put_u8(s, DE_COL_BINARY);
	put_str(s, "date");

	put_u8(s, 0);
	put_str(s, "addr");
	put_u32(s, 16999);
	put_u32(s, (uint32) -1);
	put_u8(s, DE_COL_TEXT);
	put_str(s, "public.address");
}

static void
tuple_full(StringInfo s, uint64 id, const char *name)
{
	uint8		idb[8];
	uint8		born[4] = {0xff, 0xff, 0xd8, 0xf0};

	for (int i = 0; i < 8; i++)
		idb[i] = (uint8) (id >> (56 - 8 * i));
	put_u16(s, 4);
	put_value(s, DE_COL_BINARY, idb, 8);
	if (name != NULL)
		put_value(s, DE_COL_BINARY, name, strlen(name));
	else
		put_value(s, DE_COL_NULL, NULL, 0);
	put_value(s, DE_COL_BINARY, born, 4);
	put_value(s, DE_COL_TEXT, "(\"Main 1\",Tallinn,10111)", 24);
}

static void
tuple_key(StringInfo s, uint64 id)
{
	uint8		idb[8];

	for (int i = 0; i < 8; i++)
		idb[i] = (uint8) (id >> (56 - 8 * i));
	put_u16(s, 4);
	put_value(s, DE_COL_BINARY, idb, 8);
	put_value(s, DE_COL_NULL, NULL, 0);
	put_value(s, DE_COL_NULL, NULL, 0);
	put_value(s, DE_COL_NULL, NULL, 0);
}

static void
tuple_unchanged(StringInfo s, uint64 id)
{
	uint8		idb[8];

	for (int i = 0; i < 8; i++)
		idb[i] = (uint8) (id >> (56 - 8 * i));
	put_u16(s, 4);
	put_value(s, DE_COL_BINARY, idb, 8);
	put_value(s, DE_COL_BINARY, "renamed", 7);
	put_value(s, DE_COL_UNCHANGED, NULL, 0);
	put_value(s, DE_COL_UNCHANGED, NULL, 0);
}

/* A transaction with every kind of change. */
static void
body_changes(StringInfo s)
{
	rec_begin(s, 0x1002000, 750);
	rec_relation(s, 16400);

	put_u8(s, DE_REC_INSERT);
	put_u32(s, 16400);
	tuple_full(s, 1, "Tõnis Mägi 日本");

	put_u8(s, DE_REC_INSERT);
	put_u32(s, 16400);
	tuple_full(s, 2, NULL);

	put_u8(s, DE_REC_UPDATE);
	put_u32(s, 16400);
	put_u8(s, DE_OLD_NONE);
	tuple_unchanged(s, 1);

	put_u8(s, DE_REC_UPDATE);
	put_u32(s, 16400);
	put_u8(s, DE_OLD_KEY);
	tuple_key(s, 2);
	tuple_full(s, 3, "moved");

	put_u8(s, DE_REC_UPDATE);
	put_u32(s, 16400);
	put_u8(s, DE_OLD_ROW);
	tuple_full(s, 3, "moved");
	tuple_full(s, 3, "again");

	put_u8(s, DE_REC_DELETE);
	put_u32(s, 16400);
	put_u8(s, DE_OLD_KEY);
	tuple_key(s, 1);

	put_u8(s, DE_REC_DELETE);
	put_u32(s, 16400);
	put_u8(s, DE_OLD_ROW);
	tuple_full(s, 3, "again");

	put_u8(s, DE_REC_MESSAGE);
	put_u8(s, DE_MESSAGE_TRANSACTIONAL);
	put_u64(s, 0x1001800);
	put_str(s, "audit");
	put_u32(s, 5);
	appendBinaryStringInfo(s, "hello", 5);

	put_u8(s, DE_REC_TRUNCATE);
	put_u8(s, DE_TRUNCATE_CASCADE | DE_TRUNCATE_RESTART);
	put_u32(s, 2);
	put_u32(s, 16400);
	put_u32(s, 16410);

	rec_commit(s, 0x1002000);

	/* a non-transactional message between transactions */
	put_u8(s, DE_REC_MESSAGE);
	put_u8(s, 0);
	put_u64(s, 0x1002100);
	put_str(s, "");
	put_u32(s, 0);
}

/* A transaction streamed before its commit, in blocks. */
static void
body_streamed(StringInfo s)
{
	put_u8(s, DE_REC_STREAM_START);
	put_u32(s, 900);
	put_u8(s, 1);
	rec_relation(s, 16400);
	put_u8(s, DE_REC_INSERT);
	put_u32(s, 16400);
	tuple_full(s, 1, "streamed");
	put_u8(s, DE_REC_SUBXACT);
	put_u32(s, 901);
	put_u8(s, DE_REC_UPDATE);
	put_u32(s, 16400);
	put_u8(s, DE_OLD_KEY);
	tuple_full(s, 1, "key");
	tuple_full(s, 1, "undone");
	put_u8(s, DE_REC_STREAM_STOP);

	put_u8(s, DE_REC_STREAM_ABORT);
	put_u32(s, 900);
	put_u32(s, 901);

	put_u8(s, DE_REC_STREAM_START);
	put_u32(s, 900);
	put_u8(s, 0);
	put_u8(s, DE_REC_DELETE);
	put_u32(s, 16400);
	put_u8(s, DE_OLD_KEY);
	tuple_full(s, 1, "key");
	put_u8(s, DE_REC_STREAM_STOP);

	put_u8(s, DE_REC_STREAM_COMMIT);
	put_u32(s, 900);
	put_u64(s, 0x1003000);
	put_u64(s, 0x1003100);
	put_u64(s, 0);
}

/* An initial-copy body. */
static void
body_copy(StringInfo s)
{
	rec_relation(s, 16400);
	for (int i = 1; i <= 3; i++)
	{
		put_u8(s, DE_REC_INSERT);
		put_u32(s, 16400);
		tuple_full(s, i, "copied");
	}
	put_u8(s, DE_REC_COPY_END);
	put_u64(s, 3);
}

/* ---------- output ---------- */

static void
write_seed(const char *name, StringInfo s)
{
	char		path[1024];
	FILE	   *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, name);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(s->data, 1, s->len, f) != (size_t) s->len ||
		fclose(f) != 0)
	{
		perror(path);
		exit(1);
	}
}

/* Seal bodies into a stream and write them as an 'o' seed. */
static void
seed_frames(const char *name, char kind, uint8 flags, StringInfo *bodies,
			int nbodies)
{
	DeSealer   *sealer;
	StringInfoData frames;
	StringInfoData seed;

	sealer = de_sealer_create(CurrentMemoryContext, fuzz_register_priv,
							  register_pub, embassy_pub, fuzz_session,
							  FUZZ_SYSID, FUZZ_DBOID, 1, kind, 1,
							  (XLogRecPtr) 0x1000000);
	initStringInfo(&seed);
	put_u8(&seed, FUZZ_MODE_OPEN);
	put_u8(&seed, flags);
	for (int i = 0; i < nbodies; i++)
	{
		XLogRecPtr	end = (XLogRecPtr) 0x1001000 + 0x1000 * i;

		initStringInfo(&frames);
		de_sealer_seal(sealer, bodies[i]->data, bodies[i]->len,
					   bodies[i]->len == 0 ? DE_FRAME_POSITION : 0,
					   end, end, end + 0x100, i == nbodies - 1, &frames);
		put_u32(&seed, frames.len);
		appendBinaryStringInfo(&seed, frames.data, frames.len);
		pfree(frames.data);
	}
	de_sealer_free(sealer);
	write_seed(name, &seed);
}

/* Bodies for the harness to seal itself, as an 's' seed. */
static void
seed_seal(const char *name, uint8 ctl, uint16 off, uint8 mask,
		  StringInfo *bodies, int nbodies)
{
	StringInfoData seed;

	initStringInfo(&seed);
	put_u8(&seed, FUZZ_MODE_SEAL);
	put_u8(&seed, ctl);
	put_u16(&seed, off);
	put_u8(&seed, mask);
	for (int i = 0; i < nbodies; i++)
	{
		put_u16(&seed, (uint16) bodies[i]->len);
		appendBinaryStringInfo(&seed, bodies[i]->data, bodies[i]->len);
	}
	write_seed(name, &seed);
}

static void
seed_decode(const char *name, StringInfo body)
{
	StringInfoData seed;

	initStringInfo(&seed);
	put_u8(&seed, FUZZ_MODE_DECODE);
	appendBinaryStringInfo(&seed, body->data, body->len);
	write_seed(name, &seed);
}

int
main(int argc, char **argv)
{
	StringInfo	changes;
	StringInfo	copy;
	StringInfo	streamed;
	StringInfo	empty;
	StringInfo	b[4];

	if (argc != 2)
	{
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	outdir = argv[1];
	shim_init();
	de_x25519_public(fuzz_embassy_priv, embassy_pub);
	de_x25519_public(fuzz_register_priv, register_pub);
	de_x25519_public(fuzz_session_priv, fuzz_session);
	{
		uint8		seed[DE_KEY_LEN];

		de_derive_sign_seed(fuzz_register_priv, seed);
		de_sign_key_public(de_sign_key_create(TopMemoryContext, seed, true),
						   register_sign_pub);
	}

	changes = makeStringInfo();
	body_changes(changes);
	copy = makeStringInfo();
	body_copy(copy);
	empty = makeStringInfo();

	seed_decode("seed-decode-changes", changes);
	seed_decode("seed-decode-copy", copy);
	streamed = makeStringInfo();
	body_streamed(streamed);
	seed_decode("seed-decode-streamed", streamed);

	b[0] = changes;
	b[1] = empty;
	b[2] = changes;
	seed_frames("seed-open-stream", DE_FRAME_KIND_STREAM, 0, b, 3);
	b[0] = empty;
	seed_frames("seed-open-position", DE_FRAME_KIND_STREAM, 0, b, 1);
	b[0] = copy;
	seed_frames("seed-open-copy", DE_FRAME_KIND_COPY, FUZZ_OPEN_COPY, b, 1);
	b[0] = changes;
	b[1] = changes;
	seed_frames("seed-open-any", DE_FRAME_KIND_STREAM,
				FUZZ_OPEN_ANY_FIRST | FUZZ_OPEN_ANY_REGISTER, b, 2);

	b[0] = changes;
	b[1] = empty;
	b[2] = copy;
	seed_seal("seed-seal-plain", 0, 0, 0, b, 3);
	seed_seal("seed-seal-tamper-header", FUZZ_SEAL_TAMPER | (1 << 2), 53, 0x01,
			  b, 3);
	seed_seal("seed-seal-tamper-body", FUZZ_SEAL_TAMPER, 140, 0x80, b, 3);
	b[0] = copy;
	seed_seal("seed-seal-copy", FUZZ_SEAL_COPY, 0, 0, b, 1);

	return 0;
}
