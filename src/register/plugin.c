/*-------------------------------------------------------------------------
 *
 * plugin.c
 *		  The logical decoding output plugin "data_embassy": decoded changes
 *		  become change records (codec.c), gathered into frames that are
 *		  compressed and sealed for one pinned embassy (frame.c).
 *
 * Options:
 *		embassy_key			the embassy's public key as text (required); it
 *							must be pinned with data_embassy.add_embassy()
 *		batch_size			frame size in kB (data_embassy.batch_size)
 *		compression_level	zstd level (data_embassy.compression_level)
 *		decoding_work_mem	logical_decoding_work_mem for this stream, in kB:
 *							the reorder buffer is the largest memory of a
 *							walsender, and an embassy worker keeps it small
 *		stream_in_progress	boolean, default off: send a transaction whose
 *							changes outgrow decoding_work_mem before it
 *							commits, in blocks (STREAM_START ... STREAM_STOP,
 *							then STREAM_COMMIT or STREAM_ABORT; codec.h)
 *		session				the public X25519 key the embassy made for this
 *							connection, 64 hexadecimal digits: every frame
 *							carries it and a MAC under a key derived from it
 *							(frame.h).  Without it (decoding called from
 *							SQL) the session is the X25519 base point, a
 *							key nobody holds the private half of, so no
 *							receiver accepts such frames as a live stream.
 *		history_lsn, frame_version: see de_plugin_parse_options()
 *
 * NOTES
 *
 * Batching.  Records are appended to the body of the current frame, which
 * lives in a context of its own, so memory is bounded by the frame size and
 * never by the transaction size.  A body that reaches batch_size is sealed
 * and written at once, even in the middle of a transaction (the frame then
 * carries DE_FRAME_TXN_OPEN).  At a commit that reaches the WAL flush
 * position (the decoder has caught up) the body is flushed too, so an idle
 * system sees no batching delay; behind, commits accumulate up to
 * batch_size.  Called from SQL (pg_logical_slot_get_binary_changes and
 * friends) the plugin flushes at every commit, so nothing is held back
 * between calls.
 *
 * In a walsender the plugin also wraps the WAL reader's page_read callback:
 * when the reader is about to wait for WAL that is not flushed yet, the
 * pending body is flushed, or, when nothing is pending but decoding has
 * moved past the last frame (WAL without replicated commits), a body-less
 * position frame tells the embassy it may confirm that position, so an idle
 * register's lag drops to zero.  Position frames are rate limited.
 *
 * Frame LSNs: end_lsn is the decoding position when the frame is sealed;
 * commit_lsn is the end of the last commit whose records are in this or an
 * earlier frame, or, for frames written while waiting for WAL (no
 * transaction being decoded), the decoding position itself.
 *
 * Strings travel in the server encoding (see codec.c); the types whose
 * send functions convert to the client encoding depend on it being the
 * database encoding, which is the default.
 *
 * IDENTIFICATION
 *		  src/register/plugin.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "access/xlog_internal.h"
#include "catalog/catalog.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "replication/snapbuild.h"
#include "replication/walsender.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "seal/codec.h"
#include "data_embassy.h"
#include "seal/frame.h"
#include "seal/keys.h"
#include "register/history.h"
#include "register/keyless.h"
#include "register/pins.h"
#include "register/plugin.h"
#include "register/sequences.h"
#include "schema_list.h"

/* Changes without a write after which the walsender is given a chance to
 * send keepalives (as PG15's pgoutput does). */
#define DE_PROGRESS_CHANGES		100

/* Position frames: at most one per interval unless WAL moved further. */
#define DE_POSITION_INTERVAL_MS	1000

/* Bounds of the batch_size option, as of the setting (kB). */
#define DE_BATCH_MIN_KB			16
#define DE_BATCH_MAX_KB			65536
#define DE_LEVEL_MIN			(-50)
#define DE_LEVEL_MAX			19

/* Per-relation cache entry. */
typedef struct DeRelEntry
{
	Oid			relid;			/* hash key */
	bool		valid;			/* false: rebuild before use */
	bool		replicate;		/* passes de_class_is_replicated() */
	bool		has_identity;	/* UPDATE/DELETE can be located remotely */
	bool		sent;			/* RELATION written in this stream */
	bool		warned;			/* warned about missing identity (once per
								 * stream, not once per rebuild) */
	MemoryContext cxt;			/* holds ro */
	DeRelOut	ro;
} DeRelEntry;

typedef struct DePluginData
{
	MemoryContext cache_cxt;	/* relation cache */
	MemoryContext frame_cxt;	/* the frame body */
	MemoryContext change_cxt;	/* reset after every callback */

	DePublicKey embassy_key;
	uint8		session[DE_SESSION_LEN];	/* the embassy's session key */
	XLogRecPtr	history_lsn;	/* a heartbeat the embassy saw, or 0 */
	XLogRecPtr	start_lsn;		/* where decoding really starts */
	int			batch_bytes;
	int			zstd_level;
	Oid			schema_oid;		/* data_embassy schema: not replicated */
	List	   *schemas;		/* "schemas" option: NIL, every schema */
	bool		walsender;		/* streaming in a walsender */

	DeSealer   *sealer;
	StringInfoData body;		/* records not sealed yet */

	bool		in_txn;			/* between begin and commit callbacks */
	bool		begin_sent;		/* BEGIN of the current txn is written */

	/* streaming of in-progress transactions */
	bool		stream_in_progress; /* the option */
	bool		in_stream;		/* between stream_start and stream_stop */
	bool		stream_block_sent;	/* STREAM_START of this block written */
	bool		stream_first;	/* the block is the transaction's first */
	TransactionId stream_xid;	/* top-level xid of the block */
	TransactionId stream_subxid;	/* xid of the last change written */

	XLogRecPtr	last_commit_lsn;	/* what the next frame lets be confirmed */
	XLogRecPtr	last_end_lsn;	/* end_lsn of the last frame */
	TimestampTz last_position_at;	/* last position frame */
	TimestampTz last_sequences_at;	/* last SEQUENCES record */
	DeSeqReporter *sequences;	/* what was reported of the sequences */
	int			changes_since_write;

	XLogPageReadCB orig_page_read;	/* the walsender's page_read */
} DePluginData;

