/*-------------------------------------------------------------------------
 *
 * codec.h
 *		  The change records inside a frame body: writers for the register
 *		  side, one reader for the embassy side and for inspection.
 *
 * A body is a sequence of records, each a type byte then its fields; all
 * integers big-endian, strings as a 4-byte length then the bytes (no NUL).
 *
 *	'B' BEGIN		final_lsn u64, commit_time i64, xid u32
 *	'C' COMMIT		commit_lsn u64, end_lsn u64, commit_time i64
 *	'R' RELATION	relid u32, nspname str, relname str, replident u8, natts u16,
 *					natts x { flags u8 (1 = key column), name str, typoid u32,
 *							  typmod i32, format u8 ('b' binary, 't' text),
 *							  typename str (qualified, for messages) }
 *	'I' INSERT		relid u32, new tuple
 *	'U' UPDATE		relid u32, oldkind u8 ('K' key, 'O' old row, 'N' none),
 *					[old tuple unless 'N'], new tuple
 *	'D' DELETE		relid u32, oldkind u8 ('K' or 'O'), old tuple
 *	'T' TRUNCATE	flags u8 (1 CASCADE, 2 RESTART IDENTITY), nrels u32,
 *					nrels x relid u32
 *	'M' MESSAGE		flags u8 (1 transactional), lsn u64, prefix str,
 *					content str
 *	'E' COPY_END	rows u64: closes an initial-copy stream; a copy without it
 *					is incomplete
 *	'H' HELLO		slot str, start_lsn u64, flush_lsn u64, confirmed_lsn u64,
 *					history_lsn u64, history_status u8, history_crc u32:
 *					the first record
 *					of frame 1 of every stream and every copy.  slot is the
 *					register's replication slot the stream or copy belongs to;
 *					start_lsn is, in a stream, the position decoding really
 *					starts from (the larger of the position the embassy asked
 *					for and the slot's confirmed position), in a copy, the
 *					slot's consistent point (the copy's snapshot); flush_lsn
 *					is the register's WAL flush position; confirmed_lsn the
 *					slot's confirmed position when the stream began (in a
 *					copy, the consistent point again).  history_*: what the
 *					register's WAL holds at the position of a heartbeat the
 *					embassy saw (the stream's "history_lsn" option; 0 and
 *					'-' when none was asked; DE_HISTORY_* below, see
 *					src/register/history.c).  With the frame
 *					header's session, timeline and clock it binds the stream
 *					to this connection and says where it begins.
 *	'Y' HEARTBEAT	nonce 16 bytes, lsn u64, flush_lsn u64, crc u32: the register
 *					decoded a heartbeat the embassy asked for with this fresh
 *					nonce (data_embassy.heartbeat()), whose WAL record starts
 *					at lsn, while its WAL was flushed up to flush_lsn; crc is its WAL
 *					record's CRC, a fingerprint of that history.  Written
 *					outside transactions, in a frame of its own.
 *	'Q' SEQUENCES	count u32, count x { nspname str, relname str,
 *					last_value i64 }: the last value each sequence of the
 *					register had handed out when the record was written
 *					(sequences that never handed one out are left out);
 *					written inside a transaction, before its COMMIT
 *
 * Transactions streamed before their commit (the register's reorder buffer
 * outgrew logical_decoding_work_mem, see stream.c) come in blocks; a block
 * holds changes (RELATION, INSERT, UPDATE, DELETE, TRUNCATE, MESSAGE,
 * SEQUENCES) of one transaction, and blocks of several transactions and
 * whole transactions may alternate:
 *
 *	'S' STREAM_START	xid u32 (top-level), first u8 (1: the transaction's
 *					first block)
 *	'X' SUBXACT		xid u32: the changes that follow belong to this
 *					(sub)transaction; written whenever it changes
 *	'P' STREAM_STOP	ends a block
 *	'A' STREAM_ABORT	xid u32, subxid u32: the subtransaction (or, when
 *					subxid = xid, the whole transaction) rolled back;
 *					everything from its first change on is void
 *	'K' STREAM_COMMIT	xid u32, commit_lsn u64, end_lsn u64, commit_time i64
 *
 *	tuple			natts u16, natts x { kind u8, [len u32, bytes] }
 *					kind 'n' NULL, 'u' unchanged TOAST value (not sent),
 *					'b' binary send format, 't' text output
 *
 * Only live columns travel (not dropped), in attribute order; stored
 * generated columns travel too, with the values the register stored, so
 * that the embassy need not compute them again.  (Registers before this
 * change left generated columns out, and the embassy computes the ones it
 * does not receive; the layout of the records is the same, and the frame
 * version did not change.)  A RELATION record precedes the first change of
 * a relation in a stream and is sent again after the relation changes.
 *
 * Binary format is used for built-in types, enums, and domains over them;
 * other types (composites, arrays of non-built-in types, extension types)
 * travel as text, because their binary forms embed type OIDs that differ
 * between clusters.
 *
 * IDENTIFICATION
 *		  src/seal/codec.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_CODEC_H
#define DE_CODEC_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/relcache.h"

#define DE_REC_BEGIN		'B'
#define DE_REC_COMMIT		'C'
#define DE_REC_RELATION		'R'
#define DE_REC_INSERT		'I'
#define DE_REC_UPDATE		'U'
#define DE_REC_DELETE		'D'
#define DE_REC_TRUNCATE		'T'
#define DE_REC_MESSAGE		'M'
#define DE_REC_COPY_END		'E'
#define DE_REC_SEQUENCES	'Q'
#define DE_REC_STREAM_START	'S'
#define DE_REC_SUBXACT		'X'
#define DE_REC_STREAM_STOP	'P'
#define DE_REC_STREAM_ABORT	'A'
#define DE_REC_STREAM_COMMIT	'K'
#define DE_REC_HELLO		'H'
#define DE_REC_HEARTBEAT	'Y'

/* HELLO history_status: what the register found at history_lsn */
#define DE_HISTORY_NOT_ASKED	'-'
#define DE_HISTORY_FOUND		'f' /* a record starts there: its CRC */
#define DE_HISTORY_AHEAD		'a' /* at or past the WAL flush position */
#define DE_HISTORY_GONE			'g' /* the WAL there was removed */
#define DE_HISTORY_NO_RECORD	'n' /* no valid record starts there */

