/*-------------------------------------------------------------------------
 *
 * fuzz_frame.c
 *		  libFuzzer target for the frame opener (src/frame.c, src/crypto.c)
 *		  and the record decoder (src/codec.c).
 *
 * The input layout is in fuzz_keys.h.  Besides the sanitizers' findings,
 * the target aborts (so the fuzzer keeps the input as a crash) when:
 *
 *	- an ERROR carries an errcode the contract does not allow: the opener
 *	  may raise only ERRCODE_DATA_CORRUPTED and ERRCODE_PROTOCOL_VIOLATION
 *	  (frame.h), the decoder only ERRCODE_DATA_CORRUPTED (codec.h);
 *	- the opener accepts a frame whose header does not continue the stream
 *	  (sequence, stream key) or returns a body of another length than the
 *	  header announces;
 *	- in seal mode, a frame does not open to exactly the body sealed in it,
 *	  or a frame with one byte changed opens at all, or the intact frame
 *	  does not open right after its tampered copy was refused (a refusal
 *	  must leave the opener untouched);
 *	- the decoder's position passes the end of the body.
 *
 * Every iteration runs in its own memory context, deleted at the end, so
 * LeakSanitizer reports anything the code under test leaks outside
 * palloc (OpenSSL and zstd handles).
 *
 * IDENTIFICATION
 *		  test/fuzz/fuzz_frame.c
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

/* at most this many frames or bodies per input, to bound an iteration */
#define FUZZ_MAX_FRAMES		64

static uint8 embassy_pub[DE_KEY_LEN];
static uint8 register_pub[DE_KEY_LEN];
static uint8 register_sign_pub[DE_KEY_LEN];
static uint8 fuzz_session[DE_SESSION_LEN];	/* of fuzz_session_priv */

/* which errcodes an operation may raise */
static const int opener_codes[] = {
	ERRCODE_DATA_CORRUPTED, ERRCODE_PROTOCOL_VIOLATION, 0
};
static const int decoder_codes[] = {
	ERRCODE_DATA_CORRUPTED, 0
};

/*
 * Is this errcode allowed?  FUZZ_ALLOW_CODE=<SQLSTATE> in the environment adds
 * one more (for a run that should look past a known deviation).
 */
static bool
code_allowed(int code, const int *allowed)
{
	static int	extra = -1;

	if (extra == -1)
	{
		const char *s = getenv("FUZZ_ALLOW_CODE");

		extra = (s != NULL && strlen(s) == 5) ?
			MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4]) : 0;
	}
	if (extra != 0 && code == extra)
		return true;
	for (; *allowed != 0; allowed++)
		if (code == *allowed)
			return true;
	return false;
}

static void
pg_attribute_noreturn()
fuzz_fail(const char *what)
{
	fprintf(stderr, "fuzz_frame: %s\n", what);
	abort();
}

/*
 * Run fn(arg) with an ERROR handler.  Returns true if it returned, false if
 * it raised an ERROR with an allowed errcode; any other errcode aborts.
 * The function-pointer form keeps every local of the caller out of the
 * sigsetjmp() frame.
 */
static bool
fuzz_try(void (*fn) (void *), void *arg, const int *allowed, const char *what)
{
	sigjmp_buf	local;
	sigjmp_buf *volatile save = PG_exception_stack;
	MemoryContext volatile cxt = CurrentMemoryContext;

	if (sigsetjmp(local, 0) == 0)
	{
		PG_exception_stack = &local;
		fn(arg);
		PG_exception_stack = save;
		return true;
	}
	PG_exception_stack = save;
	MemoryContextSwitchTo(cxt);
	if (!code_allowed(shim_error_code(), allowed))
	{
		fprintf(stderr,
				"fuzz_frame: %s raised SQLSTATE %s, which its contract does not allow: %s (%s) at %s\n",
				what, unpack_sql_state(shim_error_code()),
				shim_error_message(), shim_error_detail(),
				shim_error_location());
		abort();
	}
	if (getenv("SHIM_VERBOSE"))
		fprintf(stderr, "fuzz_frame: %s refused: %s (%s)\n", what,
				shim_error_message(), shim_error_detail());
	FlushErrorState();
	return false;
}

/* ---------- decoding ---------- */

typedef struct DecodeArg
{
	char	   *data;
	size_t		len;
	int			records;
	unsigned	checksum;
} DecodeArg;