/* Relation cache: lives in the decoding context, cleared when it goes. */
static HTAB *DeRelCache = NULL;
static bool de_relcache_callback_registered = false;

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

static void de_plugin_startup(LogicalDecodingContext *ctx,
							  OutputPluginOptions *opt, bool is_init);
static void de_plugin_shutdown(LogicalDecodingContext *ctx);
static void de_plugin_begin(LogicalDecodingContext *ctx,
							ReorderBufferTXN *txn);
static void de_plugin_commit(LogicalDecodingContext *ctx,
							 ReorderBufferTXN *txn, XLogRecPtr commit_lsn);
static void de_plugin_change(LogicalDecodingContext *ctx,
							 ReorderBufferTXN *txn, Relation relation,
							 ReorderBufferChange *change);
static void de_plugin_truncate(LogicalDecodingContext *ctx,
							   ReorderBufferTXN *txn, int nrelations,
							   Relation relations[],
							   ReorderBufferChange *change);
static void de_plugin_message(LogicalDecodingContext *ctx,
							  ReorderBufferTXN *txn, XLogRecPtr message_lsn,
							  bool transactional, const char *prefix,
							  Size message_size, const char *message);
static void de_plugin_stream_start(LogicalDecodingContext *ctx,
								   ReorderBufferTXN *txn);
static void de_plugin_stream_stop(LogicalDecodingContext *ctx,
								  ReorderBufferTXN *txn);
static void de_plugin_stream_abort(LogicalDecodingContext *ctx,
								   ReorderBufferTXN *txn,
								   XLogRecPtr abort_lsn);
static void de_plugin_stream_commit(LogicalDecodingContext *ctx,
									ReorderBufferTXN *txn,
									XLogRecPtr commit_lsn);
static int	de_plugin_page_read(XLogReaderState *state,
								XLogRecPtr targetPagePtr, int reqLen,
								XLogRecPtr targetRecPtr, char *readBuf);

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = de_plugin_startup;
	cb->begin_cb = de_plugin_begin;
	cb->change_cb = de_plugin_change;
	cb->truncate_cb = de_plugin_truncate;
	cb->message_cb = de_plugin_message;
	cb->commit_cb = de_plugin_commit;
	cb->shutdown_cb = de_plugin_shutdown;

	/* in-progress transactions (only with the stream_in_progress option) */
	cb->stream_start_cb = de_plugin_stream_start;
	cb->stream_stop_cb = de_plugin_stream_stop;
	cb->stream_abort_cb = de_plugin_stream_abort;
	cb->stream_commit_cb = de_plugin_stream_commit;
	cb->stream_change_cb = de_plugin_change;
	cb->stream_truncate_cb = de_plugin_truncate;
	cb->stream_message_cb = de_plugin_message;
}

/*
 * de_class_is_replicated
 *		The relation filter of the plugin and of the initial copy: permanent
 *		user tables, not system ones, not the extension's own.
 */
bool
de_class_is_replicated(Oid relid, Form_pg_class classform, Oid de_nsp)
{
	if (classform->relkind != RELKIND_RELATION)
		return false;
	if (classform->relpersistence != RELPERSISTENCE_PERMANENT)
		return false;
	if (relid < FirstNormalObjectId || IsCatalogRelationOid(relid))
		return false;
	if (OidIsValid(de_nsp) && classform->relnamespace == de_nsp)
		return false;
	return true;
}

/* ---------- options ---------- */

static const char *
de_option_value(DefElem *elem)
{
	if (elem->arg == NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("option \"%s\" requires a value", elem->defname));
	return strVal(elem->arg);
}

static int
de_option_int(DefElem *elem, int flags, int min, int max)
{
	const char *value = de_option_value(elem);
	const char *hintmsg = NULL;
	int			result;

	if (!parse_int(value, &result, flags, &hintmsg))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid value for option \"%s\": \"%s\"",
					   elem->defname, value),
				hintmsg ? errhint("%s", _(hintmsg)) : 0);
	if (result < min || result > max)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("value for option \"%s\" is out of range: \"%s\"",
					   elem->defname, value),
				(flags & GUC_UNIT_KB) ?
				errdetail("Valid values are between %d kB and %d kB.",
						  min, max) :
				errdetail("Valid values are between %d and %d.", min, max));
	return result;
}

