/*-------------------------------------------------------------------------
 *
 * stream.c
 *		  Transactions the register streams before they commit.
 *
 * When a register transaction's changes outgrow the walsender's
 * logical_decoding_work_mem (data_embassy.decoding_work_mem), the walsender
 * sends them in blocks while the transaction is still running
 * (STREAM_START ... STREAM_STOP), then STREAM_COMMIT or STREAM_ABORT.
 * Blocks of several transactions, and whole small transactions, may come
 * in between.
 *
 * Every change of a streamed transaction is written to a spool file of its
 * own (a temporary file, removed at the end of the transaction or of the
 * process), in chunks: a 4-byte length, then records as they came.  On
 * top of that, a transaction whose first block arrives while the worker
 * has no other local transaction open is applied as it arrives, in a local
 * transaction kept open across blocks ("direct"); its commit then costs
 * what the last block costs, not the whole transaction.  Anything else
 * that needs the worker (a block of another transaction, a whole
 * transaction, the commit of another one) rolls the direct transaction
 * back: it goes on as a spooled one and is applied from its file at its
 * commit, in one local transaction, as PostgreSQL's own apply worker does
 * with streamed transactions.  Both ways commit with the replication
 * origin advanced to the commit's end, so exactly-once holds as for any
 * transaction.
 *
 * Subtransactions.  The register says which (sub)transaction the changes
 * that follow belong to (SUBXACT), and which subtransaction rolled back.
 * As in PostgreSQL's apply worker, a rollback voids everything from the
 * subtransaction's first change on: in the stream, every change after it
 * belongs to it or to its own subtransactions until it ends, and one that
 * ended by commit can only be rolled back with an ancestor, which started
 * earlier.  So the spool file is truncated at the subtransaction's first
 * chunk, and a direct transaction opens a nested local subtransaction at
 * the first change of every register subtransaction and rolls back to it.
 *
 * Memory.  A chunk holds at most STREAM_CHUNK_BYTES of records (plus one
 * record) before it is written; a replay reads one chunk at a time.
 *
 * IDENTIFICATION
 *		  src/embassy/stream.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "storage/fd.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "embassy/stream.h"

/* A chunk is written once it holds this many bytes of records. */
#define STREAM_CHUNK_BYTES		(256 * 1024)

/* A replay pings the register at least this often. */
#define STREAM_PING_MS			1000

/*
 * Local subtransactions a direct transaction may nest; a register
 * transaction with more (a loop with an exception block in each turn, say)
 * is spooled from then on.  Each level costs memory and, past 64, every
 * snapshot in the embassy pays for the overflowed subtransaction cache.
 */
#define STREAM_MAX_DIRECT_DEPTH	64

/* The first change of one register subtransaction. */
typedef struct StreamSubxact
{
	TransactionId xid;
	off_t		offset;			/* first chunk in the spool file */
	int			depth;			/* local nesting level (direct only) */
} StreamSubxact;

/* One streamed transaction, by top-level xid. */
typedef struct StreamXact
{
	TransactionId xid;			/* hash key */
	File		file;			/* spool file, or -1 before the first chunk */
	off_t		size;			/* bytes written to it */
	uint64		changes;		/* records in it */
	bool		direct;			/* applied as it arrives */
	int			depth;			/* local subtransactions open (direct) */
	TransactionId cur_subxid;	/* (sub)transaction of the next change */
	StreamSubxact *subxacts;	/* in order of first change */
	int			nsubxacts;
	int			maxsubxacts;
} StreamXact;

struct DeStream
{
	MemoryContext cxt;
	DeApply    *apply;
	char	   *register_name;
	DeStreamPing ping;

	HTAB	   *xacts;			/* StreamXact */
	StreamXact *block;			/* transaction of the block being received */
	StreamXact *direct;			/* transaction applied as it arrives */
	bool		no_direct;		/* spool every one (de_stream_set_direct) */
	TransactionId spool_xid;	/* spool this one (de_stream_set_direct) */
	bool		held;			/* spool every one (de_stream_hold_direct) */
	StringInfoData chunk;		/* records not written yet (of "block") */
};