#define DE_HEARTBEAT_NONCE_LEN	16
#define DE_HEARTBEAT_PREFIX		"data_embassy.heartbeat"

#define DE_COL_NULL			'n'
#define DE_COL_UNCHANGED	'u'
#define DE_COL_BINARY		'b'
#define DE_COL_TEXT			't'

#define DE_OLD_KEY			'K'
#define DE_OLD_ROW			'O'
#define DE_OLD_NONE			'N'

#define DE_TRUNCATE_CASCADE		0x01
#define DE_TRUNCATE_RESTART		0x02

#define DE_MESSAGE_TRANSACTIONAL	0x01

/* ---------- writing (register side) ---------- */

/* How one attribute of a relation is written. */
typedef struct DeColumnOut
{
	bool		live;			/* false: dropped, not sent */
	char		format;			/* DE_COL_BINARY or DE_COL_TEXT */
	bool		is_varlena;		/* attlen == -1 */
	FmgrInfo	outfn;			/* typsend or typoutput */
} DeColumnOut;

/* Per-relation output state, built once and cached by the caller. */
typedef struct DeRelOut
{
	Oid			relid;
	int			natts;			/* attributes in the tuple descriptor */
	int			nlive;			/* of which sent */
	DeColumnOut *cols;			/* natts entries */
	TupleDesc	desc;			/* copy of the descriptor, for deforming */
	Datum	   *values;			/* natts scratch entries for deforming */
	bool	   *isnull;
} DeRelOut;

/*
 * Fill "ro" for "rel"; everything is allocated in mcxt, and goes with it
 * (callers give each relation a context they reset or delete).
 */
extern void de_relout_build(DeRelOut *ro, Relation rel, MemoryContext mcxt);

extern void de_write_begin(StringInfo out, XLogRecPtr final_lsn,
						   TimestampTz commit_time, TransactionId xid);
extern void de_write_commit(StringInfo out, XLogRecPtr commit_lsn,
							XLogRecPtr end_lsn, TimestampTz commit_time);
extern void de_write_relation(StringInfo out, Relation rel,
							  const DeRelOut *ro);
extern void de_write_insert(StringInfo out, DeRelOut *ro, HeapTuple newtuple);

/* old may be NULL (oldkind 'N'); old_is_key selects 'K' over 'O'. */
extern void de_write_update(StringInfo out, DeRelOut *ro, HeapTuple oldtuple,
							bool old_is_key, HeapTuple newtuple);
extern void de_write_delete(StringInfo out, DeRelOut *ro, HeapTuple oldtuple,
							bool old_is_key);
extern void de_write_truncate(StringInfo out, int nrelids, const Oid *relids,
							  bool cascade, bool restart_seqs);
extern void de_write_message(StringInfo out, XLogRecPtr lsn,
							 bool transactional, const char *prefix,
							 Size sz, const char *content);

/*
 * An INSERT from already-deformed values, for the initial copy.  There,
 * on-disk TOAST pointers are real values and are sent in full; in decoded
 * changes (de_write_insert and friends) they mean "unchanged".
 */