static void
de_plugin_parse_options(List *options, DePluginData *data)
{
	ListCell   *lc;
	bool		key_given = false;
	bool		batch_given = false;
	bool		level_given = false;
	bool		workmem_given = false;
	bool		stream_given = false;
	bool		session_given = false;
	bool		history_given = false;
	bool		version_given = false;
	bool		schemas_given = false;

	data->batch_bytes = de_batch_size_kb * 1024;
	data->zstd_level = de_compression_level;

	foreach(lc, options)
	{
		DefElem    *elem = lfirst(lc);

		Assert(elem->arg == NULL || IsA(elem->arg, String));

		if (strcmp(elem->defname, "embassy_key") == 0)
		{
			if (key_given)
				goto duplicate;
			key_given = true;
			de_key_from_text(de_option_value(elem), "embassy_key",
							 &data->embassy_key);
		}
		else if (strcmp(elem->defname, "batch_size") == 0)
		{
			if (batch_given)
				goto duplicate;
			batch_given = true;
			data->batch_bytes = de_option_int(elem, GUC_UNIT_KB,
											  DE_BATCH_MIN_KB,
											  DE_BATCH_MAX_KB) * 1024;
		}
		else if (strcmp(elem->defname, "compression_level") == 0)
		{
			if (level_given)
				goto duplicate;
			level_given = true;
			data->zstd_level = de_option_int(elem, 0, DE_LEVEL_MIN,
											 DE_LEVEL_MAX);
		}
		else if (strcmp(elem->defname, "decoding_work_mem") == 0)
		{
			char		value[32];

			if (workmem_given)
				goto duplicate;
			workmem_given = true;
			snprintf(value, sizeof(value), "%dkB",
					 de_option_int(elem, GUC_UNIT_KB, 64, MAX_KILOBYTES));

			/*
			 * A walsender decodes for this stream only; an SQL caller gets
			 * the setting back at the end of its transaction.
			 */
			(void) set_config_option("logical_decoding_work_mem", value,
									 PGC_USERSET, PGC_S_SESSION,
									 am_walsender ? GUC_ACTION_SET : GUC_ACTION_LOCAL,
									 true, 0, false);
		}
		else if (strcmp(elem->defname, "stream_in_progress") == 0)
		{
			if (stream_given)
				goto duplicate;
			stream_given = true;
			if (!parse_bool(de_option_value(elem), &data->stream_in_progress))
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid value for option \"%s\": \"%s\"",
							   elem->defname, de_option_value(elem)),
						errhint("Use a boolean value."));
		}
		else if (strcmp(elem->defname, "session") == 0)
		{
			const char *hex = de_option_value(elem);

			if (session_given)
				goto duplicate;
			session_given = true;
			if (strlen(hex) != 2 * DE_SESSION_LEN)
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid value for option \"%s\"",
							   elem->defname),
						errdetail("A session key is %d hexadecimal digits.",
								  2 * DE_SESSION_LEN));
			if (strspn(hex, "0123456789abcdefABCDEF") != 2 * DE_SESSION_LEN)
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid value for option \"%s\"",
							   elem->defname),
						errdetail("A session key is %d hexadecimal digits.",
								  2 * DE_SESSION_LEN));
			(void) hex_decode(hex, 2 * DE_SESSION_LEN,
							  (char *) data->session);
		}
		else if (strcmp(elem->defname, "history_lsn") == 0)
		{
			bool		have_error = false;

			if (history_given)
				goto duplicate;
			history_given = true;
			data->history_lsn = pg_lsn_in_internal(de_option_value(elem),
												   &have_error);
			if (have_error)
				ereport(ERROR,
						errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid value for option \"%s\": \"%s\"",
							   elem->defname, de_option_value(elem)),
						errhint("Use an LSN such as 0/16B3748."));
		}
		else if (strcmp(elem->defname, "frame_version") == 0)
		{
			int			version;

			if (version_given)
				goto duplicate;
			version_given = true;
			version = de_option_int(elem, 0, 0, 255);
			if (version != DE_FRAME_VERSION)
				ereport(ERROR,
						errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						errmsg("embassy reads frame format version %d, but this register writes version %d",
							   version, DE_FRAME_VERSION),
						errhint("Run the same version of data_embassy on the register and on the embassy."));
		}
		else if (strcmp(elem->defname, "schemas") == 0)
		{
			MemoryContext oldcxt;

			if (schemas_given)
				goto duplicate;
			schemas_given = true;
			oldcxt = MemoryContextSwitchTo(GetMemoryChunkContext(data));
			data->schemas = de_schema_list_from_option(elem->defname,
													   de_option_value(elem));
			MemoryContextSwitchTo(oldcxt);
		}
		else
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("option \"%s\" is not recognized by output plugin \"%s\"",
						   elem->defname, DE_PLUGIN_NAME),
					errhint("Valid options are \"%s\", \"%s\", \"%s\", \"%s\", \"%s\", \"%s\", \"%s\", \"%s\" and \"%s\".",
							"embassy_key", "session", "history_lsn", "frame_version",
							"batch_size", "compression_level",
							"decoding_work_mem", "stream_in_progress",
							"schemas"));
		continue;

duplicate:
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("conflicting or redundant options"),
				errdetail("Option \"%s\" was given more than once.",
						  elem->defname));
	}

	if (!session_given)
	{
		memset(data->session, 0, DE_SESSION_LEN);
		data->session[0] = 9;	/* the X25519 base point */
	}

	if (!key_given)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("option \"%s\" missing", "embassy_key"),
				errhint("Name the embassy the stream is for by its public key, as pinned with %s.",
						"data_embassy.add_embassy()"));
}

/* ---------- relation cache ---------- */

static void
de_relcache_reset_callback(void *arg)
{
	DeRelCache = NULL;
}

/* Relcache invalidation: rebuild (and resend) the relation on next use. */
static void
de_relcache_invalidate(Datum arg, Oid relid)
{
	DeRelEntry *entry;

	if (DeRelCache == NULL)
		return;

	if (OidIsValid(relid))
	{
		entry = hash_search(DeRelCache, &relid, HASH_FIND, NULL);
		if (entry != NULL)
			entry->valid = false;
	}
	else
	{
		HASH_SEQ_STATUS status;

		hash_seq_init(&status, DeRelCache);
		while ((entry = hash_seq_search(&status)) != NULL)
			entry->valid = false;
	}
}