/* Touch every byte a value points at, so ASan checks the pointers. */
static unsigned
touch_tuple(const DeTuple *tup)
{
	unsigned	sum = 0;

	for (int i = 0; i < tup->natts; i++)
	{
		const DeValue *v = &tup->values[i];

		if (v->kind == DE_COL_BINARY || v->kind == DE_COL_TEXT)
			for (uint32 j = 0; j < v->len; j++)
				sum += (uint8) v->data[j];
		else if (v->kind != DE_COL_NULL && v->kind != DE_COL_UNCHANGED)
			fuzz_fail("decoder returned a value of an unknown kind");
	}
	return sum;
}

static void
decode_body(void *arg)
{
	DecodeArg  *d = (DecodeArg *) arg;
	DeReader	reader;
	DeRecord	rec;
	unsigned	sum = 0;

	de_reader_init(&reader, d->data, d->len);
	while (de_read_record(&reader, &rec))
	{
		if (reader.pos > reader.len)
			fuzz_fail("decoder read past the end of the body");
		d->records++;
		switch (rec.type)
		{
			case DE_REC_RELATION:
				sum += strlen(rec.nspname) + strlen(rec.relname);
				for (int i = 0; i < rec.natts; i++)
					sum += strlen(rec.atts[i].name) +
						strlen(rec.atts[i].typname);
				break;
			case DE_REC_INSERT:
				sum += touch_tuple(&rec.newtup);
				break;
			case DE_REC_UPDATE:
				if (rec.oldkind != DE_OLD_NONE)
					sum += touch_tuple(&rec.oldtup);
				sum += touch_tuple(&rec.newtup);
				break;
			case DE_REC_DELETE:
				sum += touch_tuple(&rec.oldtup);
				break;
			case DE_REC_TRUNCATE:
				for (int i = 0; i < rec.nrelids; i++)
					sum += rec.relids[i];
				break;
			case DE_REC_MESSAGE:
				sum += strlen(rec.prefix);
				for (uint32 j = 0; j < rec.content_len; j++)
					sum += (uint8) rec.content[j];
				break;
			case DE_REC_SEQUENCES:
				for (int i = 0; i < rec.nsequences; i++)
					sum += strlen(rec.seq_nspnames[i]) +
						strlen(rec.seq_relnames[i]) +
						(uint64) rec.seq_values[i];
				break;
			case DE_REC_BEGIN:
			case DE_REC_COMMIT:
			case DE_REC_COPY_END:
			case DE_REC_STREAM_STOP:
				break;
			case DE_REC_STREAM_START:
			case DE_REC_SUBXACT:
			case DE_REC_STREAM_COMMIT:
				sum += rec.xid;
				break;
			case DE_REC_STREAM_ABORT:
				sum += rec.xid + rec.subxid;
				break;
			case DE_REC_HELLO:
				sum += strlen(rec.slot) + rec.lsn + rec.end_lsn + rec.confirmed_lsn +
					rec.history_lsn + (uint8) rec.history_status + rec.crc;
				break;
			case DE_REC_HEARTBEAT:
				for (int i = 0; i < DE_HEARTBEAT_NONCE_LEN; i++)
					sum += rec.nonce[i];
				sum += rec.lsn + rec.end_lsn;
				break;
			default:
				fuzz_fail("decoder returned a record of an unknown type");
		}
		(void) de_record_type_name(rec.type);
	}
	if (reader.pos != reader.len)
		fuzz_fail("decoder stopped before the end of the body");
	/* keep the reads above from being optimised away */
	d->checksum = sum;
}

/* Decode a body held in exactly-sized palloc'd memory. */
static void
fuzz_decode(const uint8 *data, size_t len)
{
	DecodeArg	d;

	d.data = palloc(Max(len, 1));
	memcpy(d.data, data, len);
	d.len = len;
	d.records = 0;
	fuzz_try(decode_body, &d, decoder_codes, "de_read_record");
	pfree(d.data);
}

/* ---------- opening ---------- */

typedef struct OpenArg
{
	DeOpener   *opener;
	const char *frame;
	size_t		len;
	DeFrameHeader hdr;
	StringInfo	plain;
} OpenArg;

static void
open_frame(void *arg)
{
	OpenArg    *o = (OpenArg *) arg;

	de_opener_open(o->opener, o->frame, o->len, &o->hdr, o->plain);
}

typedef struct CreateArg
{
	DeOpener   *opener;
	char		kind;
	bool		require_first;
	uint64		sysid;
	Oid			dboid;
} CreateArg;

static void
create_opener(void *arg)
{
	CreateArg  *c = (CreateArg *) arg;

	c->opener = de_opener_create(CurrentMemoryContext, fuzz_embassy_priv,
								 register_pub, register_sign_pub,
								 fuzz_session_priv,
								 c->kind, c->require_first,
								 c->sysid, c->dboid);
}