extern void de_write_insert_values(StringInfo out, DeRelOut *ro,
								   Datum *values, bool *isnull);
extern void de_write_copy_end(StringInfo out, uint64 rows);

/* HELLO and HEARTBEAT (see the record list above). */
extern void de_write_hello(StringInfo out, const char *slot,
						   XLogRecPtr start_lsn, XLogRecPtr flush_lsn,
						   XLogRecPtr confirmed_lsn, XLogRecPtr history_lsn,
						   char history_status, uint32 history_crc);
extern void de_write_heartbeat(StringInfo out, const uint8 *nonce,
							   XLogRecPtr lsn, XLogRecPtr flush_lsn,
							   uint32 crc);

/* SEQUENCES: n entries of schema, name and last value handed out. */
extern void de_write_sequences(StringInfo out, int n, char **nspnames,
							   char **relnames, const int64 *last_values);

/* Streamed transactions (see the record list above). */
extern void de_write_stream_start(StringInfo out, TransactionId xid,
								  bool first);
extern void de_write_subxact(StringInfo out, TransactionId xid);
extern void de_write_stream_stop(StringInfo out);
extern void de_write_stream_abort(StringInfo out, TransactionId xid,
								  TransactionId subxid);
extern void de_write_stream_commit(StringInfo out, TransactionId xid,
								   XLogRecPtr commit_lsn, XLogRecPtr end_lsn,
								   TimestampTz commit_time);

/* ---------- reading (embassy side, inspection) ---------- */

typedef struct DeValue
{
	char		kind;			/* DE_COL_* */
	uint32		len;
	char	   *data;			/* points into the body; not NUL-terminated */
} DeValue;

typedef struct DeTuple
{
	int			natts;
	DeValue    *values;
} DeTuple;

typedef struct DeAttribute
{
	char	   *name;
	Oid			typoid;
	int32		typmod;
	bool		is_key;
	char		format;
	char	   *typname;
} DeAttribute;

typedef struct DeRecord
{
	char		type;			/* DE_REC_* */

	/* BEGIN, COMMIT, MESSAGE, streaming records, HELLO, HEARTBEAT */
	XLogRecPtr	lsn;			/* BEGIN final_lsn, (STREAM_)COMMIT
								 * commit_lsn, MESSAGE and HEARTBEAT lsn,
								 * HELLO start_lsn */
	XLogRecPtr	end_lsn;		/* (STREAM_)COMMIT; HELLO and HEARTBEAT
								 * flush_lsn */
	TimestampTz commit_time;	/* BEGIN, (STREAM_)COMMIT */
	TransactionId xid;			/* BEGIN, STREAM_*, SUBXACT */
	TransactionId subxid;		/* STREAM_ABORT */
	bool		first;			/* STREAM_START */

	/* RELATION, INSERT, UPDATE, DELETE */
	Oid			relid;

	/* RELATION */
	char	   *nspname;
	char	   *relname;
	char		replident;
	int			natts;
	DeAttribute *atts;

	/* INSERT, UPDATE, DELETE */
	char		oldkind;		/* DE_OLD_* */
	DeTuple		oldtup;
	DeTuple		newtup;

	/* TRUNCATE */
	int			nrelids;
	Oid		   *relids;
	bool		cascade;
	bool		restart_seqs;

	/* MESSAGE */
	bool		transactional;
	char	   *prefix;
	uint32		content_len;
	char	   *content;		/* points into the body */

	/* COPY_END */
	uint64		rows;

	/* HELLO */
	char	   *slot;
	XLogRecPtr	confirmed_lsn;
	XLogRecPtr	history_lsn;
	char		history_status;

	/* HELLO history_crc, HEARTBEAT crc */
	uint32		crc;

	/* HEARTBEAT */
	uint8		nonce[DE_HEARTBEAT_NONCE_LEN];

	/* SEQUENCES */
	int			nsequences;
	char	  **seq_nspnames;
	char	  **seq_relnames;
	int64	   *seq_values;
} DeRecord;

typedef struct DeReader
{
	char	   *data;
	size_t		len;
	size_t		pos;
} DeReader;

extern void de_reader_init(DeReader *reader, char *data, size_t len);

/*
 * Read the next record into *rec.  Returns false at the clean end of the
 * body.  Every length is checked against the body before use; a malformed
 * body raises ERROR with ERRCODE_DATA_CORRUPTED.  Names and arrays are
 * palloc'd in CurrentMemoryContext; values point into the body.
 */
extern bool de_read_record(DeReader *reader, DeRecord *rec);

/* Name of a record type for messages ("INSERT"...). */
extern const char *de_record_type_name(char type);

#endif							/* DE_CODEC_H */