static void
de_relcache_init(DePluginData *data)
{
	HASHCTL		ctl;
	MemoryContextCallback *cb;

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(DeRelEntry);
	ctl.hcxt = data->cache_cxt;
	DeRelCache = hash_create("data_embassy relation cache", 128, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/* forget the table when its context goes, on error as on shutdown */
	cb = MemoryContextAlloc(data->cache_cxt, sizeof(MemoryContextCallback));
	cb->func = de_relcache_reset_callback;
	cb->arg = NULL;
	MemoryContextRegisterResetCallback(data->cache_cxt, cb);

	if (!de_relcache_callback_registered)
	{
		CacheRegisterRelcacheCallback(de_relcache_invalidate, (Datum) 0);
		de_relcache_callback_registered = true;
	}
}

/*
 * de_relentry_get
 *		The cache entry of a relation, (re)built when invalid.
 */
static DeRelEntry *
de_relentry_get(DePluginData *data, Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	DeRelEntry *entry;
	bool		found;

	entry = hash_search(DeRelCache, &relid, HASH_ENTER, &found);
	if (!found)
	{
		entry->valid = false;
		entry->warned = false;	/* kept across rebuilds: once per stream */
		entry->cxt = NULL;
		memset(&entry->ro, 0, sizeof(DeRelOut));
	}

	if (!entry->valid)
	{
		if (entry->cxt == NULL)
			entry->cxt = AllocSetContextCreate(data->cache_cxt,
											   "data_embassy relation",
											   ALLOCSET_SMALL_SIZES);
		else
			MemoryContextReset(entry->cxt);
		memset(&entry->ro, 0, sizeof(DeRelOut));

		/* an invalidation arriving while we build marks it invalid again */
		entry->valid = true;
		entry->sent = false;
		entry->replicate = de_class_is_replicated(relid, rel->rd_rel,
												  data->schema_oid) &&
			de_schema_list_contains_oid(data->schemas,
										rel->rd_rel->relnamespace);
		entry->has_identity = de_rel_has_identity(rel);
		if (entry->replicate)
			de_relout_build(&entry->ro, rel, entry->cxt);
	}

	return entry;
}

/* Write the RELATION record once per stream and after every change. */
static void
de_relentry_send(DePluginData *data, Relation rel, DeRelEntry *entry)
{
	if (entry->sent)
		return;
	de_write_relation(&data->body, rel, &entry->ro);
	entry->sent = true;
}

/*
 * A relation whose rows cannot be found remotely: say so once per stream,
 * not at every change (the flag survives rebuilds of the entry).
 */
static void
de_relentry_warn_identity(DeRelEntry *entry, Relation rel)
{
	if (entry->warned)
		return;
	entry->warned = true;
	ereport(WARNING,
			errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			errmsg("table \"%s.%s\" has no replica identity, so its UPDATEs and DELETEs cannot be replicated",
				   get_namespace_name(RelationGetNamespace(rel)),
				   RelationGetRelationName(rel)),
			errdetail("This warning is given once per table and stream."),
			errhint("Add a primary key to the table or set its REPLICA IDENTITY to FULL."));
}

/* ---------- frames ---------- */

static void
de_body_init(DePluginData *data)
{
	int			size = data->batch_bytes + 8192;

	data->body.data = MemoryContextAlloc(data->frame_cxt, size);
	data->body.maxlen = size;
	data->body.len = 0;
	data->body.cursor = 0;
	data->body.data[0] = '\0';
}

/* Empty the body; give memory back when a huge value made it grow. */
static void
de_body_reset(DePluginData *data)
{
	if (data->body.maxlen > 2 * (data->batch_bytes + 8192))
	{
		MemoryContextReset(data->frame_cxt);
		de_body_init(data);
	}
	else
		resetStringInfo(&data->body);
}

/*
 * de_plugin_seal
 *		Seal the body (possibly empty) into one frame and write it.  Writes
 *		must be accepted (a callback, or see de_plugin_write_outside).
 */
static void
de_plugin_seal(LogicalDecodingContext *ctx, DePluginData *data,
			   uint16 flags, XLogRecPtr commit_lsn, bool sign)
{
	XLogRecPtr	end_lsn = Max(ctx->reader->EndRecPtr, data->last_end_lsn);

	if (commit_lsn > end_lsn)
		end_lsn = commit_lsn;

	OutputPluginPrepareWrite(ctx, true);
	de_sealer_seal(data->sealer, data->body.data, (uint32) data->body.len,
				   flags, end_lsn, commit_lsn, GetFlushRecPtr(NULL), sign,
				   ctx->out);
	OutputPluginWrite(ctx, true);

	data->last_end_lsn = end_lsn;
	data->changes_since_write = 0;
	de_body_reset(data);
}

/* Seal and write when the body has reached the batch size. */
static bool
de_plugin_seal_if_full(LogicalDecodingContext *ctx, DePluginData *data)
{
	if (data->body.len < data->batch_bytes)
		return false;
	de_plugin_seal(ctx, data,
				   (data->begin_sent || data->in_stream) ? DE_FRAME_TXN_OPEN : 0,
				   data->last_commit_lsn, false);
	return true;
}

/*
 * A change that wrote nothing: every DE_PROGRESS_CHANGES of them, let the
 * walsender send a keepalive if one is due.
 */
static void
de_plugin_progress(LogicalDecodingContext *ctx, DePluginData *data)
{
	if (++data->changes_since_write >= DE_PROGRESS_CHANGES)
	{
		OutputPluginUpdateProgress(ctx, false);
		data->changes_since_write = 0;
	}
}

/*
 * de_plugin_begin_if_needed
 *		Before the first record of a transaction: its BEGIN, or in a block
 *		of a streamed transaction the STREAM_START of the block, and a
 *		SUBXACT whenever the (sub)transaction of the changes changes.
 *		change_xid is the xid of the change, or invalid for records that
 *		belong to whatever came before (messages).
 */
static void
de_plugin_begin_if_needed(DePluginData *data, ReorderBufferTXN *txn,
						  TransactionId change_xid)
{
	if (data->in_stream)
	{
		if (!data->stream_block_sent)
		{
			de_write_stream_start(&data->body, data->stream_xid,
								  data->stream_first);
			data->stream_block_sent = true;
			data->stream_subxid = data->stream_xid;
		}
		if (TransactionIdIsValid(change_xid) &&
			change_xid != data->stream_subxid)
		{
			de_write_subxact(&data->body, change_xid);
			data->stream_subxid = change_xid;
		}
		return;
	}
	if (data->begin_sent)
		return;
	de_write_begin(&data->body, txn->final_lsn, txn->xact_time.commit_time,
				   txn->xid);
	data->begin_sent = true;
}

/* ---------- startup and shutdown ---------- */

/*
 * de_plugin_decoding_start
 *		The position decoding of this session really starts from.
 *
 * CreateDecodingContext() starts at the larger of the client's requested
 * position and the slot's confirmed_flush, and keeps it in the snapshot
 * builder, whose struct is private; SnapBuildXactNeedsSkip() answers
 * "ptr < start" for any ptr, so a binary search finds it exactly.  The
 * answer is sealed into the stream's HELLO, so the embassy learns where the
 * stream begins from the register, not from the network.
 */
static XLogRecPtr
de_plugin_decoding_start(LogicalDecodingContext *ctx)
{
	XLogRecPtr	lo = ctx->slot->data.confirmed_flush;	/* not skipped... */
	XLogRecPtr	hi = PG_UINT64_MAX;

	/* ...unless confirmed_flush itself is below the start */
	if (!SnapBuildXactNeedsSkip(ctx->snapshot_builder, lo))
		return lo;

	/* invariant: lo is skipped (below the start), hi is not */
	while (hi - lo > 1)
	{
		XLogRecPtr	mid = lo + (hi - lo) / 2;

		if (SnapBuildXactNeedsSkip(ctx->snapshot_builder, mid))
			lo = mid;
		else
			hi = mid;
	}
	return hi;
}

static void
de_plugin_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt,
				  bool is_init)
{
	DePluginData *data;
	uint8		priv[DE_KEY_LEN];
	uint8		pub[DE_KEY_LEN];
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		started = false;

	data = MemoryContextAllocZero(ctx->context, sizeof(DePluginData));
	ctx->output_plugin_private = data;

	opt->output_type = OUTPUT_PLUGIN_BINARY_OUTPUT;
	opt->receive_rewrites = false;

	/* creating the slot: nothing is decoded, there is nothing to check */
	if (is_init)
	{
		ctx->streaming = false;
		return;
	}

	de_plugin_parse_options(ctx->output_plugin_options, data);

	/* in-progress transactions are streamed only to a client that asks */
	if (!data->stream_in_progress)
		ctx->streaming = false;

	/*
	 * Without an identity key nothing can be sealed: report that first.  The
	 * private half is not held while the pin is checked (an ERROR there would
	 * leave it on the stack); it is loaded again, from process memory, for
	 * the sealer below.
	 */
	de_identity_require(priv, pub);
	de_secure_zero(priv, sizeof(priv));

	/*
	 * A walsender runs no transaction of its own here; the error for an
	 * unpinned key is raised inside the transaction, which names the database
	 * from the catalog.
	 */
	if (!IsTransactionState())
	{
		StartTransactionCommand();
		started = true;
	}
	de_pin_require(&data->embassy_key);
	data->schema_oid = de_schema_oid(false);
	if (started)
		CommitTransactionCommand();
	MemoryContextSwitchTo(oldcxt);

	de_identity_require(priv, pub);

	data->cache_cxt = AllocSetContextCreate(ctx->context,
											"data_embassy relation cache",
											ALLOCSET_DEFAULT_SIZES);
	data->frame_cxt = AllocSetContextCreate(ctx->context,
											"data_embassy frame",
											ALLOCSET_DEFAULT_SIZES);
	data->change_cxt = AllocSetContextCreate(ctx->context,
											 "data_embassy change",
											 ALLOCSET_DEFAULT_SIZES);

	/*
	 * Where decoding really starts: the larger of what the client asked for
	 * and the slot's confirmed position.  Refuse a slot confirmed past the
	 * WAL this register has written (its WAL was rewound under it, by a
	 * restore from an older backup, or feedback was forged).
	 */
	data->start_lsn = de_plugin_decoding_start(ctx);
	if (data->start_lsn > GetFlushRecPtr(NULL))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("replication slot \"%s\" starts past the end of this register's WAL",
					   NameStr(ctx->slot->data.name)),
				errdetail("Decoding would start at %X/%X, but the WAL is flushed only up to %X/%X.",
						  LSN_FORMAT_ARGS(data->start_lsn),
						  LSN_FORMAT_ARGS(GetFlushRecPtr(NULL))),
				errhint("The register's history went back (a restore from an older backup?) or its slot was confirmed by a forger.  The embassy must copy this register anew."));

	data->sealer = de_sealer_create(ctx->context, priv, pub,
									data->embassy_key.dh, data->session,
									GetSystemIdentifier(), MyDatabaseId,
									GetWALInsertionTimeLine(),
									DE_FRAME_KIND_STREAM, data->zstd_level,
									data->start_lsn);
	de_secure_zero(priv, sizeof(priv));

	de_body_init(data);
	de_relcache_init(data);

	/* the stream's first record says where and for which slot it starts */
	{
		char		status = DE_HISTORY_NOT_ASKED;
		uint32		crc = 0;

		if (!XLogRecPtrIsInvalid(data->history_lsn))
			status = de_history_lookup(data->history_lsn, &crc);
		de_write_hello(&data->body, NameStr(ctx->slot->data.name),
					   data->start_lsn, GetFlushRecPtr(NULL),
					   ctx->slot->data.confirmed_flush,
					   data->history_lsn, status, crc);
	}

	data->last_commit_lsn = data->start_lsn;
	data->last_end_lsn = data->start_lsn;
	data->last_position_at = 0;

	/*
	 * In a walsender, look at the WAL reader before it waits for WAL, to
	 * flush what is pending and to report empty stretches (see NOTES).
	 */
	data->walsender = am_walsender &&
		ctx->reader->routine.page_read != read_local_xlog_page &&
		ctx->reader->routine.page_read != read_local_xlog_page_no_wait;
	if (data->walsender)
	{
		data->orig_page_read = ctx->reader->routine.page_read;
		ctx->reader->routine.page_read = de_plugin_page_read;
	}
}