static void stream_init(DeStream *stream);
static StreamXact *stream_lookup(DeStream *stream, TransactionId xid,
								 bool create);
static void stream_forget(DeStream *stream, StreamXact *x);
static void stream_demote(DeStream *stream, const char *why);
static void stream_flush_chunk(DeStream *stream);
static void stream_truncate(DeStream *stream, StreamXact *x, off_t offset);
static void stream_replay(DeStream *stream, StreamXact *x, DeRecord *commit);
static void stream_need_block(DeStream *stream, DeRecord *rec, bool inside);

/*
 * de_stream_create
 *		The streaming state of one register's worker.
 */
DeStream *
de_stream_create(MemoryContext mcxt, DeApply *apply,
				 const char *register_name, DeStreamPing ping)
{
	DeStream   *stream;

	stream = MemoryContextAllocZero(mcxt, sizeof(DeStream));
	stream->cxt = AllocSetContextCreate(mcxt, "data_embassy streamed transactions",
										ALLOCSET_DEFAULT_SIZES);
	stream->apply = apply;
	stream->register_name = MemoryContextStrdup(mcxt, register_name);
	stream->ping = ping;
	stream_init(stream);

	return stream;
}

/* An empty table of transactions and an empty chunk, in stream->cxt. */
static void
stream_init(DeStream *stream)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(TransactionId);
	ctl.entrysize = sizeof(StreamXact);
	ctl.hcxt = stream->cxt;
	stream->xacts = hash_create("data_embassy streamed transactions", 16,
								&ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	stream->chunk.data = MemoryContextAlloc(stream->cxt, 8192);
	stream->chunk.maxlen = 8192;
	stream->chunk.len = 0;
	stream->chunk.cursor = 0;
	stream->block = NULL;
	stream->direct = NULL;
}

/*
 * de_stream_reset
 *		Forget every streamed transaction (a new stream sends them again
 *		from their start).
 */
void
de_stream_reset(DeStream *stream)
{
	HASH_SEQ_STATUS status;
	StreamXact *x;

	hash_seq_init(&status, stream->xacts);
	while ((x = hash_seq_search(&status)) != NULL)
	{
		if (x->file >= 0)
			FileClose(x->file);
		x->file = -1;
	}
	MemoryContextReset(stream->cxt);
	stream_init(stream);
}

/*
 * de_stream_set_direct
 *		See stream.h.  Takes effect from the next transaction on.
 */
void
de_stream_set_direct(DeStream *stream, bool allowed, TransactionId spool_xid)
{
	stream->no_direct = !allowed;
	stream->spool_xid = spool_xid;
}

/*
 * de_stream_hold_direct
 *		See stream.h.  Takes effect from the next transaction on.
 */
void
de_stream_hold_direct(DeStream *stream, bool hold)
{
	stream->held = hold;
}

/*
 * de_stream_record
 *		See stream.h.
 */