/* Check what an opened frame must satisfy; "last_seq" 0 before the first. */
static void
check_opened(const OpenArg *o, uint64 last_seq, const uint8 *stream_key)
{
	if ((uint32) o->plain->len != o->hdr.plain_len)
		fuzz_fail("opened body length differs from the header's plain_len");
	if (last_seq != 0 && o->hdr.seq != last_seq + 1)
		fuzz_fail("opener accepted a frame out of sequence");
	if (stream_key != NULL &&
		memcmp(stream_key, o->hdr.eph_pub, DE_KEY_LEN) != 0)
		fuzz_fail("opener accepted a frame of another stream");
	if (o->hdr.sealed_len + DE_FRAME_HEADER_SIZE +
		DE_FRAME_TRAILER_LEN(o->hdr.flags) != o->len)
		fuzz_fail("opener accepted a frame whose length disagrees with its header");
}

static void
fuzz_open(const uint8 *data, size_t len)
{
	CreateArg	c;
	OpenArg		o;
	uint8		flags;
	uint64		last_seq = 0;
	uint8		stream_key[DE_KEY_LEN];
	bool		have_stream = false;

	if (len < 1)
		return;
	flags = data[0];
	data++;
	len--;

	c.kind = (flags & FUZZ_OPEN_COPY) ? DE_FRAME_KIND_COPY : DE_FRAME_KIND_STREAM;
	c.require_first = (flags & FUZZ_OPEN_ANY_FIRST) == 0;
	c.sysid = (flags & FUZZ_OPEN_ANY_REGISTER) ? 0 : FUZZ_SYSID;
	c.dboid = (flags & FUZZ_OPEN_ANY_REGISTER) ? InvalidOid : FUZZ_DBOID;
	if (!fuzz_try(create_opener, &c, opener_codes, "de_opener_create"))
		fuzz_fail("could not create an opener with the test keys");

	o.opener = c.opener;
	o.plain = makeStringInfo();
	for (int n = 0; n < FUZZ_MAX_FRAMES && len >= 4; n++)
	{
		size_t		flen = ((size_t) data[0] << 24) | ((size_t) data[1] << 16) |
			((size_t) data[2] << 8) | data[3];
		char	   *frame;

		data += 4;
		len -= 4;
		flen = Min(flen, len);

		/* exactly sized, so that ASan sees any read past the frame */
		frame = palloc(Max(flen, 1));
		memcpy(frame, data, flen);
		data += flen;
		len -= flen;

		o.frame = frame;
		o.len = flen;
		if (fuzz_try(open_frame, &o, opener_codes, "de_opener_open"))
		{
			check_opened(&o, last_seq, have_stream ? stream_key : NULL);
			last_seq = o.hdr.seq;
			memcpy(stream_key, o.hdr.eph_pub, DE_KEY_LEN);
			have_stream = true;
			fuzz_decode((const uint8 *) o.plain->data, o.plain->len);
		}
		pfree(frame);
	}
	de_opener_free(o.opener);
}

/* ---------- sealing, then opening ---------- */

typedef struct SealArg
{
	DeSealer   *sealer;
	char		kind;
	const char *body;
	uint32		len;
	uint16		flags;
	bool		sign;			/* ask for a signature */
	XLogRecPtr	end_lsn;
	StringInfo	out;
} SealArg;

static void
create_sealer(void *arg)
{
	SealArg    *s = (SealArg *) arg;

	s->sealer = de_sealer_create(CurrentMemoryContext, fuzz_register_priv,
								 register_pub, embassy_pub, fuzz_session,
								 FUZZ_SYSID, FUZZ_DBOID, 1, s->kind, 1,
								 (XLogRecPtr) 0x1000000);
}

static void
seal_body(void *arg)
{
	SealArg    *s = (SealArg *) arg;

	de_sealer_seal(s->sealer, s->body, s->len, s->flags, s->end_lsn,
				   s->end_lsn, s->end_lsn + 0x100, s->sign, s->out);
}