static void
de_plugin_shutdown(LogicalDecodingContext *ctx)
{
	DePluginData *data = ctx->output_plugin_private;

	if (data == NULL)
		return;

	if (data->orig_page_read != NULL && ctx->reader != NULL)
		ctx->reader->routine.page_read = data->orig_page_read;
	data->orig_page_read = NULL;

	if (data->sealer != NULL)
	{
		de_sealer_free(data->sealer);
		data->sealer = NULL;
	}
	if (data->cache_cxt != NULL)
	{
		/* its reset callback forgets DeRelCache */
		MemoryContextDelete(data->cache_cxt);
		data->cache_cxt = NULL;
	}
}

/* ---------- transactions and changes ---------- */

static void
de_plugin_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	DePluginData *data = ctx->output_plugin_private;

	/* BEGIN is written with the first change: empty transactions vanish */
	data->in_txn = true;
	data->begin_sent = false;
}

static void
de_plugin_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				 XLogRecPtr commit_lsn)
{
	DePluginData *data = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(data->change_cxt);
	bool		sent = data->begin_sent;
	bool		caught_up;

	/* lag tracking and keepalives, as pgoutput does at every commit */
	OutputPluginUpdateProgress(ctx, !sent);

	/* caught up: this commit is the latest there is, send it now */
	caught_up = !data->walsender || txn->end_lsn >= GetFlushRecPtr(NULL);

	if (sent)
	{
		TimestampTz now = GetCurrentTimestamp();

		/*
		 * The sequences that moved ride in the transaction: always when
		 * caught up, so the last transaction before a quiet spell carries
		 * them, and at most every sequence_interval while behind.
		 */
		if (caught_up ||
			TimestampDifferenceExceeds(data->last_sequences_at, now,
									   de_sequence_interval_ms))
		{
			if (data->sequences == NULL)
			{
				data->sequences = de_seqreport_create(ctx->context,
													  data->schema_oid);
				de_seqreport_set_schemas(data->sequences, data->schemas);
			}
			de_seqreport_write(data->sequences, &data->body);
			data->last_sequences_at = now;
		}
		de_write_commit(&data->body, commit_lsn, txn->end_lsn,
						txn->xact_time.commit_time);
	}
	data->in_txn = false;
	data->begin_sent = false;

	/*
	 * Every commit before end_lsn is in the body or an earlier frame, also
	 * when this transaction had nothing to replicate.
	 */
	if (txn->end_lsn > data->last_commit_lsn)
		data->last_commit_lsn = txn->end_lsn;

	if (data->body.len > 0 &&
		(caught_up || data->body.len >= data->batch_bytes))
		de_plugin_seal(ctx, data, 0, data->last_commit_lsn, false);

	MemoryContextSwitchTo(old);
	MemoryContextReset(data->change_cxt);
}