bool
de_stream_record(DeStream *stream, DeRecord *rec, const char *raw,
				 size_t rawlen)
{
	StreamXact *x;

	switch (rec->type)
	{
		case DE_REC_STREAM_START:
			stream_need_block(stream, rec, false);
			x = stream_lookup(stream, rec->xid, false);
			if (x != NULL && rec->first)
				ereport(ERROR,
						errcode(ERRCODE_PROTOCOL_VIOLATION),
						errmsg("transaction %u of register \"%s\" is streamed from its start twice",
							   rec->xid, stream->register_name));
			if (stream->direct != NULL && stream->direct != x)
				stream_demote(stream, "a block of another transaction arrived");
			if (x == NULL)
			{
				x = stream_lookup(stream, rec->xid, true);

				/*
				 * A new transaction is applied as it arrives when nothing
				 * else has the worker's local transaction.
				 */
				if (!stream->no_direct && !stream->held &&
					x->xid != stream->spool_xid &&
					!de_apply_in_transaction(stream->apply))
				{
					de_apply_stream_begin(stream->apply, x->xid,
										  InvalidXLogRecPtr, 0);
					x->direct = true;
					stream->direct = x;
					ereport(DEBUG1,
							errmsg_internal("register \"%s\": streamed transaction %u is applied as it arrives",
											stream->register_name, x->xid));
				}
			}
			x->cur_subxid = x->xid;
			stream->block = x;
			return true;

		case DE_REC_SUBXACT:
			stream_need_block(stream, rec, true);
			x = stream->block;
			if (rec->xid != x->cur_subxid)
			{
				int			i;
				bool		known = rec->xid == x->xid;

				for (i = 0; i < x->nsubxacts && !known; i++)
					known = x->subxacts[i].xid == rec->xid;

				if (!known)
				{
					StreamSubxact *sub;

					/* the subtransaction's first change starts a chunk */
					stream_flush_chunk(stream);
					if (x->nsubxacts == x->maxsubxacts)
					{
						x->maxsubxacts = Max(8, x->maxsubxacts * 2);
						x->subxacts = x->subxacts == NULL ?
							MemoryContextAlloc(stream->cxt,
											   sizeof(StreamSubxact) * x->maxsubxacts) :
							repalloc(x->subxacts,
									 sizeof(StreamSubxact) * x->maxsubxacts);
					}
					sub = &x->subxacts[x->nsubxacts++];
					sub->xid = rec->xid;
					sub->offset = x->size;
					sub->depth = 0;
					if (x->direct && x->depth >= STREAM_MAX_DIRECT_DEPTH)
						stream_demote(stream, "too many subtransactions");
					if (x->direct)
					{
						de_apply_subxact_begin(stream->apply);
						sub->depth = ++x->depth;
					}
				}
				x->cur_subxid = rec->xid;
			}
			return true;

		case DE_REC_STREAM_STOP:
			stream_need_block(stream, rec, true);
			stream_flush_chunk(stream);
			stream->block = NULL;
			return true;

		case DE_REC_STREAM_ABORT:
			stream_need_block(stream, rec, false);
			x = stream_lookup(stream, rec->xid, false);
			if (x == NULL)
				return true;	/* nothing of it came here */
			if (rec->subxid == rec->xid)
			{
				if (x->direct)
				{
					de_apply_stream_abort(stream->apply);
					stream->direct = NULL;
				}
				ereport(DEBUG1,
						errmsg_internal("register \"%s\": streamed transaction %u rolled back",
										stream->register_name, x->xid));
				stream_forget(stream, x);
			}
			else
			{
				int			i;

				for (i = 0; i < x->nsubxacts; i++)
				{
					if (x->subxacts[i].xid != rec->subxid)
						continue;
					if (x->direct)
					{
						int			levels = x->depth - x->subxacts[i].depth + 1;

						de_apply_subxact_end(stream->apply, levels, true);
						x->depth -= levels;
					}
					stream_truncate(stream, x, x->subxacts[i].offset);
					x->nsubxacts = i;
					break;
				}
			}
			return true;

		case DE_REC_STREAM_COMMIT:
			stream_need_block(stream, rec, false);
			x = stream_lookup(stream, rec->xid, false);
			if (stream->direct != NULL && stream->direct != x)
				stream_demote(stream, "another transaction committed");
			if (x == NULL)
				return true;	/* nothing of it replicated */
			if (x->direct)
			{
				de_apply_subxact_end(stream->apply, x->depth, false);
				x->depth = 0;
				de_apply_commit(stream->apply, rec->end_lsn, rec->commit_time);
				stream->direct = NULL;
				ereport(DEBUG1,
						errmsg_internal("register \"%s\": streamed transaction %u committed, applied as it arrived (" UINT64_FORMAT " changes)",
										stream->register_name, x->xid,
										x->changes));
			}
			else
				stream_replay(stream, x, rec);
			stream_forget(stream, x);
			return true;

		default:
			break;
	}

	/* a record outside any block: the worker is needed for it */
	if (stream->block == NULL)
	{
		if (stream->direct != NULL)
			stream_demote(stream, "a transaction arrived");
		return false;
	}

	/* a change of a streamed transaction: into its spool file */
	x = stream->block;
	if (rec->type == DE_REC_BEGIN || rec->type == DE_REC_COMMIT ||
		rec->type == DE_REC_COPY_END)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("%s record inside a block of streamed transaction %u of register \"%s\"",
					   de_record_type_name(rec->type), x->xid,
					   stream->register_name));
	if (rawlen > (size_t) (MaxAllocHugeSize - 4 - stream->chunk.len))
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("change record of %zu bytes is too large to spool",
					   rawlen));
	enlargeStringInfo(&stream->chunk, (int) rawlen);
	memcpy(stream->chunk.data + stream->chunk.len, raw, rawlen);
	stream->chunk.len += (int) rawlen;
	x->changes++;
	if (stream->chunk.len >= STREAM_CHUNK_BYTES)
		stream_flush_chunk(stream);

	/* applied now when direct; relation descriptions are for everybody */
	return !(x->direct || rec->type == DE_REC_RELATION);
}