static void
fuzz_seal(const uint8 *data, size_t len)
{
	static const int no_codes[] = {0};
	uint8		ctl;
	uint16		tamper_off;
	uint8		tamper_xor;
	int			nframes = 0;
	const char *bodies[FUZZ_MAX_FRAMES];
	uint32		body_len[FUZZ_MAX_FRAMES];
	size_t		frame_start[FUZZ_MAX_FRAMES + 1];
	SealArg		s;
	CreateArg	c;
	OpenArg		o;
	int			victim = -1;

	if (len < 4)
		return;
	ctl = data[0];
	tamper_off = (uint16) ((data[1] << 8) | data[2]);
	tamper_xor = data[3];
	data += 4;
	len -= 4;

	while (nframes < FUZZ_MAX_FRAMES && len >= 2)
	{
		size_t		blen = (size_t) ((data[0] << 8) | data[1]);

		data += 2;
		len -= 2;
		blen = Min(blen, len);
		bodies[nframes] = (const char *) data;
		body_len[nframes] = (uint32) blen;
		nframes++;
		data += blen;
		len -= blen;
	}
	if (nframes == 0)
		return;

	/* seal every body into one buffer of consecutive frames */
	s.kind = (ctl & FUZZ_SEAL_COPY) ? DE_FRAME_KIND_COPY : DE_FRAME_KIND_STREAM;
	if (!fuzz_try(create_sealer, &s, no_codes, "de_sealer_create"))
		fuzz_fail("could not create a sealer with the test keys");
	s.out = makeStringInfo();
	for (int i = 0; i < nframes; i++)
	{
		frame_start[i] = s.out->len;
		s.body = bodies[i];
		s.len = body_len[i];
		s.flags = (s.len == 0) ? DE_FRAME_POSITION : 0;
		s.sign = (i % 3) == 2;	/* some signed, most not */
		s.end_lsn = (XLogRecPtr) 0x1000000 + 0x1000 * (i + 1);
		if (!fuzz_try(seal_body, &s, no_codes, "de_sealer_seal"))
			fuzz_fail("could not seal a body");
	}
	frame_start[nframes] = s.out->len;
	de_sealer_free(s.sealer);

	c.kind = s.kind;
	c.require_first = true;
	c.sysid = FUZZ_SYSID;
	c.dboid = FUZZ_DBOID;
	if (!fuzz_try(create_opener, &c, opener_codes, "de_opener_create"))
		fuzz_fail("could not create an opener with the test keys");
	o.opener = c.opener;
	o.plain = makeStringInfo();

	if ((ctl & FUZZ_SEAL_TAMPER) && tamper_xor != 0)
		victim = (ctl >> 2) % nframes;

	for (int i = 0; i < nframes; i++)
	{
		size_t		flen = frame_start[i + 1] - frame_start[i];
		char	   *frame = palloc(flen);

		memcpy(frame, s.out->data + frame_start[i], flen);
		o.frame = frame;
		o.len = flen;

		if (i == victim)
		{
			/* one byte changed: refused, and the opener left as it was */
			frame[tamper_off % flen] ^= tamper_xor;
			if (fuzz_try(open_frame, &o, opener_codes, "de_opener_open"))
				fuzz_fail("opener accepted a frame with a byte changed");
			frame[tamper_off % flen] ^= tamper_xor;
		}

		if (!fuzz_try(open_frame, &o, opener_codes, "de_opener_open"))
		{
			fprintf(stderr, "fuzz_frame: frame %d of %d refused\n",
					i + 1, nframes);
			fuzz_fail(i == victim ?
					  "after refusing a tampered frame the opener refused the intact one" :
					  "opener refused an intact frame that continues the stream");
		}
		if ((uint32) o.plain->len != body_len[i] ||
			memcmp(o.plain->data, bodies[i], body_len[i]) != 0)
			fuzz_fail("frame opened to something else than its body");
		if (o.hdr.seq != (uint64) i + 1)
			fuzz_fail("opened frame carries the wrong sequence number");
		fuzz_decode((const uint8 *) o.plain->data, o.plain->len);
		pfree(frame);
	}
	de_opener_free(o.opener);
}

/* ---------- libFuzzer entry points ---------- */

int			LLVMFuzzerInitialize(int *argc, char ***argv);
int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
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
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	MemoryContext cxt;
	MemoryContext old;
	uint8		mode;

	if (size < 1)
		return 0;
	mode = data[0];
	if (mode != FUZZ_MODE_DECODE && mode != FUZZ_MODE_OPEN &&
		mode != FUZZ_MODE_SEAL)
		mode = (mode % 3 == 0) ? FUZZ_MODE_DECODE :
			(mode % 3 == 1) ? FUZZ_MODE_OPEN : FUZZ_MODE_SEAL;

	cxt = AllocSetContextCreate(TopMemoryContext, "fuzz iteration",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);

	switch (mode)
	{
		case FUZZ_MODE_DECODE:
			fuzz_decode(data + 1, size - 1);
			break;
		case FUZZ_MODE_OPEN:
			fuzz_open(data + 1, size - 1);
			break;
		case FUZZ_MODE_SEAL:
			fuzz_seal(data + 1, size - 1);
			break;
	}

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return 0;
}