static void
de_plugin_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				 Relation relation, ReorderBufferChange *change)
{
	DePluginData *data = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(data->change_cxt);
	DeRelEntry *entry = de_relentry_get(data, relation);
	bool		wrote = false;
	bool		old_is_key;

	/* as pgoutput: the whole old row with REPLICA IDENTITY FULL, else a key */
	old_is_key = relation->rd_rel->relreplident != REPLICA_IDENTITY_FULL;

	if (entry->replicate)
	{
		switch (change->action)
		{
			case REORDER_BUFFER_CHANGE_INSERT:
				if (change->data.tp.newtuple == NULL)
					break;
				de_plugin_begin_if_needed(data, txn, change->txn->xid);
				de_relentry_send(data, relation, entry);
				de_write_insert(&data->body, &entry->ro,
								&change->data.tp.newtuple->tuple);
				wrote = de_plugin_seal_if_full(ctx, data);
				break;

			case REORDER_BUFFER_CHANGE_UPDATE:
				if (change->data.tp.newtuple == NULL)
					break;
				if (!entry->has_identity)
					de_relentry_warn_identity(entry, relation);
				de_plugin_begin_if_needed(data, txn, change->txn->xid);
				de_relentry_send(data, relation, entry);
				de_write_update(&data->body, &entry->ro,
								change->data.tp.oldtuple ?
								&change->data.tp.oldtuple->tuple : NULL,
								old_is_key,
								&change->data.tp.newtuple->tuple);
				wrote = de_plugin_seal_if_full(ctx, data);
				break;

			case REORDER_BUFFER_CHANGE_DELETE:
				if (change->data.tp.oldtuple == NULL)
				{
					/* no replica identity: the row cannot be named */
					de_relentry_warn_identity(entry, relation);
					break;
				}
				de_plugin_begin_if_needed(data, txn, change->txn->xid);
				de_relentry_send(data, relation, entry);
				de_write_delete(&data->body, &entry->ro,
								&change->data.tp.oldtuple->tuple, old_is_key);
				wrote = de_plugin_seal_if_full(ctx, data);
				break;

			default:
				elog(ERROR, "unexpected change action %d",
					 (int) change->action);
		}
	}

	if (!wrote)
		de_plugin_progress(ctx, data);

	MemoryContextSwitchTo(old);
	MemoryContextReset(data->change_cxt);
}