/*
 * stream_need_block
 *		A record that must come inside a block (inside = true) or outside.
 */
static void
stream_need_block(DeStream *stream, DeRecord *rec, bool inside)
{
	if ((stream->block != NULL) == inside)
		return;
	if (inside)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("%s record outside a block of a streamed transaction in the stream of register \"%s\"",
					   de_record_type_name(rec->type), stream->register_name));
	else
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("%s record inside a block of a streamed transaction in the stream of register \"%s\"",
					   de_record_type_name(rec->type), stream->register_name));
}

static StreamXact *
stream_lookup(DeStream *stream, TransactionId xid, bool create)
{
	StreamXact *x;
	bool		found;

	x = hash_search(stream->xacts, &xid, create ? HASH_ENTER : HASH_FIND,
					&found);
	if (create && !found)
	{
		x->file = -1;
		x->size = 0;
		x->changes = 0;
		x->direct = false;
		x->depth = 0;
		x->cur_subxid = xid;
		x->subxacts = NULL;
		x->nsubxacts = 0;
		x->maxsubxacts = 0;
	}
	return x;
}

/* The transaction is over: its spool file goes. */
static void
stream_forget(DeStream *stream, StreamXact *x)
{
	TransactionId xid = x->xid;

	if (stream->block == x)
	{
		stream->block = NULL;
		stream->chunk.len = 0;
	}
	if (x->file >= 0)
		FileClose(x->file);
	if (x->subxacts != NULL)
		pfree(x->subxacts);
	(void) hash_search(stream->xacts, &xid, HASH_REMOVE, NULL);
}

/*
 * stream_demote
 *		The worker is needed for something else: roll back the local
 *		transaction of the direct one, which is then applied from its spool
 *		file at its commit.
 */
static void
stream_demote(DeStream *stream, const char *why)
{
	StreamXact *x = stream->direct;

	if (x == NULL)
		return;
	ereport(DEBUG1,
			errmsg_internal("register \"%s\": streamed transaction %u is spooled from now on: %s",
							stream->register_name, x->xid, why));
	de_apply_stream_abort(stream->apply);
	x->direct = false;
	x->depth = 0;
	stream->direct = NULL;
}

/*
 * stream_write
 *		Write exactly len bytes at offset, or fail.  A short write is an
 *		error like a failed one: FileWrite sets errno to ENOSPC when the
 *		kernel wrote less without saying why (a full disk, or a file size
 *		limit, as the postmaster ignores SIGXFSZ).
 */
static void
stream_write(StreamXact *x, char *buf, int len, off_t offset)
{
	int			rc;

	errno = 0;
	rc = FileWrite(x->file, buf, len, offset, WAIT_EVENT_BUFFILE_WRITE);
	if (rc == len)
		return;
	if (rc >= 0 && errno == 0)
		errno = ENOSPC;
	ereport(ERROR,
			errcode_for_file_access(),
			errmsg("could not write to spool file \"%s\" of streamed transaction %u: %m",
				   FilePathName(x->file), x->xid));
}