static void
de_plugin_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				   int nrelations, Relation relations[],
				   ReorderBufferChange *change)
{
	DePluginData *data = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(data->change_cxt);
	Oid		   *relids = palloc(sizeof(Oid) * nrelations);
	int			nrelids = 0;
	bool		wrote = false;
	int			i;

	for (i = 0; i < nrelations; i++)
	{
		DeRelEntry *entry = de_relentry_get(data, relations[i]);

		if (!entry->replicate)
			continue;
		de_plugin_begin_if_needed(data, txn, change->txn->xid);
		de_relentry_send(data, relations[i], entry);
		relids[nrelids++] = RelationGetRelid(relations[i]);
	}

	if (nrelids > 0)
	{
		de_write_truncate(&data->body, nrelids, relids,
						  change->data.truncate.cascade,
						  change->data.truncate.restart_seqs);
		wrote = de_plugin_seal_if_full(ctx, data);
	}

	if (!wrote)
		de_plugin_progress(ctx, data);

	MemoryContextSwitchTo(old);
	MemoryContextReset(data->change_cxt);
}

static void
de_plugin_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				  XLogRecPtr message_lsn, bool transactional,
				  const char *prefix, Size message_size, const char *message)
{
	DePluginData *data = ctx->output_plugin_private;
	MemoryContext old;
	bool		wrote;

	/*
	 * An embassy's heartbeat: seal its nonce, where the register's WAL
	 * stands, at once.  Everything decoded before it has been written ahead
	 * of it, so the embassy learns, sealed and fresh, how far it is.  A
	 * malformed one is not replicated either.
	 */
	if (!transactional && strcmp(prefix, DE_HEARTBEAT_PREFIX) == 0)
	{
		if (message_size == DE_HEARTBEAT_NONCE_LEN)
		{
			/*
			 * The message is the record being decoded (message_lsn is its
			 * end): its start and CRC fingerprint this history.
			 */
			Assert(ctx->reader->EndRecPtr == message_lsn &&
				   ctx->reader->record != NULL);
			old = MemoryContextSwitchTo(data->change_cxt);
			de_write_heartbeat(&data->body, (const uint8 *) message,
							   ctx->reader->ReadRecPtr, GetFlushRecPtr(NULL),
							   ctx->reader->record->header.xl_crc);

			/*
			 * Every commit before the message has been written: the embassy
			 * may confirm up to its end, as after a position frame.
			 */
			if (ctx->reader->EndRecPtr > data->last_commit_lsn)
				data->last_commit_lsn = ctx->reader->EndRecPtr;
			/* signed, so the proof holds for whoever keeps the frames */
			de_plugin_seal(ctx, data, 0, data->last_commit_lsn, true);
			MemoryContextSwitchTo(old);
			MemoryContextReset(data->change_cxt);
		}
		return;
	}

	old = MemoryContextSwitchTo(data->change_cxt);
	if (transactional)
	{
		de_plugin_begin_if_needed(data, txn, InvalidTransactionId);
		de_write_message(&data->body, message_lsn, true, prefix,
						 message_size, message);
		wrote = de_plugin_seal_if_full(ctx, data);
	}
	else
	{
		/* outside any transaction: written like a commit of its own */
		de_write_message(&data->body, message_lsn, false, prefix,
						 message_size, message);
		wrote = !data->walsender || data->body.len >= data->batch_bytes;
		if (wrote)
			de_plugin_seal(ctx, data, 0, data->last_commit_lsn, false);
	}

	if (!wrote)
		de_plugin_progress(ctx, data);

	MemoryContextSwitchTo(old);
	MemoryContextReset(data->change_cxt);
}

/* ---------- transactions streamed before their commit ---------- */

/*
 * de_plugin_stream_start
 *		A block of an in-progress transaction begins.  STREAM_START is
 *		written with the block's first record, so blocks of changes this
 *		plugin does not replicate cost nothing on the wire.
 */
static void
de_plugin_stream_start(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	DePluginData *data = ctx->output_plugin_private;

	data->in_stream = true;
	data->stream_block_sent = false;
	data->stream_first = !rbtxn_is_streamed(txn);
	data->stream_xid = txn->xid;
	data->stream_subxid = InvalidTransactionId;
}

static void
de_plugin_stream_stop(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	DePluginData *data = ctx->output_plugin_private;

	if (data->stream_block_sent)
		de_write_stream_stop(&data->body);
	data->in_stream = false;
	data->stream_block_sent = false;

	/* called from SQL, nothing is held back between calls */
	if (data->body.len > 0 &&
		(!data->walsender || data->body.len >= data->batch_bytes))
		de_plugin_seal(ctx, data, 0, data->last_commit_lsn, false);
}

/*
 * de_plugin_stream_abort
 *		A streamed transaction, or one of its subtransactions, rolled back.
 */
static void
de_plugin_stream_abort(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
					   XLogRecPtr abort_lsn)
{
	DePluginData *data = ctx->output_plugin_private;
	ReorderBufferTXN *toptxn = txn->toptxn ? txn->toptxn : txn;

	de_write_stream_abort(&data->body, toptxn->xid, txn->xid);
	if (!data->walsender || data->body.len >= data->batch_bytes)
		de_plugin_seal(ctx, data, 0, data->last_commit_lsn, false);
	else
		de_plugin_progress(ctx, data);
}