/* Write the pending records of the current block as one chunk. */
static void
stream_flush_chunk(DeStream *stream)
{
	StreamXact *x = stream->block;
	uint32		len;

	if (x == NULL || stream->chunk.len == 0)
		return;

	if (x->file < 0)
		x->file = OpenTemporaryFile(true);

	len = pg_hton32((uint32) stream->chunk.len);
	stream_write(x, (char *) &len, sizeof(len), x->size);
	stream_write(x, stream->chunk.data, stream->chunk.len,
				 x->size + sizeof(len));
	x->size += sizeof(len) + stream->chunk.len;
	stream->chunk.len = 0;

	/* a huge record made the buffer grow: give the memory back */
	if (stream->chunk.maxlen > 4 * STREAM_CHUNK_BYTES)
	{
		pfree(stream->chunk.data);
		stream->chunk.data = MemoryContextAlloc(stream->cxt, 8192);
		stream->chunk.maxlen = 8192;
	}
}

/* Void everything of the spool file from offset on. */
static void
stream_truncate(DeStream *stream, StreamXact *x, off_t offset)
{
	if (stream->block == x)
		stream->chunk.len = 0;
	if (x->file < 0 || offset >= x->size)
		return;
	if (FileTruncate(x->file, offset, WAIT_EVENT_BUFFILE_WRITE) < 0)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not truncate spool file \"%s\" of streamed transaction %u: %m",
					   FilePathName(x->file), x->xid));
	x->size = offset;
}

/* Read exactly len bytes at offset. */
static void
stream_read(StreamXact *x, char *buf, uint32 len, off_t offset)
{
	int			rc;

	rc = FileRead(x->file, buf, (int) len, offset, WAIT_EVENT_BUFFILE_READ);
	if (rc < 0)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not read spool file \"%s\" of streamed transaction %u: %m",
					   FilePathName(x->file), x->xid));
	if ((uint32) rc != len)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("could not read spool file \"%s\" of streamed transaction %u: read %d of %u bytes",
					   FilePathName(x->file), x->xid, rc, len));
}

/*
 * stream_replay
 *		Apply a spooled transaction from its file and commit it.
 */
static void
stream_replay(DeStream *stream, StreamXact *x, DeRecord *commit)
{
	MemoryContext chunkcxt;
	MemoryContext oldcxt = CurrentMemoryContext;
	TimestampTz last_ping = GetCurrentTimestamp();
	off_t		offset = 0;

	chunkcxt = AllocSetContextCreate(CurrentMemoryContext,
									 "data_embassy spool chunk",
									 ALLOCSET_DEFAULT_SIZES);

	de_apply_stream_begin(stream->apply, x->xid, commit->lsn,
						  commit->commit_time);

	while (offset < x->size)
	{
		uint32		len;
		char	   *buf;
		DeReader	reader;
		DeRecord	rec;

		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(chunkcxt);

		if (x->size - offset < (off_t) sizeof(len))
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("spool file \"%s\" of streamed transaction %u is truncated",
						   FilePathName(x->file), x->xid));
		stream_read(x, (char *) &len, sizeof(len), offset);
		len = pg_ntoh32(len);
		offset += sizeof(len);
		if ((off_t) len > x->size - offset)
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("spool file \"%s\" of streamed transaction %u is truncated",
						   FilePathName(x->file), x->xid));
		/* the apply wants a byte after the last value, as a frame body has */
		buf = palloc_extended((Size) len + 1, MCXT_ALLOC_HUGE);
		stream_read(x, buf, len, offset);
		buf[len] = '\0';
		offset += len;

		de_reader_init(&reader, buf, len);
		for (;;)
		{
			size_t		start = reader.pos;

			if (!de_read_record(&reader, &rec))
				break;
			de_apply_set_raw(stream->apply, buf + start, reader.pos - start);
			de_apply_record(stream->apply, &rec);
		}
		de_apply_frame_end(stream->apply);

		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(chunkcxt);

		if (stream->ping != NULL &&
			TimestampDifferenceExceeds(last_ping, GetCurrentTimestamp(),
									   STREAM_PING_MS))
		{
			stream->ping();
			last_ping = GetCurrentTimestamp();
		}
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(chunkcxt);

	de_apply_commit(stream->apply, commit->end_lsn, commit->commit_time);
	ereport(DEBUG1,
			errmsg_internal("register \"%s\": streamed transaction %u committed, applied from its spool file (" UINT64_FORMAT " changes, " INT64_FORMAT " bytes)",
							stream->register_name, x->xid, x->changes,
							(int64) x->size));
}