/*
 * de_plugin_stream_commit
 *		A streamed transaction committed: everything of it has been sent in
 *		blocks.  The sequences ride in a last block, as in de_plugin_commit.
 */
static void
de_plugin_stream_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
						XLogRecPtr commit_lsn)
{
	DePluginData *data = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(data->change_cxt);
	TimestampTz now = GetCurrentTimestamp();
	bool		caught_up;

	OutputPluginUpdateProgress(ctx, false);

	caught_up = !data->walsender || txn->end_lsn >= GetFlushRecPtr(NULL);
	if (caught_up ||
		TimestampDifferenceExceeds(data->last_sequences_at, now,
								   de_sequence_interval_ms))
	{
		int			saved_len = data->body.len;
		bool		started = false;

		/*
		 * Unlike the commit callback, this one runs outside the decoder's
		 * transaction; reading the catalog and the sequences needs one (it
		 * writes nothing).
		 */
		if (!IsTransactionState())
		{
			StartTransactionCommand();
			started = true;
		}
		if (data->sequences == NULL)
		{
			data->sequences = de_seqreport_create(ctx->context,
												  data->schema_oid);
			de_seqreport_set_schemas(data->sequences, data->schemas);
		}
		de_write_stream_start(&data->body, txn->xid, false);
		if (de_seqreport_write(data->sequences, &data->body) > 0)
			de_write_stream_stop(&data->body);
		else
			data->body.len = saved_len; /* nothing moved: no block */
		if (started)
			CommitTransactionCommand();
		MemoryContextSwitchTo(data->change_cxt);
		data->last_sequences_at = now;
	}
	de_write_stream_commit(&data->body, txn->xid, commit_lsn, txn->end_lsn,
						   txn->xact_time.commit_time);

	if (txn->end_lsn > data->last_commit_lsn)
		data->last_commit_lsn = txn->end_lsn;

	if (caught_up || data->body.len >= data->batch_bytes)
		de_plugin_seal(ctx, data, 0, data->last_commit_lsn, false);

	MemoryContextSwitchTo(old);
	MemoryContextReset(data->change_cxt);
}

/* ---------- walsender: before waiting for WAL ---------- */

/*
 * Seal and write one frame from outside a decoding callback.  No
 * transaction is being decoded, so the frame lets the embassy confirm the
 * decoding position itself.
 */
static void
de_plugin_write_outside(LogicalDecodingContext *ctx, DePluginData *data,
						uint16 flags, XLogRecPtr pos)
{
	bool		save_accept = ctx->accept_writes;
	XLogRecPtr	save_location = ctx->write_location;
	TransactionId save_xid = ctx->write_xid;
	MemoryContext old = MemoryContextSwitchTo(data->change_cxt);

	ctx->accept_writes = true;
	ctx->write_location = pos;
	ctx->write_xid = InvalidTransactionId;

	data->last_commit_lsn = pos;
	de_plugin_seal(ctx, data, flags, pos, false);

	ctx->accept_writes = save_accept;
	ctx->write_location = save_location;
	ctx->write_xid = save_xid;

	MemoryContextSwitchTo(old);
	MemoryContextReset(data->change_cxt);
}

/*
 * A position frame is due but one was sent less than the interval ago:
 * wait out the rest of the interval, unless the WAL the reader wants
 * arrives first.  Returns true when the frame should be sent now.
 */
static bool
de_plugin_position_wait(DePluginData *data, XLogRecPtr target)
{
	for (;;)
	{
		TimestampTz due = TimestampTzPlusMilliseconds(data->last_position_at,
													  DE_POSITION_INTERVAL_MS);
		long		ms;

		if (GetFlushRecPtr(NULL) >= target)
			return false;
		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), due);
		if (ms <= 0)
			return true;
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
de_plugin_before_wait(LogicalDecodingContext *ctx, DePluginData *data,
					  XLogRecPtr target)
{
	XLogRecPtr	pos = ctx->reader->EndRecPtr;

	if (data->in_txn || XLogRecPtrIsInvalid(pos))
		return;

	if (data->body.len > 0)
	{
		de_plugin_write_outside(ctx, data, 0,
								Max(pos, data->last_commit_lsn));
		return;
	}

	if (pos <= data->last_end_lsn)
		return;

	if (pos - data->last_end_lsn <= (XLogRecPtr) wal_segment_size &&
		!TimestampDifferenceExceeds(data->last_position_at,
									GetCurrentTimestamp(),
									DE_POSITION_INTERVAL_MS) &&
		!de_plugin_position_wait(data, target))
		return;

	de_plugin_write_outside(ctx, data, DE_FRAME_POSITION, pos);
	data->last_position_at = GetCurrentTimestamp();
}

/*
 * de_plugin_page_read
 *		The walsender's page_read, with a look before it waits for WAL.
 */
static int
de_plugin_page_read(XLogReaderState *state, XLogRecPtr targetPagePtr,
					int reqLen, XLogRecPtr targetRecPtr, char *readBuf)
{
	LogicalDecodingContext *ctx = (LogicalDecodingContext *) state->private_data;
	DePluginData *data = ctx->output_plugin_private;

	if (data->sealer != NULL &&
		targetPagePtr + reqLen > GetFlushRecPtr(NULL))
		de_plugin_before_wait(ctx, data, targetPagePtr + reqLen);

	return data->orig_page_read(state, targetPagePtr, reqLen, targetRecPtr,
								readBuf);
}
