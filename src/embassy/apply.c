/*-------------------------------------------------------------------------
 *
 * apply.c
 *		  Applying decoded change records to local tables at executor level.
 *
 * This is the embassy's counterpart of PostgreSQL's own apply worker
 * (replication/logical/worker.c): the records of a register's stream are
 * turned into tuples and written at executor level, as the replication
 * routines of execReplication.c do, with index maintenance and the
 * triggers that fire with session_replication_role = replica.
 *
 * NOTES
 *	  What the register committed.  Rows are stored as the register
 *	  committed them.  CHECK constraints are not evaluated (the register
 *	  decided on them: a row older than a NOT VALID constraint, or one that a
 *	  constraint only the embassy has would refuse, is still the register's
 *	  row); NOT NULL is, since a NULL cannot be stored in such a column at
 *	  all, and its error names the register's table and the row.  Stored
 *	  generated columns keep the values the register sent (it may have
 *	  computed them from tableoid, or with a function that differs here);
 *	  only those a register did not send are computed.  So inserts and
 *	  updates go through apply_insert_row() and apply_update_row(), which do
 *	  what ExecSimpleRelationInsert() and ExecSimpleRelationUpdate() do
 *	  except ExecComputeStoredGenerated() and ExecConstraints().
 *
 *	  Relation map.  RELATION records describe the register's relations;
 *	  relmap.c maps them onto local tables by schema and table name, and
 *	  keeps the mapping until a relcache invalidation or a new RELATION
 *	  record.  Every local table a register writes to is recorded once in
 *	  data_embassy.replicated_relations, which the write guard reads.
 *
 *	  Per-transaction state.  The first change to a relation in a local
 *	  transaction opens it (RowExclusiveLock, held to commit) with one
 *	  EState, ResultRelInfo, open indexes and slots, reused by every row of
 *	  that relation until commit.  Per-row work happens in a memory context
 *	  reset after every record, so memory is bounded by the frame, not by
 *	  the transaction.  (One exception is PostgreSQL's own: a transaction
 *	  that updates or deletes rows it wrote itself keeps a combo command ID
 *	  per such row until commit, in core's apply worker as in any session.)
 *
 *	  Inserts.  Runs of INSERT records into one table are converted into a
 *	  buffer of slots and written with table_multi_insert(), then indexed
 *	  row by row, as COPY FROM does (multi_insert.c).  The buffer is
 *	  flushed when full, when another record comes, at the end of each
 *	  frame, and before commit.  Tables with row triggers that fire on
 *	  insert, and partitioned tables, take the single-row path.
 *
 *	  Exactly once.  COMMIT commits the local transaction with the
 *	  replication origin advanced to the register's commit end LSN, so
 *	  progress and changes are durable together.  A transaction that the
 *	  origin shows as already applied is skipped (from BEGIN) or rolled back
 *	  (at COMMIT).  So is the one transaction the DBA named with skip()
 *	  (de_apply_set_skip_lsn): nothing of it is applied, and at its COMMIT
 *	  a local transaction records the skip (catalog.c) and advances the
 *	  origin past it, so it is never asked for again.  The pairs (local
 *	  commit end, remote end LSN) are kept so that feedback confirms only
 *	  what is flushed here, as core's
 *	  store_flush_position()/get_flush_position() do.
 *
 *	  Tables copied again.  While resync_table copies a table, its changes
 *	  are handed to table_sync.c (apply_table_wanted()), which keeps them
 *	  aside and applies those its copy does not hold once the copy has
 *	  committed; the copy itself runs through an apply state of its own,
 *	  without an origin (de_apply_create() with InvalidRepOriginId).
 *
 * IDENTIFICATION
 *		  src/embassy/apply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/tablecmds.h"
#include "commands/trigger.h"
#include "executor/execPartition.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "pgstat.h"
#include "replication/origin.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "embassy/apply.h"
#include "embassy/catalog.h"
#include "seal/codec.h"
#include "data_embassy.h"
#include "embassy/guard.h"
#include "embassy/lookup.h"
#include "embassy/multi_insert.h"
#include "embassy/relmap.h"
#include "embassy/table_sync.h"
#include "schema_list.h"

/* Pending flush positions kept before the oldest are merged. */
#define APPLY_MAX_FLUSH_POSITIONS	1024

/* Slots for one partition of a partitioned target. */
typedef struct ApplyPartSlots
{
	Oid			relid;
	TupleTableSlot *found;		/* the local row found for UPDATE/DELETE */
	TupleTableSlot *tuple;		/* a row in the partition's layout */
	bool	   *compare;		/* columns to compare, partition's layout */
	DeSeqLookup *seqlookup;		/* REPLICA IDENTITY FULL without an index */
} ApplyPartSlots;

/* A relation opened in the current local transaction. */
typedef struct ApplyRelState
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *relinfo;
	EPQState	epqstate;
	TupleTableSlot *remoteslot; /* virtual, local layout */
	TupleTableSlot *localslot;	/* the local row found for UPDATE/DELETE */
	TupleTableSlot *rootslot;	/* partitioned: a partition row, root layout */
	Oid			idxoid;			/* replica identity index or primary key */
	DeIndexLookup *lookup;		/* lookups through it, made at first use */
	DeSeqLookup *seqlookup;		/* without one, made at first use */
	bool	   *compare;		/* local columns the search row has */
	bool		has_triggers;	/* wrap row operations in a trigger query */
	DeInsertBuffer *insbuf;		/* runs of inserts; NULL: row by row */

	/* defaults of local columns the register does not send */
	int			ndefaults;
	int		   *defmap;
	ExprState **defexprs;

	/*
	 * Stored generated columns the register does not send (a register whose
	 * plugin predates sending them): computed here, as PostgreSQL does.
	 */
	int			ngenerated;
	int		   *genmap;
	ExprState **genexprs;

	/* partitioned target */
	ModifyTableState *mtstate;
	PartitionTupleRouting *proute;
	List	   *partslots;		/* of ApplyPartSlots */
} ApplyRelState;

/* A local commit and the register position it makes durable. */
typedef struct FlushPosition
{
	dlist_node	node;
	XLogRecPtr	local_end;
	XLogRecPtr	remote_end;
} FlushPosition;

/*
 * Where the apply stands in the register's transactions.  Every change goes
 * through apply_set_state(), which asserts that it is one of these:
 *
 *	IDLE -> IN_REMOTE_XACT		BEGIN of a transaction not applied yet
 *	IDLE -> SKIPPING			BEGIN of a transaction already applied, or
 *								of the one skip() names (also
 *								de_apply_stream_begin() with its commit)
 *	SKIPPING -> IN_REMOTE_XACT	commit of the one skip() names: a local
 *								transaction records the skip
 *	IDLE -> STREAMED			de_apply_stream_begin()
 *	IDLE -> COPYING				de_apply_copy_begin()
 *	COPYING -> COPY_DONE		COPY_END record
 *	any -> IDLE					commit, abort, or a new stream
 */
typedef enum DeApplyXactState
{
	DE_APPLY_IDLE,				/* no register transaction open */
	DE_APPLY_IN_REMOTE_XACT,	/* BEGIN seen, COMMIT not yet; local
								 * transaction open */
	DE_APPLY_SKIPPING,			/* BEGIN seen of a transaction the origin
								 * shows as applied, or that skip() names: no
								 * local transaction, changes dropped until
								 * COMMIT */
	DE_APPLY_STREAMED,			/* a transaction streamed before its commit
								 * (stream.c), applied in a local transaction
								 * (with subtransactions) */
	DE_APPLY_COPYING,			/* initial copy, before COPY_END */
	DE_APPLY_COPY_DONE			/* initial copy, COPY_END seen: waits for
								 * de_apply_commit() */
} DeApplyXactState;

/* A local table known to replicate a table of this register. */
typedef struct RecordedRel
{
	Oid			localrelid;		/* hash key */
	Oid			remoteid;		/* the register's table */
} RecordedRel;

struct DeApply
{
	MemoryContext cxt;			/* lives as long as the worker */
	MemoryContext row_cxt;		/* reset after every record */
	MemoryContext batch_cxt;	/* values of buffered inserts */
	char	   *register_name;
	RepOriginId origin;

	DeRelMap   *relmap;			/* the register's relations */
	HTAB	   *recorded;		/* RecordedRel: replicated_relations, as
								 * committed */

	/* the local transaction */
	DeApplyXactState state;		/* change with apply_set_state() only */
	uint64		copy_rows;
	XLogRecPtr	remote_final_lsn;
	TimestampTz remote_commit_time;
	TransactionId remote_xid;
	MemoryContext xact_cxt;		/* child of TopTransactionContext */
	List	   *open_rels;		/* entries with a state, in xact_cxt */
	List	   *pending_recorded;	/* local OIDs recorded, not committed (in
									 * cxt) */
	List	   *pending_remote; /* and the register's OIDs they follow */
	bool		adopt_rows;		/* de_apply_adopt_rows(): the copy has no rows */
	bool		copy_marker_seen;	/* the copy sealed DE_COPY_MODE_NO_ROWS */
	List	   *schemas;		/* de_apply_set_schemas(): NIL, every schema */
	DeRelMapEntry *buffered;	/* entry whose inserts are buffered */
	bool		buffer_snapshot;	/* snapshot pushed for the buffer */

	/* acting as a table's owner (apply_act_as_owner) */
	Oid			acting_owner;	/* InvalidOid: as the worker itself */
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel; /* -1: no GUC nest level of ours */

	/* the record being applied as it came (de_apply_set_raw), or NULL */
	const char *raw;
	size_t		raw_len;

	/*
	 * The initial copy, one subtransaction per table (de_apply_copy_begin()
	 * with per_table): copy_entry is the table whose rows run in the open
	 * one, copy_skip the register's OID of a table whose copy failed (its
	 * rows are counted, not applied).
	 */
	bool		copy_per_table;
	DeRelMapEntry *copy_entry;
	Oid			copy_relid;		/* copy_entry's local table */
	Oid			copy_skip;
	uint64		copy_table_rows;	/* rows of copy_entry received */
	uint64		copy_xact_rows; /* xact_rows when its subtransaction began */
	uint64		copy_rows_left_out; /* rows of tables whose copy failed */
	int			copy_tables_failed;
	int			copy_tables_planned;	/* the copy's sealed table count, -1
										 * until it comes */

	/* skip() */
	XLogRecPtr	skip_lsn;		/* commit LSN of the transaction to skip */
	bool		skip_requested; /* SKIPPING the one skip() names */

	/* progress */
	dlist_head	flush_positions;
	int			nflush_positions;
	XLogRecPtr	last_local_end; /* highest local commit end noted */
	XLogRecPtr	flushed;
	XLogRecPtr	last_applied;
	uint64		rows;			/* committed, not yet taken */
	uint64		xact_rows;		/* applied in the open transaction */

	/* error context */
	char		err_type;
	DeRelMapEntry *err_rel;
	int			err_att;
	TupleTableSlot *err_slot;	/* the row at hand, local layout, or NULL */
	bool		err_describing; /* describing err_slot (an error there must
								 * not describe it again) */

};

static void apply_error_callback(void *arg);
static inline void apply_set_state(DeApply *apply, DeApplyXactState next);
static void apply_start_xact(DeApply *apply);
static void apply_forget_xact(DeApply *apply, bool committed);
static bool apply_is_skip_target(DeApply *apply, XLogRecPtr commit_lsn);
static void apply_record_skip(DeApply *apply);
static void apply_handle_begin(DeApply *apply, DeRecord *rec);
static void apply_handle_commit(DeApply *apply, DeRecord *rec);
static void apply_handle_relation(DeApply *apply, DeRecord *rec);
static void apply_copy_table_begin(DeApply *apply, DeRelMapEntry *entry,
								   Oid relid);
static bool apply_table_trouble(int sqlerrcode);
static void apply_handle_insert(DeApply *apply, DeRecord *rec);
static void apply_handle_update(DeApply *apply, DeRecord *rec);
static void apply_handle_delete(DeApply *apply, DeRecord *rec);
static void apply_handle_truncate(DeApply *apply, DeRecord *rec);
static void apply_handle_message(DeApply *apply, DeRecord *rec);
static void apply_handle_sequences(DeApply *apply, DeRecord *rec);
static void apply_handle_copy_end(DeApply *apply, DeRecord *rec);
static DeRelMapEntry *apply_get_entry(DeApply *apply, Oid remoteid);
static bool apply_table_wanted(DeApply *apply, DeRelMapEntry *entry,
							   bool can_defer);
static bool apply_same_description(DeRelMapEntry *entry, DeRecord *rec);
static void apply_record_replicated(DeApply *apply, DeRelMapEntry *entry,
									Relation rel);
static bool apply_rel_has_rows(Relation rel);
static ApplyRelState *apply_rel_open(DeApply *apply, DeRelMapEntry *entry);
static void apply_rel_close(DeRelMapEntry *entry);
static void apply_close_rels(DeApply *apply);
static void apply_store_tuple(DeApply *apply, DeRelMapEntry *entry,
							  DeTuple *tup, TupleTableSlot *slot,
							  TupleTableSlot *oldslot, bool is_search);
static Datum apply_convert_value(DeApply *apply, DeRelMapEntry *entry,
								 int remoteatt, DeValue *val);
static void apply_fill_defaults(ApplyRelState *state, TupleTableSlot *slot);
static void apply_fill_generated(ApplyRelState *state, TupleTableSlot *slot);
static void apply_check_not_null(DeApply *apply, DeRelMapEntry *entry,
								 ResultRelInfo *relinfo,
								 TupleTableSlot *slot);
static void apply_insert_row(DeApply *apply, DeRelMapEntry *entry,
							 ResultRelInfo *relinfo, TupleTableSlot *slot);
static void apply_update_row(DeApply *apply, DeRelMapEntry *entry,
							 ResultRelInfo *relinfo,
							 TupleTableSlot *searchslot,
							 TupleTableSlot *slot);
static void apply_buffer_insert(DeApply *apply, DeRelMapEntry *entry,
								DeTuple *tup);
static void apply_flush_inserts(DeApply *apply);
static void apply_begin_row(ApplyRelState *state);
static void apply_end_row(ApplyRelState *state);
static bool apply_find_tuple(DeRelMapEntry *entry, ApplyRelState *state);
static bool apply_find_in_partition(ApplyRelState *state,
									ResultRelInfo *partinfo,
									ApplyPartSlots *ps,
									TupleTableSlot *searchslot);
static ApplyPartSlots *apply_part_slots(ApplyRelState *state,
										ResultRelInfo *partinfo);
static TupleTableSlot *apply_to_partition(ApplyRelState *state,
										  ResultRelInfo *partinfo,
										  TupleTableSlot *slot);
static ResultRelInfo *apply_find_partition(ApplyRelState *state,
										   TupleTableSlot *slot);
static void apply_route_insert(DeApply *apply, DeRelMapEntry *entry,
							   TupleTableSlot *slot);
static void apply_not_found(DeRelMapEntry *entry, CmdType cmd);
static void apply_store_flush_position(DeApply *apply, XLogRecPtr local_end,
									   XLogRecPtr remote_end);
static void apply_settle(DeApply *apply);
static void apply_act_as_owner(DeApply *apply, Relation rel);
static void apply_act_as_worker(DeApply *apply);
static void apply_act_as_truncate_owner(DeApply *apply, List *rels);

/*
 * de_apply_adopt_rows
 *		The initial copy carries no rows (add_register(..., copy_data =>
 *		false)): it must say so, sealed, and the tables it describes are
 *		adopted with the rows they hold here (the DBA vouches for them).
 */
void
de_apply_adopt_rows(DeApply *apply, bool adopt)
{
	apply->adopt_rows = adopt;
}

/*
 * de_apply_set_schemas
 *		Apply only tables and sequences of these schemas (NIL: every
 *		schema); the register is asked to send no others, but that request
 *		travels unsealed.  The list must live as long as the apply state.
 */
void
de_apply_set_schemas(DeApply *apply, List *schemas)
{
	apply->schemas = schemas;
}

/*
 * apply_ignored
 *		A relation outside the register's replicated schemas: its records
 *		are verified like any other but change nothing here.
 */
static bool
apply_ignored(DeApply *apply, DeRelMapEntry *entry)
{
	return !de_schema_list_contains(apply->schemas, entry->nspname);
}

/*
 * de_apply_create
 *		Make the apply state of one register.
 */
DeApply *
de_apply_create(MemoryContext mcxt, const char *register_name,
				RepOriginId origin)
{
	DeApply    *apply;
	HASHCTL		ctl;
	XLogRecPtr	progress;

	apply = MemoryContextAllocZero(mcxt, sizeof(DeApply));
	apply->cxt = AllocSetContextCreate(mcxt, "data_embassy apply",
									   ALLOCSET_DEFAULT_SIZES);
	apply->row_cxt = AllocSetContextCreate(apply->cxt,
										   "data_embassy apply row",
										   ALLOCSET_DEFAULT_SIZES);
	apply->batch_cxt = AllocSetContextCreate(apply->cxt,
											 "data_embassy apply insert buffer",
											 ALLOCSET_DEFAULT_SIZES);
	apply->register_name = MemoryContextStrdup(apply->cxt, register_name);
	apply->origin = origin;
	apply->relmap = de_relmap_create(apply->cxt, register_name);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(RecordedRel);
	ctl.hcxt = apply->cxt;
	apply->recorded = hash_create("data_embassy replicated relations", 64,
								  &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	dlist_init(&apply->flush_positions);
	apply->err_att = -1;

	/*
	 * Changes are applied as a replica: only ENABLE REPLICA and ENABLE ALWAYS
	 * triggers fire, which also keeps foreign keys from being checked row by
	 * row (the register has checked them).
	 */
	if (SessionReplicationRole != SESSION_REPLICATION_ROLE_REPLICA)
		SetConfigOption("session_replication_role", "replica",
						PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Without an origin: a table's copy of its own (table_sync.c), which
	 * commits its rows without moving the register's origin.
	 */
	if (origin == InvalidRepOriginId)
		return apply;

	/* Commits made in this session advance the register's origin. */
	replorigin_session_origin = origin;

	/*
	 * Start from what the origin has durably applied.  Flushing here covers
	 * commits of an earlier worker whose WAL may not have been flushed yet,
	 * so that the first feedback never confirms more than is durable.
	 */
	progress = replorigin_session_get_progress(true);
	apply->flushed = progress;
	apply->last_applied = progress;

	return apply;
}

/*
 * de_apply_reset_stream
 *		Forget the relation map and abort any local transaction left open.
 */
void
de_apply_reset_stream(DeApply *apply)
{
	/*
	 * Everything opened for the transaction (relations, slots, executor
	 * states) belongs to it and goes with the abort.
	 */
	AbortOutOfAnyTransaction();
	apply_forget_xact(apply, false);
	MemoryContextReset(apply->batch_cxt);
	MemoryContextReset(apply->row_cxt);
	de_relmap_reset(apply->relmap);
	de_table_sync_stream_reset();
}

/*
 * de_apply_record
 *		Apply one record of the stream.
 */
void
de_apply_record(DeApply *apply, DeRecord *rec)
{
	ErrorContextCallback errcallback;
	MemoryContext oldcxt;

	/* frames reach 64 MB: let a signal in between any two records */
	CHECK_FOR_INTERRUPTS();

	apply->err_type = rec->type;
	apply->err_rel = NULL;
	apply->err_att = -1;
	apply->err_slot = NULL;
	apply->err_describing = false;
	errcallback.callback = apply_error_callback;
	errcallback.arg = apply;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	/*
	 * The local transaction was aborted under us (an error the caller
	 * caught): what it owned is gone.  The stream must be restarted, and
	 * change records now fail as being outside a transaction.
	 */
	if (apply->xact_cxt != NULL && !IsTransactionState())
		apply_forget_xact(apply, false);

	/* A run of inserts ends at any other record. */
	if (apply->buffered != NULL &&
		(rec->type != DE_REC_INSERT || rec->relid != apply->buffered->remoteid))
		apply_flush_inserts(apply);

	oldcxt = MemoryContextSwitchTo(apply->row_cxt);

	switch (rec->type)
	{
		case DE_REC_BEGIN:
			apply_handle_begin(apply, rec);
			break;
		case DE_REC_COMMIT:
			apply_handle_commit(apply, rec);
			break;
		case DE_REC_RELATION:
			apply_handle_relation(apply, rec);
			break;
		case DE_REC_INSERT:
			apply_handle_insert(apply, rec);
			break;
		case DE_REC_UPDATE:
			apply_handle_update(apply, rec);
			break;
		case DE_REC_DELETE:
			apply_handle_delete(apply, rec);
			break;
		case DE_REC_TRUNCATE:
			apply_handle_truncate(apply, rec);
			break;
		case DE_REC_MESSAGE:
			apply_handle_message(apply, rec);
			break;
		case DE_REC_COPY_END:
			apply_handle_copy_end(apply, rec);
			break;
		case DE_REC_SEQUENCES:
			apply_handle_sequences(apply, rec);
			break;
		default:
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("invalid record type \"%c\" in stream of register \"%s\"",
						   rec->type, apply->register_name));
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(apply->row_cxt);

	error_context_stack = errcallback.previous;
	apply->err_type = 0;
	apply->err_rel = NULL;
	apply->err_slot = NULL;
	apply->raw = NULL;
}

/*
 * de_apply_set_raw
 *		The record the next de_apply_record() applies, as it came: a change
 *		to a table being copied again is deferred as such (table_sync.c).
 */
void
de_apply_set_raw(DeApply *apply, const char *raw, size_t len)
{
	apply->raw = raw;
	apply->raw_len = len;
}

/*
 * de_apply_commit_local
 *		Commit the local transaction without moving the origin: the
 *		deferred changes of a table copied again, applied after its copy
 *		(their register transactions are behind the origin already).
 */
void
de_apply_commit_local(DeApply *apply)
{
	if (!IsTransactionState())
		elog(ERROR, "no local transaction to commit");
	if (apply->buffered != NULL)
		apply_flush_inserts(apply);
	apply_close_rels(apply);
	apply_act_as_worker(apply);
	replorigin_session_origin_lsn = InvalidXLogRecPtr;
	replorigin_session_origin_timestamp = 0;
	CommitTransactionCommand();
	pgstat_report_stat(false);
	apply_forget_xact(apply, true);
}

/*
 * de_apply_frame_end
 *		Write buffered inserts before the frame body goes away.
 */
void
de_apply_frame_end(DeApply *apply)
{
	ErrorContextCallback errcallback;

	if (apply->buffered == NULL)
	{
		/* between frames the worker is itself again */
		apply_act_as_worker(apply);
		return;
	}

	apply->err_type = DE_REC_INSERT;
	apply->err_slot = NULL;
	apply->err_describing = false;
	errcallback.callback = apply_error_callback;
	errcallback.arg = apply;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	apply_flush_inserts(apply);

	error_context_stack = errcallback.previous;
	apply->err_type = 0;
	apply->err_rel = NULL;
}

bool
de_apply_in_transaction(DeApply *apply)
{
	return apply->state != DE_APPLY_IDLE;
}

/*
 * de_apply_copy_begin
 *		Start the local transaction the whole initial copy runs in; with
 *		per_table, each table's rows in a subtransaction of their own, so
 *		that one table's trouble leaves the others copied (see
 *		de_apply_copy_table_failed()).
 */
void
de_apply_copy_begin(DeApply *apply, bool per_table)
{
	if (apply->state != DE_APPLY_IDLE)
		elog(ERROR, "initial copy started inside a transaction");

	apply_start_xact(apply);
	apply_set_state(apply, DE_APPLY_COPYING);
	apply->copy_rows = 0;
	apply->copy_marker_seen = false;
	apply->copy_per_table = per_table;
	apply->copy_entry = NULL;
	apply->copy_skip = InvalidOid;
	apply->copy_rows_left_out = 0;
	apply->copy_tables_failed = 0;
	apply->copy_tables_planned = -1;
	apply->remote_xid = InvalidTransactionId;
	apply->remote_final_lsn = InvalidXLogRecPtr;
}

bool
de_apply_copy_done(DeApply *apply)
{
	return apply->state == DE_APPLY_COPY_DONE;
}

/*
 * de_apply_commit
 *		Commit the local transaction with the origin advanced to remote_lsn.
 *
 * The caller's memory context is current again on return; it must not be
 * one that the transaction owns.
 */
void
de_apply_commit(DeApply *apply, XLogRecPtr remote_lsn,
				TimestampTz commit_time)
{
	ErrorContextCallback errcallback;
	ErrorContextCallback *saved_stack = error_context_stack;
	MemoryContext oldcxt = CurrentMemoryContext;
	XLogRecPtr	progress;
	bool		committed;
	bool		skipped = false;
	char		saved_type = apply->err_type;

	/* Called for a COMMIT record, the context is already there. */
	apply->err_type = DE_REC_COMMIT;
	apply->err_slot = NULL;
	if (saved_stack == NULL || saved_stack->callback != apply_error_callback ||
		saved_stack->arg != apply)
	{
		errcallback.callback = apply_error_callback;
		errcallback.arg = apply;
		errcallback.previous = error_context_stack;
		error_context_stack = &errcallback;
	}

	if (apply->state == DE_APPLY_SKIPPING)
	{
		Assert(apply->skip_requested);
		apply_record_skip(apply);
		skipped = true;
	}
	if (!IsTransactionState())
		elog(ERROR, "no local transaction to commit");

	if (apply->state == DE_APPLY_COPYING)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("initial copy of register \"%s\" ended before its COPY_END record",
					   apply->register_name));

	if (apply->buffered != NULL)
		apply_flush_inserts(apply);
	apply_close_rels(apply);
	apply_act_as_worker(apply);

	progress = apply->origin != InvalidRepOriginId ?
		replorigin_session_get_progress(false) : InvalidXLogRecPtr;
	if (!XLogRecPtrIsInvalid(progress) && remote_lsn <= progress)
	{
		if (apply->state == DE_APPLY_COPY_DONE)
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("initial copy of register \"%s\" ends at %X/%X, which is not past the position already applied (%X/%X)",
						   apply->register_name, LSN_FORMAT_ARGS(remote_lsn),
						   LSN_FORMAT_ARGS(progress)));

		/*
		 * The origin already shows this transaction as applied: applying it
		 * twice would break exactly-once, so roll it back.
		 */
		ereport(LOG,
				errmsg("skipping transaction of register \"%s\" ending at %X/%X, already applied up to %X/%X",
					   apply->register_name, LSN_FORMAT_ARGS(remote_lsn),
					   LSN_FORMAT_ARGS(progress)));
		AbortCurrentTransaction();
		committed = false;
	}
	else
	{
		replorigin_session_origin_lsn = remote_lsn;
		replorigin_session_origin_timestamp = commit_time;
		CommitTransactionCommand();
		replorigin_session_origin_lsn = InvalidXLogRecPtr;
		replorigin_session_origin_timestamp = 0;

		/* Maybe report table statistics, as core's apply worker does. */
		pgstat_report_stat(false);
		committed = true;

		if (skipped)
		{
			ereport(LOG,
					errmsg("register \"%s\": skipped transaction %u, finished at %X/%X, committed at %s, as data_embassy.skip() asked",
						   apply->register_name, apply->remote_xid,
						   LSN_FORMAT_ARGS(apply->remote_final_lsn),
						   timestamptz_to_str(apply->remote_commit_time)));
			apply->skip_lsn = InvalidXLogRecPtr;
		}
	}

	apply_forget_xact(apply, committed);
	apply_store_flush_position(apply, XactLastCommitEnd, remote_lsn);
	if (remote_lsn > apply->last_applied)
		apply->last_applied = remote_lsn;

	MemoryContextSwitchTo(oldcxt);
	error_context_stack = saved_stack;
	apply->err_type = saved_type;
}

/*
 * de_apply_stream_begin
 *		Start the local transaction of a transaction the register streams
 *		before its commit (stream.c): its commit LSN is not known yet, so
 *		whether it was already applied is decided at its commit.
 */
void
de_apply_stream_begin(DeApply *apply, TransactionId xid,
					  XLogRecPtr commit_lsn, TimestampTz commit_time)
{
	if (apply->state != DE_APPLY_IDLE)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("streamed transaction %u starts inside a transaction in stream of register \"%s\"",
					   xid, apply->register_name));

	apply->remote_final_lsn = commit_lsn;
	apply->remote_commit_time = commit_time;
	apply->remote_xid = xid;

	/*
	 * The transaction skip() names, replayed from its spool file at its
	 * commit: its changes are dropped, de_apply_commit() records the skip.
	 */
	if (apply_is_skip_target(apply, commit_lsn))
	{
		apply->skip_requested = true;
		apply_set_state(apply, DE_APPLY_SKIPPING);
		return;
	}

	apply_set_state(apply, DE_APPLY_STREAMED);
	apply_start_xact(apply);
}

/*
 * de_apply_set_skip_lsn
 *		The commit LSN of the transaction skip() names (registers.skip_lsn),
 *		or InvalidXLogRecPtr.
 */
void
de_apply_set_skip_lsn(DeApply *apply, XLogRecPtr skip_lsn)
{
	apply->skip_lsn = skip_lsn;
}

/*
 * de_apply_failed_transaction
 *		Was the error being handled raised while applying a register
 *		transaction?  If so, its xid, its commit LSN (invalid while it is
 *		streamed in progress) and whether it was streamed.  Called before
 *		the stream is reset.
 */
bool
de_apply_failed_transaction(DeApply *apply, TransactionId *xid,
							XLogRecPtr *commit_lsn, bool *streamed)
{
	/* an error context of ours was active: a record was being applied */
	if (apply->err_type == 0)
		return false;
	if (apply->state != DE_APPLY_IN_REMOTE_XACT &&
		apply->state != DE_APPLY_STREAMED &&
		apply->state != DE_APPLY_SKIPPING)
		return false;

	*xid = apply->remote_xid;
	*commit_lsn = apply->remote_final_lsn;
	*streamed = (apply->state == DE_APPLY_STREAMED);
	return true;
}

/*
 * apply_is_skip_target
 *		Is the transaction whose commit record is at commit_lsn the one
 *		skip() names?
 */
static bool
apply_is_skip_target(DeApply *apply, XLogRecPtr commit_lsn)
{
	return !XLogRecPtrIsInvalid(apply->skip_lsn) &&
		commit_lsn == apply->skip_lsn;
}

/*
 * apply_record_skip
 *		At the commit of the transaction skip() names: start the local
 *		transaction that records the skip and clears registers.skip_lsn;
 *		de_apply_commit() commits it with the origin advanced past the
 *		transaction.  A skip withdrawn (or replaced) meanwhile raises an
 *		error: nothing of the transaction was applied, so the worker must
 *		start again and apply it.
 */
static void
apply_record_skip(DeApply *apply)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		recorded;

	apply_start_xact(apply);
	apply_set_state(apply, DE_APPLY_IN_REMOTE_XACT);

	PushActiveSnapshot(GetTransactionSnapshot());
	recorded = de_catalog_record_skip(apply->register_name,
									  apply->remote_final_lsn,
									  apply->remote_xid,
									  apply->remote_commit_time);
	PopActiveSnapshot();
	MemoryContextSwitchTo(oldcxt);

	if (!recorded)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("skip of transaction %u of register \"%s\" was withdrawn while the worker skipped it",
					   apply->remote_xid, apply->register_name),
				errdetail("Nothing of the transaction was applied; the worker starts again to apply it."));
}

/*
 * apply_settle
 *		Write buffered inserts and close the relations of the transaction,
 *		before a subtransaction starts or ends: what they hold belongs to
 *		the subtransaction's resource owner.
 */
static void
apply_settle(DeApply *apply)
{
	/* buffered inserts, with the error context naming the transaction */
	de_apply_frame_end(apply);
	apply_close_rels(apply);
	apply_act_as_worker(apply);
}

/*
 * de_apply_subxact_begin
 *		Open a local subtransaction, so that a later rollback of the
 *		register's subtransaction can undo what follows.
 */
void
de_apply_subxact_begin(DeApply *apply)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	Assert(apply->state == DE_APPLY_STREAMED && IsTransactionState());
	apply_settle(apply);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * de_apply_subxact_end
 *		End the innermost "levels" local subtransactions: roll them back, or
 *		release them into their parents (before the commit).
 */
void
de_apply_subxact_end(DeApply *apply, int levels, bool rollback)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	Assert(apply->state == DE_APPLY_STREAMED);
	apply_settle(apply);
	while (levels-- > 0)
	{
		if (rollback)
			RollbackAndReleaseCurrentSubTransaction();
		else
			ReleaseCurrentSubTransaction();
	}

	/*
	 * A rollback took back what the subtransactions recorded in
	 * replicated_relations: forget what this transaction noted, so that the
	 * next change of each table looks at the catalog again (where what the
	 * transaction recorded before them is still visible).
	 */
	if (rollback)
	{
		list_free(apply->pending_recorded);
		apply->pending_recorded = NIL;
		list_free(apply->pending_remote);
		apply->pending_remote = NIL;
	}
	MemoryContextSwitchTo(oldcxt);
}

/*
 * de_apply_stream_abort
 *		Throw away the local transaction of a streamed transaction, with any
 *		subtransactions it has open.
 */
void
de_apply_stream_abort(DeApply *apply)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	AbortOutOfAnyTransaction();
	apply_forget_xact(apply, false);
	MemoryContextReset(apply->row_cxt);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * de_apply_note_position
 *		A register position reached with nothing to apply.
 */
void
de_apply_note_position(DeApply *apply, XLogRecPtr remote_lsn)
{
	/* Inside an open transaction a position confirms nothing yet. */
	if (apply->state != DE_APPLY_IDLE)
		return;

	apply_store_flush_position(apply, apply->last_local_end, remote_lsn);
	if (remote_lsn > apply->last_applied)
		apply->last_applied = remote_lsn;
}

/*
 * de_apply_flushed
 *		The highest register LSN whose local commit is flushed.
 */
XLogRecPtr
de_apply_flushed(DeApply *apply)
{
	XLogRecPtr	local_flush = GetFlushRecPtr(NULL);
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &apply->flush_positions)
	{
		FlushPosition *pos = dlist_container(FlushPosition, node, iter.cur);

		/* Positions are in commit order: stop at the first not flushed. */
		if (pos->local_end > local_flush)
			break;
		if (pos->remote_end > apply->flushed)
			apply->flushed = pos->remote_end;
		dlist_delete(iter.cur);
		pfree(pos);
		apply->nflush_positions--;
	}

	return apply->flushed;
}

XLogRecPtr
de_apply_last_applied(DeApply *apply)
{
	return apply->last_applied;
}

uint64
de_apply_take_row_count(DeApply *apply)
{
	uint64		rows = apply->rows;

	apply->rows = 0;
	return rows;
}

/*
 * apply_store_flush_position
 *		Remember that remote_end is durable once local_end is flushed.
 *
 * Local ends are kept non-decreasing (a transaction that wrote nothing has
 * no commit record of its own, and must wait for the commits before it),
 * so that the list can be shortened by dropping its oldest entries: a later
 * entry confirms everything an earlier one would have.
 */
static void
apply_store_flush_position(DeApply *apply, XLogRecPtr local_end,
						   XLogRecPtr remote_end)
{
	FlushPosition *pos;

	if (XLogRecPtrIsInvalid(remote_end) || remote_end <= apply->flushed)
		return;

	if (local_end < apply->last_local_end)
		local_end = apply->last_local_end;
	apply->last_local_end = local_end;

	if (apply->nflush_positions >= APPLY_MAX_FLUSH_POSITIONS)
	{
		(void) de_apply_flushed(apply);
		while (apply->nflush_positions >= APPLY_MAX_FLUSH_POSITIONS)
		{
			dlist_node *head = dlist_pop_head_node(&apply->flush_positions);

			pfree(dlist_container(FlushPosition, node, head));
			apply->nflush_positions--;
		}
	}

	pos = MemoryContextAlloc(apply->cxt, sizeof(FlushPosition));
	pos->local_end = local_end;
	pos->remote_end = remote_end;
	dlist_push_tail(&apply->flush_positions, &pos->node);
	apply->nflush_positions++;
}

/*
 * apply_error_callback
 *		Name the table, the column and the row at hand, then the record,
 *		the register and the register's transaction, in the shape of core's
 *		apply_error_callback(): the transaction's xid, the LSN of its commit
 *		record ("finished at") and its commit time, or "in progress" for a
 *		transaction applied as the register streams it, before its commit.
 *		The innermost line comes first, as error context stacks do.
 */
static void
apply_error_callback(void *arg)
{
	DeApply    *apply = (DeApply *) arg;
	DeRelMapEntry *rel = apply->err_rel;
	const char *type;

	if (apply->err_type == 0)
		return;

	if (rel != NULL)
	{
		const char *column = NULL;
		StringInfoData key;

		if (apply->err_att >= 0 && apply->err_att < rel->natts)
			column = rel->atts[apply->err_att].name;

		/* describing the row must not recurse if it fails itself */
		initStringInfo(&key);
		if (apply->err_slot != NULL && !apply->err_describing)
		{
			apply->err_describing = true;
			de_relmap_describe_row(rel, apply->err_slot, &key);
			apply->err_describing = false;
		}

		if (column != NULL && key.len > 0)
			errcontext("replication target relation \"%s.%s\" column \"%s\", row %s",
					   rel->nspname, rel->relname, column, key.data);
		else if (column != NULL)
			errcontext("replication target relation \"%s.%s\" column \"%s\"",
					   rel->nspname, rel->relname, column);
		else if (key.len > 0)
			errcontext("replication target relation \"%s.%s\", row %s",
					   rel->nspname, rel->relname, key.data);
		else
			errcontext("replication target relation \"%s.%s\"",
					   rel->nspname, rel->relname);
		pfree(key.data);
	}

	type = de_record_type_name(apply->err_type);
	switch (apply->state)
	{
		case DE_APPLY_IDLE:
			errcontext("processing %s record of register \"%s\"",
					   type, apply->register_name);
			break;
		case DE_APPLY_COPYING:
		case DE_APPLY_COPY_DONE:
			/* a table's copy of its own has no origin (table_sync.c) */
			if (apply->origin == InvalidRepOriginId)
				errcontext("processing %s record of register \"%s\" during a new copy of the table",
						   type, apply->register_name);
			else
				errcontext("processing %s record of register \"%s\" during the initial copy",
						   type, apply->register_name);
			break;
		case DE_APPLY_STREAMED:
			if (XLogRecPtrIsInvalid(apply->remote_final_lsn))
			{
				errcontext("processing %s record of register \"%s\" in streamed transaction %u, in progress",
						   type, apply->register_name, apply->remote_xid);
				break;
			}
			/* replayed from its spool file: its commit is known */
			/* FALLTHROUGH */
		case DE_APPLY_IN_REMOTE_XACT:
		case DE_APPLY_SKIPPING:
			errcontext("processing %s record of register \"%s\" in transaction %u, finished at %X/%X, committed at %s",
					   type, apply->register_name, apply->remote_xid,
					   LSN_FORMAT_ARGS(apply->remote_final_lsn),
					   timestamptz_to_str(apply->remote_commit_time));
			break;
	}
}

/*
 * apply_set_state
 *		Move to the next transaction state, asserting that the step is one
 *		of those listed at DeApplyXactState.
 */
static inline void
apply_set_state(DeApply *apply, DeApplyXactState next)
{
#ifdef USE_ASSERT_CHECKING
	switch (next)
	{
		case DE_APPLY_IDLE:
			break;
		case DE_APPLY_IN_REMOTE_XACT:
			Assert(apply->state == DE_APPLY_IDLE ||
				   (apply->state == DE_APPLY_SKIPPING && apply->skip_requested));
			break;
		case DE_APPLY_SKIPPING:
		case DE_APPLY_STREAMED:
		case DE_APPLY_COPYING:
			Assert(apply->state == DE_APPLY_IDLE);
			break;
		case DE_APPLY_COPY_DONE:
			Assert(apply->state == DE_APPLY_COPYING);
			break;
	}
#endif
	apply->state = next;
}

/*
 * apply_start_xact
 *		Start the local transaction of a register transaction or a copy.
 */
static void
apply_start_xact(DeApply *apply)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	if (!IsTransactionState())
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
	}
	apply->xact_cxt = AllocSetContextCreate(TopTransactionContext,
											"data_embassy apply transaction",
											ALLOCSET_DEFAULT_SIZES);
	apply->open_rels = NIL;
	MemoryContextSwitchTo(oldcxt);
}

/*
 * apply_forget_xact
 *		Drop every reference to the local transaction, after its commit or
 *		abort (which freed what it owned).
 */
static void
apply_forget_xact(DeApply *apply, bool committed)
{
	ListCell   *lc;
	ListCell   *lc2;

	/* Rows and relations of a committed transaction count. */
	if (committed)
	{
		apply->rows += apply->xact_rows;

		forboth(lc, apply->pending_recorded, lc2, apply->pending_remote)
		{
			Oid			relid = lfirst_oid(lc);
			RecordedRel *rr;

			rr = hash_search(apply->recorded, &relid, HASH_ENTER, NULL);
			rr->remoteid = lfirst_oid(lc2);
		}
	}
	list_free(apply->pending_recorded);
	apply->pending_recorded = NIL;
	list_free(apply->pending_remote);
	apply->pending_remote = NIL;
	apply->xact_rows = 0;

	de_relmap_forget_states(apply->relmap);

	/*
	 * A commit came after apply_act_as_worker(); an abort has restored the
	 * user and the GUCs itself.
	 */
	apply->acting_owner = InvalidOid;

	apply->xact_cxt = NULL;
	apply->open_rels = NIL;
	apply->copy_entry = NULL;
	apply->copy_skip = InvalidOid;
	apply->buffered = NULL;
	apply->buffer_snapshot = false;
	apply->skip_requested = false;
	apply_set_state(apply, DE_APPLY_IDLE);
	MemoryContextReset(apply->batch_cxt);
}

/*
 * apply_handle_begin
 *		Start a local transaction, or skip one already applied.
 */
static void
apply_handle_begin(DeApply *apply, DeRecord *rec)
{
	XLogRecPtr	progress;

	if (apply->state != DE_APPLY_IDLE)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("BEGIN record inside a transaction in stream of register \"%s\"",
					   apply->register_name));

	apply->remote_final_lsn = rec->lsn;
	apply->remote_commit_time = rec->commit_time;
	apply->remote_xid = rec->xid;

	/*
	 * The origin's progress is the end of the last commit applied; a
	 * transaction whose commit record starts before it is already here.
	 * Applying it again would fail on unique keys or, worse, not fail.
	 */
	progress = replorigin_session_get_progress(false);
	if (!XLogRecPtrIsInvalid(progress) && rec->lsn < progress)
	{
		apply_set_state(apply, DE_APPLY_SKIPPING);
		return;
	}

	/* the transaction skip() names: nothing of it until its COMMIT */
	if (apply_is_skip_target(apply, rec->lsn))
	{
		apply->skip_requested = true;
		apply_set_state(apply, DE_APPLY_SKIPPING);
		return;
	}

	apply_start_xact(apply);
	apply_set_state(apply, DE_APPLY_IN_REMOTE_XACT);
}

/*
 * apply_handle_commit
 *		Commit the register's transaction locally.
 */
static void
apply_handle_commit(DeApply *apply, DeRecord *rec)
{
	if (apply->state != DE_APPLY_IN_REMOTE_XACT &&
		apply->state != DE_APPLY_SKIPPING)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("COMMIT record outside a transaction in stream of register \"%s\"",
					   apply->register_name));

	if (apply->state == DE_APPLY_SKIPPING && !apply->skip_requested)
	{
		ereport(LOG,
				errmsg("skipped transaction %u of register \"%s\" ending at %X/%X, which was already applied",
					   apply->remote_xid, apply->register_name,
					   LSN_FORMAT_ARGS(rec->end_lsn)));
		apply_set_state(apply, DE_APPLY_IDLE);
		apply_store_flush_position(apply, apply->last_local_end,
								   rec->end_lsn);
		if (rec->end_lsn > apply->last_applied)
			apply->last_applied = rec->end_lsn;
		return;
	}

	de_apply_commit(apply, rec->end_lsn, rec->commit_time);
}

/*
 * apply_check_change
 *		A change record needs an open register transaction or copy, and is
 *		dropped while skipping.  Returns false to ignore the record.
 */
static bool
apply_check_change(DeApply *apply, DeRecord *rec)
{
	if (apply->state == DE_APPLY_COPYING || apply->state == DE_APPLY_COPY_DONE)
	{
		/* a copy is rows, and its sequences before COPY_END */
		if ((rec->type != DE_REC_INSERT && rec->type != DE_REC_SEQUENCES) ||
			apply->state == DE_APPLY_COPY_DONE)
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("unexpected %s record in initial copy of register \"%s\"",
						   de_record_type_name(rec->type),
						   apply->register_name));
		return true;
	}
	if (apply->state == DE_APPLY_IDLE)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("%s record outside a transaction in stream of register \"%s\"",
					   de_record_type_name(rec->type), apply->register_name));
	return apply->state != DE_APPLY_SKIPPING;
}

/*
 * apply_handle_relation
 *		Remember the register's description of a relation.
 */
static void
apply_handle_relation(DeApply *apply, DeRecord *rec)
{
	DeRelMapEntry *entry = de_relmap_find(apply->relmap, rec->relid);

	/* a table being copied again, whose changes are deferred meanwhile */
	if (apply->state != DE_APPLY_COPYING && de_table_sync_any())
	{
		Oid			nsp = get_namespace_oid(rec->nspname, true);
		Oid			relid = OidIsValid(nsp) ?
		get_relname_relid(rec->relname, nsp) : InvalidOid;

		if (OidIsValid(relid))
			de_table_sync_relation(relid, entry != NULL &&
								   apply_same_description(entry, rec));
	}

	/* Rows from now on follow the new description. */
	if (entry != NULL && entry->state != NULL)
	{
		apply_rel_close(entry);
		apply->open_rels = list_delete_ptr(apply->open_rels, entry);
	}
	entry = de_relmap_update(apply->relmap, rec);

	if (apply_ignored(apply, entry))
	{
		ereport(WARNING,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("register \"%s\" sent table \"%s.%s\", which is outside the schemas it replicates here",
					   apply->register_name, entry->nspname, entry->relname),
				errdetail("Its changes are ignored.  The register was asked to leave these schemas out; the request travels unsealed and may have been removed on the way."));
		return;
	}

	/*
	 * The initial copy describes every table of the register, empty ones
	 * included: each becomes a guarded replica now, not at its first row. A
	 * table missing here is reported when a change for it arrives.
	 */
	if (apply->state == DE_APPLY_COPYING)
	{
		Oid			nsp = get_namespace_oid(entry->nspname, true);
		Oid			relid = OidIsValid(nsp) ?
		get_relname_relid(entry->relname, nsp) : InvalidOid;

		apply->copy_skip = InvalidOid;
		if (OidIsValid(relid))
		{
			Relation	rel;

			apply->err_rel = entry;
			relid = de_relmap_lock_local(entry, RowExclusiveLock);
			rel = de_relmap_open_local(apply->relmap, entry, relid);
			apply_record_replicated(apply, entry, rel);
			table_close(rel, NoLock);

			/* its rows, in a subtransaction of their own */
			if (apply->copy_per_table)
				apply_copy_table_begin(apply, entry, relid);
		}
	}
}

/*
 * apply_copy_table_begin
 *		The initial copy reaches a table's rows: open the subtransaction
 *		they are applied in.  The table is recorded as a replica (and
 *		guarded) in the copy's transaction already, whatever becomes of its
 *		rows.
 */
static void
apply_copy_table_begin(DeApply *apply, DeRelMapEntry *entry, Oid relid)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	Assert(apply->copy_entry == NULL);
	apply_settle(apply);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	apply->copy_entry = entry;
	apply->copy_relid = relid;
	apply->copy_table_rows = 0;
	apply->copy_xact_rows = apply->xact_rows;
}

/*
 * de_apply_copy_table_end
 *		The initial copy leaves a table's rows (a record other than INSERT
 *		comes): write what is buffered and release the table's
 *		subtransaction into the copy's transaction.  An error here is the
 *		table's, as one applying its rows is (de_apply_copy_table_failed()).
 */
void
de_apply_copy_table_end(DeApply *apply)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	if (apply->copy_entry == NULL)
		return;
	apply_settle(apply);
	ReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(oldcxt);
	apply->copy_entry = NULL;
}

/*
 * apply_table_trouble
 *		Is an error of this SQLSTATE one that a table here can cause with
 *		the register's rows (its columns, constraints, indexes, triggers,
 *		domains, partitions differ from the register's), rather than one of
 *		the copy as a whole (the stream, the seal, resources, a shutdown)?
 */
static bool
apply_table_trouble(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_DATA_EXCEPTION:
		case ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION:
		case ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION:
		case ERRCODE_WITH_CHECK_OPTION_VIOLATION:
		case ERRCODE_PROGRAM_LIMIT_EXCEEDED:
		case ERRCODE_FEATURE_NOT_SUPPORTED:
		case ERRCODE_TRIGGERED_ACTION_EXCEPTION:
		case ERRCODE_SQL_ROUTINE_EXCEPTION:
		case ERRCODE_EXTERNAL_ROUTINE_EXCEPTION:
		case ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION:
		case ERRCODE_PLPGSQL_ERROR:
			return true;
		default:
			return false;
	}
}

/*
 * de_apply_describe_error
 *		One line for a view: the error's message, where it happened (the
 *		first line of its context: the table, column and row key) and its
 *		detail (for a unique violation, the key).
 */
char *
de_apply_describe_error(ErrorData *edata)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, edata->message ? edata->message : "?");
	if (edata->context != NULL && edata->context[0] != '\0')
	{
		const char *nl = strchr(edata->context, '\n');

		appendStringInfoString(&buf, "; ");
		appendBinaryStringInfo(&buf, edata->context,
							   nl ? nl - edata->context :
							   (int) strlen(edata->context));
	}
	if (edata->detail != NULL)
		appendStringInfo(&buf, "; %s", edata->detail);
	return buf.data;
}

/*
 * de_apply_copy_table_failed
 *		Called by the caller of de_apply_record() and
 *		de_apply_copy_table_end() in the initial copy, with the error they
 *		raised: if it is the trouble of the table whose rows are open
 *		(apply_table_trouble()), roll back that table's subtransaction,
 *		count the table's rows that follow without applying them, record
 *		the table in state 'i' with the error (the apply worker then copies
 *		it on its own, as resync_table() does), report it as a WARNING, and
 *		return true: the copy goes on with the next table.  Otherwise return
 *		false with the error untouched, for the caller to re-throw.
 *		Memory for the report comes from cxt.
 */
bool
de_apply_copy_table_failed(DeApply *apply, MemoryContext cxt)
{
	DeRelMapEntry *entry = apply->copy_entry;
	ErrorData  *edata;
	ErrorContextCallback *saved_stack;
	char	   *why;
	char	   *relname;

	MemoryContextSwitchTo(cxt);
	if (entry == NULL || apply->state != DE_APPLY_COPYING)
		return false;
	edata = CopyErrorData();
	if (!apply_table_trouble(edata->sqlerrcode))
	{
		FreeErrorData(edata);
		return false;
	}
	FlushErrorState();

	/* What the subtransaction opened and changed goes with it. */
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	de_relmap_forget_states(apply->relmap);
	apply->open_rels = NIL;
	apply->buffered = NULL;
	apply->buffer_snapshot = false;
	apply->acting_owner = InvalidOid;
	MemoryContextReset(apply->batch_cxt);
	MemoryContextReset(apply->row_cxt);
	apply->xact_rows = apply->copy_xact_rows;
	apply->copy_rows_left_out += apply->copy_table_rows;
	apply->copy_tables_failed++;
	apply->copy_skip = entry->remoteid;
	apply->copy_entry = NULL;
	apply->err_type = 0;
	apply->err_rel = NULL;
	apply->err_slot = NULL;
	apply->err_describing = false;
	apply->raw = NULL;

	why = de_apply_describe_error(edata);
	PushActiveSnapshot(GetTransactionSnapshot());
	(void) de_catalog_fail_table_sync(apply->copy_relid, 0, why);
	PopActiveSnapshot();
	CommandCounterIncrement();

	/* the error as it was, its context included, then what became of it */
	saved_stack = error_context_stack;
	error_context_stack = NULL;
	edata->elevel = WARNING;
	ThrowErrorData(edata);
	error_context_stack = saved_stack;

	relname = quote_qualified_identifier(entry->nspname, entry->relname);
	ereport(LOG,
			errmsg("register \"%s\": table %s is left out of the initial copy; the other tables are copied",
				   apply->register_name, relname),
			errdetail("Once the copy has committed, the table is copied on its own, as resync_table() does, and again after each failure; the view data_embassy.table_resyncs shows why it failed."),
			errhint("Make the table here accept the register's rows, then call data_embassy.retry_register('%s') to copy it at once.",
					apply->register_name));
	return true;
}

/*
 * de_apply_copy_rows
 *		Rows of the running initial copy applied so far (those of tables
 *		whose copy failed not included), and tables left out.
 */
uint64
de_apply_copy_rows(DeApply *apply, int *tables_failed)
{
	if (tables_failed != NULL)
		*tables_failed = apply->copy_tables_failed;
	return apply->copy_rows - apply->copy_rows_left_out;
}

/*
 * de_apply_copy_tables_planned
 *		How many tables the running copy holds, as the register sealed it
 *		at the copy's start; -1 before that (or from a register that does
 *		not say).
 */
int
de_apply_copy_tables_planned(DeApply *apply)
{
	return apply->copy_tables_planned;
}

/*
 * apply_table_wanted
 *		Is a change to the local table of entry applied?  While a table of
 *		the register is copied again (resync_table, table_sync.c), its
 *		changes that the copy holds are not, and those that follow the copy
 *		wait for it.  A table opened in this transaction was wanted.
 */
static bool
apply_table_wanted(DeApply *apply, DeRelMapEntry *entry, bool can_defer)
{
	Oid			relid;

	if (apply->state == DE_APPLY_COPYING || !de_table_sync_any() ||
		entry->state != NULL)
		return true;
	relid = RangeVarGetRelid(makeRangeVar(entry->nspname, entry->relname, -1),
							 NoLock, true);
	if (!OidIsValid(relid))
		return true;			/* apply_rel_open() says what is missing */
	return de_table_sync_wanted(relid, apply->remote_final_lsn,
								can_defer ? apply->raw : NULL,
								apply->raw_len);
}

/*
 * apply_same_description
 *		Does a RELATION record describe the relation as entry does?
 */
static bool
apply_same_description(DeRelMapEntry *entry, DeRecord *rec)
{
	if (entry->natts != rec->natts || entry->replident != rec->replident)
		return false;
	for (int i = 0; i < rec->natts; i++)
	{
		DeAttribute *a = &entry->atts[i];
		DeAttribute *b = &rec->atts[i];

		if (strcmp(a->name, b->name) != 0 || a->typoid != b->typoid ||
			a->typmod != b->typmod || a->is_key != b->is_key ||
			a->format != b->format)
			return false;
	}
	return true;
}

/*
 * apply_get_entry
 *		The relation a change record refers to, named in the error context
 *		from now on.
 */
static DeRelMapEntry *
apply_get_entry(DeApply *apply, Oid remoteid)
{
	DeRelMapEntry *entry = de_relmap_get(apply->relmap, remoteid);

	apply->err_rel = entry;
	return entry;
}

/*
 * apply_record_replicated
 *		Make sure the local table rel is the replica of the register's table
 *		of entry, and note it in data_embassy.replicated_relations the first
 *		time (the write guard reads the table; the note commits with the
 *		first change, or with the initial copy, which records every table it
 *		sends, empty ones included).
 *
 * Tables are matched by schema and name, so the register's OID of the
 * table is recorded too: a table of the same name that someone created
 * later at the register (another OID) does not take over the replica.
 * Only an initial copy, which empties and refills the register's tables,
 * may move a replica to another OID.
 *
 * Which tables here may become replicas: those the initial copy describes
 * (empty ones; with a copy without rows, add_register(..., copy_data =>
 * false), also those with rows: the DBA who skipped the copy vouches for
 * them).  After the copy, a table the register starts sending is applied
 * only into a table the DBA declared for this register: one recorded with
 * add_replicated_table() (then it is found recorded, without the
 * register's OID, and bound to it here), or an empty one in a schema named
 * in add_register(..., schemas => ...).  So a table that exists only here
 * is never taken over by a table of its name that a user of the register
 * creates there.
 */
static void
apply_record_replicated(DeApply *apply, DeRelMapEntry *entry, Relation rel)
{
	Oid			localrelid = RelationGetRelid(rel);
	bool		copying = (apply->state == DE_APPLY_COPYING);
	RecordedRel *rr;
	char	   *owner;
	Oid			remoteid;
	MemoryContext oldcxt;
	ListCell   *lc;
	ListCell   *lc2;

	rr = hash_search(apply->recorded, &localrelid, HASH_FIND, NULL);
	if (rr != NULL && rr->remoteid == entry->remoteid)
		return;
	forboth(lc, apply->pending_recorded, lc2, apply->pending_remote)
	{
		if (lfirst_oid(lc) == localrelid && lfirst_oid(lc2) == entry->remoteid)
			return;
	}

	PushActiveSnapshot(GetTransactionSnapshot());
	owner = de_catalog_relation_register(localrelid, &remoteid);
	if (owner == NULL)
	{
		char	   *nspname = get_namespace_name(RelationGetNamespace(rel));
		char	   *relname = RelationGetRelationName(rel);

		if (!copying && (apply->schemas == NIL ||
						 !de_schema_list_contains(apply->schemas, nspname)))
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("table \"%s.%s\" is not declared as a replica of register \"%s\"",
						   nspname, relname, apply->register_name),
					errdetail("The register began to send a table of this name after its initial copy; the table here was neither described by that copy nor declared for the register."),
					errhint("If the register's table should be replicated into this one, run SELECT data_embassy.add_replicated_table('%s', '%s'); then data_embassy.retry_register('%s').  Otherwise rename the table here.",
							apply->register_name,
							quote_qualified_identifier(nspname, relname),
							apply->register_name));
		if (!(copying && apply->adopt_rows && apply->copy_marker_seen) &&
			apply_rel_has_rows(rel))
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("table \"%s.%s\" has rows but is not a replica of register \"%s\"",
						   nspname, relname, apply->register_name),
					errdetail("The register sends a table of this name, but the rows here did not come from it."),
					errhint("Empty or rename the table here if the register's table should replace it."));
		de_catalog_add_relation(apply->register_name, localrelid,
								entry->remoteid);
	}
	else if (strcmp(owner, apply->register_name) != 0)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("table \"%s\" is already replicated from register \"%s\"",
					   RelationGetRelationName(rel), owner),
				errdetail("A table can be the replica of one register only."));
	else if (OidIsValid(remoteid) && remoteid != entry->remoteid && !copying)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("table \"%s.%s\" replicates another table of register \"%s\"",
					   get_namespace_name(RelationGetNamespace(rel)),
					   RelationGetRelationName(rel), apply->register_name),
				errdetail("It replicates the register's table with OID %u; the register now sends a table of the same name with OID %u, created there later.",
						  remoteid, entry->remoteid),
				errhint("If the register's table was dropped and created again, copy the register again with data_embassy.resync_register('%s').",
						apply->register_name));
	else if (remoteid != entry->remoteid)
		de_catalog_set_relation_remote(localrelid, entry->remoteid);
	PopActiveSnapshot();

	oldcxt = MemoryContextSwitchTo(apply->cxt);
	apply->pending_recorded = lappend_oid(apply->pending_recorded, localrelid);
	apply->pending_remote = lappend_oid(apply->pending_remote, entry->remoteid);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * apply_rel_has_rows
 *		Does the table (or any of its partitions) hold a row visible now?
 */
static bool
apply_rel_has_rows(Relation rel)
{
	bool		found = false;
	List	   *relids;
	ListCell   *lc;

	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		relids = find_all_inheritors(RelationGetRelid(rel), AccessShareLock,
									 NULL);
	else
		relids = list_make1_oid(RelationGetRelid(rel));

	foreach(lc, relids)
	{
		Relation	r;
		TableScanDesc scan;
		TupleTableSlot *slot;

		r = table_open(lfirst_oid(lc), AccessShareLock);
		if (r->rd_rel->relkind == RELKIND_RELATION)
		{
			slot = table_slot_create(r, NULL);
			scan = table_beginscan(r, GetActiveSnapshot(), 0, NULL);
			found = table_scan_getnextslot(scan, ForwardScanDirection, slot);
			table_endscan(scan);
			ExecDropSingleTupleTableSlot(slot);
		}
		table_close(r, AccessShareLock);
		if (found)
			break;
	}
	return found;
}

/*
 * apply_rel_open
 *		Open a relation for the rest of the local transaction.
 */
static ApplyRelState *
apply_rel_open(DeApply *apply, DeRelMapEntry *entry)
{
	ApplyRelState *state;
	Relation	rel;
	Oid			relid;
	MemoryContext oldcxt;
	RangeTblEntry *rte;
	EState	   *estate;
	TupleDesc	desc;
	int			i;

	if (entry->state != NULL)
		return entry->state;
	if (apply->xact_cxt == NULL)
		elog(ERROR, "no local transaction is open");

	relid = de_relmap_lock_local(entry, RowExclusiveLock);
	rel = de_relmap_open_local(apply->relmap, entry, relid);
	apply_record_replicated(apply, entry, rel);

	oldcxt = MemoryContextSwitchTo(apply->xact_cxt);

	state = palloc0(sizeof(ApplyRelState));
	state->rel = rel;
	state->estate = estate = CreateExecutorState();

	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = AccessShareLock;
	ExecInitRangeTable(estate, list_make1(rte));

	state->relinfo = makeNode(ResultRelInfo);
	InitResultRelInfo(state->relinfo, rel, 1, NULL, 0);

	/*
	 * As core's apply worker does: listed so that ExecGetTriggerResultRel()
	 * finds it, but never closed through the EState (we hold the relation).
	 */
	estate->es_opened_result_relations =
		lappend(estate->es_opened_result_relations, state->relinfo);
	estate->es_output_cid = GetCurrentCommandId(true);

	MemoryContextSwitchTo(estate->es_query_cxt);

	desc = RelationGetDescr(rel);
	state->remoteslot = ExecInitExtraTupleSlot(estate, desc, &TTSOpsVirtual);
	state->localslot = table_slot_create(rel, &estate->es_tupleTable);
	EvalPlanQualInit(&state->epqstate, estate, NULL, NIL, -1);

	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
	{
		/* Rows are routed to partitions, which open their own indexes. */
		state->mtstate = makeNode(ModifyTableState);
		state->mtstate->ps.plan = NULL;
		state->mtstate->ps.state = estate;
		state->mtstate->operation = CMD_INSERT;
		state->mtstate->resultRelInfo = state->relinfo;
		state->mtstate->rootResultRelInfo = state->relinfo;
		state->proute = ExecSetupPartitionTupleRouting(estate, rel);
		state->rootslot = ExecInitExtraTupleSlot(estate, desc,
												 &TTSOpsVirtual);
		state->has_triggers = true;
		state->insbuf = NULL;
	}
	else
	{
		ExecOpenIndices(state->relinfo, false);
		state->idxoid = de_relmap_identity_index(rel);
		state->has_triggers = (state->relinfo->ri_TrigDesc != NULL);
		if (de_insbuf_usable(rel))
			state->insbuf = de_insbuf_create(state->relinfo, estate,
											 apply->state == DE_APPLY_COPYING);
	}

	/*
	 * Defaults and generation expressions of the local columns the register
	 * does not send.
	 */
	state->defmap = palloc(sizeof(int) * Max(desc->natts, 1));
	state->defexprs = palloc(sizeof(ExprState *) * Max(desc->natts, 1));
	state->genmap = palloc(sizeof(int) * Max(desc->natts, 1));
	state->genexprs = palloc(sizeof(ExprState *) * Max(desc->natts, 1));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Expr	   *defexpr;

		if (att->attisdropped || entry->attrmap[i] >= 0)
			continue;

		defexpr = (Expr *) build_column_default(rel, i + 1);
		if (defexpr == NULL)
			continue;
		defexpr = expression_planner(defexpr);
		if (att->attgenerated)
		{
			state->genexprs[state->ngenerated] = ExecInitExpr(defexpr, NULL);
			state->genmap[state->ngenerated] = i;
			state->ngenerated++;
		}
		else
		{
			state->defexprs[state->ndefaults] = ExecInitExpr(defexpr, NULL);
			state->defmap[state->ndefaults] = i;
			state->ndefaults++;
		}
	}
	state->compare = palloc0(sizeof(bool) * Max(desc->natts, 1));

	MemoryContextSwitchTo(apply->xact_cxt);
	apply->open_rels = lappend(apply->open_rels, entry);
	MemoryContextSwitchTo(oldcxt);

	entry->state = state;
	return state;
}

/*
 * apply_rel_close
 *		Close a relation opened by apply_rel_open() (its lock is kept to
 *		commit).  Buffered inserts must have been written.
 */
static void
apply_rel_close(DeRelMapEntry *entry)
{
	ApplyRelState *state = entry->state;
	ListCell   *lc;

	if (state->insbuf != NULL)
		de_insbuf_end(state->insbuf);
	if (state->lookup != NULL)
		de_lookup_end(state->lookup);
	if (state->seqlookup != NULL)
		de_seqlookup_end(state->seqlookup);
	foreach(lc, state->partslots)
	{
		ApplyPartSlots *ps = (ApplyPartSlots *) lfirst(lc);

		if (ps->seqlookup != NULL)
			de_seqlookup_end(ps->seqlookup);
	}
	if (state->proute != NULL)
		ExecCleanupTupleRouting(state->mtstate, state->proute);
	EvalPlanQualEnd(&state->epqstate);
	if (state->proute == NULL)
		ExecCloseIndices(state->relinfo);

	/*
	 * The relations ExecGetTriggerResultRel() opened for triggers; what
	 * ExecCloseTrigTargetRelations() does in 15.20, which earlier minor
	 * releases lack.
	 */
	foreach(lc, state->estate->es_trig_target_relations)
		table_close(((ResultRelInfo *) lfirst(lc))->ri_RelationDesc, NoLock);
	ExecResetTupleTable(state->estate->es_tupleTable, false);
	FreeExecutorState(state->estate);
	table_close(state->rel, NoLock);

	pfree(state);
	entry->state = NULL;
}

/*
 * apply_close_rels
 *		Close every relation open in the local transaction.
 */
static void
apply_close_rels(DeApply *apply)
{
	ListCell   *lc;

	Assert(apply->buffered == NULL);

	foreach(lc, apply->open_rels)
	{
		DeRelMapEntry *entry = (DeRelMapEntry *) lfirst(lc);

		if (entry->state != NULL)
			apply_rel_close(entry);
	}
	list_free(apply->open_rels);
	apply->open_rels = NIL;
}

/*
 * apply_convert_value
 *		A value of the stream as a Datum of the local column's type.
 *
 * Values point into the frame body and are not NUL-terminated; as
 * record_recv() does, a NUL is put after the value for the duration of the
 * call (the body is writable and has a byte after its last value).
 */
static Datum
apply_convert_value(DeApply *apply, DeRelMapEntry *entry, int remoteatt,
					DeValue *val)
{
	DeRelMapColumn *col = &entry->cols[remoteatt];
	char		empty[1] = {'\0'};
	char	   *data = (val->data != NULL) ? val->data : empty;
	char		saved = data[val->len];
	Datum		result;

	apply->err_att = remoteatt;
	data[val->len] = '\0';

	if (val->kind == DE_COL_TEXT)
		result = InputFunctionCall(&col->infunc, data, col->typioparam,
								   col->typmod);
	else
	{
		StringInfoData buf;

		if (!OidIsValid(col->recvfunc.fn_oid))
			ereport(ERROR,
					errcode(ERRCODE_UNDEFINED_FUNCTION),
					errmsg("no binary input function available for type %s",
						   format_type_be(col->typid)));

		buf.data = data;
		buf.len = val->len;
		buf.maxlen = val->len + 1;
		buf.cursor = 0;
		result = ReceiveFunctionCall(&col->recvfunc, &buf, col->typioparam,
									 col->typmod);
		if (buf.cursor != buf.len)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					errmsg("incorrect binary data format in column \"%s\"",
						   entry->atts[remoteatt].name));
	}

	data[val->len] = saved;
	apply->err_att = -1;
	return result;
}

/*
 * apply_store_tuple
 *		Fill a slot of the local table's layout from a tuple of the stream.
 *
 * With oldslot, start from the local row and replace what the register
 * sent: unchanged TOAST values keep the local value (as core's
 * slot_modify_data does).  Without, columns not sent are NULL (defaults
 * come later for inserts); an unchanged TOAST value is then allowed only
 * in a search tuple, where it cannot be a key.  For a search tuple, the
 * state's compare[] notes the local columns the register gave a value (or
 * a NULL) for: the columns a row search compares.
 */
static void
apply_store_tuple(DeApply *apply, DeRelMapEntry *entry, DeTuple *tup,
				  TupleTableSlot *slot, TupleTableSlot *oldslot,
				  bool is_search)
{
	int			natts = slot->tts_tupleDescriptor->natts;
	bool	   *compare = is_search ? entry->state->compare : NULL;
	Datum	   *values;
	bool	   *isnull;
	int			i;

	if (tup->natts != entry->natts)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("tuple of table \"%s.%s\" has %d columns, but its RELATION record has %d",
					   entry->nspname, entry->relname, tup->natts,
					   entry->natts));

	ExecClearTuple(slot);
	values = slot->tts_values;
	isnull = slot->tts_isnull;

	if (oldslot != NULL)
	{
		slot_getallattrs(oldslot);
		memcpy(values, oldslot->tts_values, sizeof(Datum) * natts);
		memcpy(isnull, oldslot->tts_isnull, sizeof(bool) * natts);
	}
	else
	{
		memset(values, 0, sizeof(Datum) * natts);
		memset(isnull, true, sizeof(bool) * natts);
	}
	if (compare != NULL)
		memset(compare, false, sizeof(bool) * natts);

	for (i = 0; i < tup->natts; i++)
	{
		DeValue    *val = &tup->values[i];
		int			att = entry->cols[i].localatt;

		switch (val->kind)
		{
			case DE_COL_NULL:
				values[att] = (Datum) 0;
				isnull[att] = true;
				if (compare != NULL)
					compare[att] = true;
				break;
			case DE_COL_UNCHANGED:
				if (oldslot != NULL)
					break;
				if (!is_search)
					ereport(ERROR,
							errcode(ERRCODE_PROTOCOL_VIOLATION),
							errmsg("unchanged TOAST value for column \"%s\" of table \"%s.%s\" in a new row",
								   entry->atts[i].name, entry->nspname,
								   entry->relname));
				values[att] = (Datum) 0;
				isnull[att] = true;
				break;
			case DE_COL_TEXT:
			case DE_COL_BINARY:
				values[att] = apply_convert_value(apply, entry, i, val);
				isnull[att] = false;
				if (compare != NULL)
					compare[att] = true;
				break;
			default:
				ereport(ERROR,
						errcode(ERRCODE_PROTOCOL_VIOLATION),
						errmsg("invalid column kind \"%c\" for column \"%s\" of table \"%s.%s\"",
							   val->kind, entry->atts[i].name,
							   entry->nspname, entry->relname));
		}
	}

	ExecStoreVirtualTuple(slot);
}

/*
 * apply_fill_defaults
 *		Evaluate the defaults of local columns the register does not have,
 *		as core's slot_fill_defaults() does.
 */
static void
apply_fill_defaults(ApplyRelState *state, TupleTableSlot *slot)
{
	ExprContext *econtext;
	int			i;

	if (state->ndefaults == 0)
		return;

	econtext = GetPerTupleExprContext(state->estate);
	for (i = 0; i < state->ndefaults; i++)
	{
		int			att = state->defmap[i];

		slot->tts_values[att] = ExecEvalExpr(state->defexprs[i], econtext,
											 &slot->tts_isnull[att]);
	}
}

/*
 * apply_fill_generated
 *		Compute the stored generated columns the register did not send, as
 *		ExecComputeStoredGenerated() does.  A register that sends them (every
 *		register running this version) leaves nothing to do: the values it
 *		stored are applied as they are, whatever the expression would give
 *		here (tableoid differs, a function may have changed).
 */
static void
apply_fill_generated(ApplyRelState *state, TupleTableSlot *slot)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;
	ExprContext *econtext;
	int			i;

	if (state->ngenerated == 0)
		return;

	slot_getallattrs(slot);
	slot->tts_tableOid = RelationGetRelid(state->rel);
	econtext = GetPerTupleExprContext(state->estate);
	econtext->ecxt_scantuple = slot;
	for (i = 0; i < state->ngenerated; i++)
	{
		int			att = state->genmap[i];
		Form_pg_attribute attr = TupleDescAttr(desc, att);
		bool		isnull;
		Datum		value;

		value = ExecEvalExpr(state->genexprs[i], econtext, &isnull);
		if (!isnull)
			value = datumCopy(value, attr->attbyval, attr->attlen);
		slot->tts_values[att] = value;
		slot->tts_isnull[att] = isnull;
	}
}

/*
 * apply_check_not_null
 *		The one constraint checked on applied rows: a NULL in a column that
 *		is NOT NULL here cannot be stored.  CHECK constraints are not
 *		evaluated: the register decided on them when it committed the row
 *		(a row older than a NOT VALID constraint, a constraint the embassy
 *		alone has), and the embassy keeps what the register committed.
 */
static void
apply_check_not_null(DeApply *apply, DeRelMapEntry *entry,
					 ResultRelInfo *relinfo, TupleTableSlot *slot)
{
	Relation	rel = relinfo->ri_RelationDesc;
	TupleDesc	desc = RelationGetDescr(rel);
	bool		same = (RelationGetRelid(rel) == entry->localrelid);
	int			n = same ? entry->nnotnull : desc->natts;
	int			i;

	if (desc->constr == NULL || !desc->constr->has_not_null)
		return;

	for (i = 0; i < n; i++)
	{
		int			att = same ? entry->notnull[i] : i;
		Form_pg_attribute attr = TupleDescAttr(desc, att);
		StringInfoData key;

		if (!attr->attnotnull || attr->attisdropped ||
			!slot_attisnull(slot, att + 1))
			continue;

		initStringInfo(&key);
		apply->err_describing = true;
		de_relmap_describe_row(entry, apply->err_slot, &key);
		apply->err_describing = false;
		ereport(ERROR,
				errcode(ERRCODE_NOT_NULL_VIOLATION),
				errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
					   NameStr(attr->attname), RelationGetRelationName(rel)),
				key.len > 0 ?
				errdetail("Register \"%s\" committed a null value in column \"%s\" of its table \"%s.%s\", in the row %s.",
						  apply->register_name, NameStr(attr->attname),
						  entry->nspname, entry->relname, key.data) :
				errdetail("Register \"%s\" committed a null value in column \"%s\" of its table \"%s.%s\".",
						  apply->register_name, NameStr(attr->attname),
						  entry->nspname, entry->relname),
				errhint("Make the column nullable at the embassy, as it is at the register."),
				errtablecol(rel, att + 1));
	}
}

/*
 * apply_insert_row
 *		Insert one row as ExecSimpleRelationInsert() does, except that the
 *		row is stored as the register committed it: stored generated columns
 *		keep the register's values, and CHECK constraints are not evaluated
 *		(only NOT NULL, see apply_check_not_null()).
 */
static void
apply_insert_row(DeApply *apply, DeRelMapEntry *entry,
				 ResultRelInfo *relinfo, TupleTableSlot *slot)
{
	ApplyRelState *state = entry->state;
	EState	   *estate = state->estate;
	Relation	rel = relinfo->ri_RelationDesc;
	List	   *recheck = NIL;

	CheckCmdReplicaIdentity(rel, CMD_INSERT);

	if (relinfo->ri_TrigDesc && relinfo->ri_TrigDesc->trig_insert_before_row &&
		!ExecBRInsertTriggers(estate, relinfo, slot))
		return;					/* a trigger said "do nothing" */

	/* partitions get their generated columns in the root's layout */
	if (relinfo == state->relinfo)
		apply_fill_generated(state, slot);
	apply_check_not_null(apply, entry, relinfo, slot);
	if (rel->rd_rel->relispartition)
		ExecPartitionCheck(relinfo, slot, estate, true);

	simple_table_tuple_insert(rel, slot);
	if (relinfo->ri_NumIndices > 0)
		recheck = ExecInsertIndexTuples(relinfo, slot, estate, false, false,
										NULL, NIL);
	ExecARInsertTriggers(estate, relinfo, slot, recheck, NULL);
	list_free(recheck);
}

/*
 * apply_update_row
 *		Update the row found in searchslot to slot, as
 *		ExecSimpleRelationUpdate() does, with the same exceptions as
 *		apply_insert_row().
 */
static void
apply_update_row(DeApply *apply, DeRelMapEntry *entry,
				 ResultRelInfo *relinfo, TupleTableSlot *searchslot,
				 TupleTableSlot *slot)
{
	ApplyRelState *state = entry->state;
	EState	   *estate = state->estate;
	Relation	rel = relinfo->ri_RelationDesc;
	ItemPointer tid = &searchslot->tts_tid;
	List	   *recheck = NIL;
	bool		update_indexes;

	CheckCmdReplicaIdentity(rel, CMD_UPDATE);

	if (relinfo->ri_TrigDesc && relinfo->ri_TrigDesc->trig_update_before_row &&
		!ExecBRUpdateTriggers(estate, &state->epqstate, relinfo, tid, NULL,
							  slot, NULL))
		return;					/* a trigger said "do nothing" */

	if (relinfo == state->relinfo)
		apply_fill_generated(state, slot);
	apply_check_not_null(apply, entry, relinfo, slot);
	if (rel->rd_rel->relispartition)
		ExecPartitionCheck(relinfo, slot, estate, true);

	simple_table_tuple_update(rel, tid, slot, estate->es_snapshot,
							  &update_indexes);
	if (relinfo->ri_NumIndices > 0 && update_indexes)
		recheck = ExecInsertIndexTuples(relinfo, slot, estate, true, false,
										NULL, NIL);
	ExecARUpdateTriggers(estate, relinfo, NULL, NULL, tid, NULL, slot,
						 recheck, NULL, false);
	list_free(recheck);
}

/*
 * apply_begin_row / apply_end_row
 *		Around one row operation: a snapshot, the current command ID, a
 *		trigger query when the table has triggers; afterwards a new command
 *		so that the next row sees this one.
 */
static void
apply_begin_row(ApplyRelState *state)
{
	PushActiveSnapshot(GetTransactionSnapshot());
	state->estate->es_output_cid = GetCurrentCommandId(true);
	if (state->has_triggers)
		AfterTriggerBeginQuery();
}

static void
apply_end_row(ApplyRelState *state)
{
	if (state->has_triggers)
		AfterTriggerEndQuery(state->estate);
	PopActiveSnapshot();
	ExecClearTuple(state->localslot);
	ExecClearTuple(state->remoteslot);
	if (state->rootslot != NULL)
		ExecClearTuple(state->rootslot);
	ResetPerTupleExprContext(state->estate);
	CommandCounterIncrement();
}

/*
 * apply_handle_insert
 *		INSERT: buffered for table_multi_insert(), or one row at a time.
 */
static void
apply_handle_insert(DeApply *apply, DeRecord *rec)
{
	DeRelMapEntry *entry;
	ApplyRelState *state;

	if (!apply_check_change(apply, rec))
		return;

	entry = apply_get_entry(apply, rec->relid);
	if (apply->state == DE_APPLY_COPYING && apply->adopt_rows)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("initial copy of register \"%s\" carries rows, but the embassy asked for none",
					   apply->register_name),
				errdetail("The register was added with copy_data => false."));

	/*
	 * COPY_END counts every row received, applied or not: ignored ones, and
	 * those of a table whose copy failed (copied on its own later).
	 */
	if (apply->state == DE_APPLY_COPYING)
	{
		apply->copy_rows++;
		if (rec->relid == apply->copy_skip)
		{
			apply->copy_rows_left_out++;
			return;
		}
		if (apply->copy_entry == entry)
			apply->copy_table_rows++;
	}
	if (apply_ignored(apply, entry))
		return;
	if (!apply_table_wanted(apply, entry, true))
		return;
	state = apply_rel_open(apply, entry);
	apply_act_as_owner(apply, state->rel);

	if (state->insbuf != NULL)
	{
		apply_buffer_insert(apply, entry, &rec->newtup);
		return;
	}

	apply_begin_row(state);
	apply_store_tuple(apply, entry, &rec->newtup, state->remoteslot, NULL,
					  false);
	apply_fill_defaults(state, state->remoteslot);
	apply->err_slot = state->remoteslot;
	if (state->proute != NULL)
	{
		apply_fill_generated(state, state->remoteslot);
		apply_route_insert(apply, entry, state->remoteslot);
	}
	else
		apply_insert_row(apply, entry, state->relinfo, state->remoteslot);
	apply->err_slot = NULL;
	apply_end_row(state);

	apply->xact_rows++;
}

/*
 * apply_buffer_insert
 *		Convert a row into the table's insert buffer (multi_insert.c);
 *		write the buffer when full.
 */
static void
apply_buffer_insert(DeApply *apply, DeRelMapEntry *entry, DeTuple *tup)
{
	ApplyRelState *state = entry->state;
	TupleTableSlot *slot;
	MemoryContext oldcxt;
	Size		bytes = sizeof(HeapTupleHeaderData);
	int			i;

	if (apply->buffered != NULL && apply->buffered != entry)
		apply_flush_inserts(apply);

	/*
	 * One snapshot serves the whole buffer: its rows are converted (domain
	 * checks and input functions may run queries) and written under it.
	 */
	if (!apply->buffer_snapshot)
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		apply->buffer_snapshot = true;
	}

	slot = de_insbuf_next_slot(state->insbuf);

	oldcxt = MemoryContextSwitchTo(apply->batch_cxt);
	apply_store_tuple(apply, entry, tup, slot, NULL, false);
	apply_fill_defaults(state, slot);
	MemoryContextSwitchTo(oldcxt);

	apply->buffered = entry;
	for (i = 0; i < tup->natts; i++)
		bytes += tup->values[i].len;

	if (de_insbuf_add(state->insbuf, bytes))
		apply_flush_inserts(apply);
}

/*
 * apply_flush_inserts
 *		Check the buffered rows and write them (de_insbuf_write()).
 *
 * Only tables without firing insert row triggers are buffered, so no
 * trigger is called here; constraints and stored generated columns are
 * handled as in apply_insert_row().  The values of the rows, in
 * batch_cxt, go after the write.
 */
static void
apply_flush_inserts(DeApply *apply)
{
	DeRelMapEntry *entry = apply->buffered;
	ApplyRelState *state;
	DeRelMapEntry *saved_rel = apply->err_rel;
	char		saved_type = apply->err_type;
	DeInsertBuffer *buf;
	ResultRelInfo *relinfo;
	Relation	rel;
	MemoryContext oldcxt;
	int			nrows;
	int			i;

	if (entry == NULL)
		return;

	state = entry->state;
	buf = state->insbuf;
	relinfo = state->relinfo;
	rel = state->rel;
	nrows = de_insbuf_count(buf);
	apply_act_as_owner(apply, rel);

	apply->err_rel = entry;
	apply->err_type = DE_REC_INSERT;
	oldcxt = MemoryContextSwitchTo(apply->batch_cxt);

	for (i = 0; i < nrows; i++)
	{
		TupleTableSlot *slot = de_insbuf_slot(buf, i);

		apply->err_slot = slot;
		apply_fill_generated(state, slot);
		apply_check_not_null(apply, entry, relinfo, slot);
		if (rel->rd_rel->relispartition)
			ExecPartitionCheck(relinfo, slot, state->estate, true);
		ResetPerTupleExprContext(state->estate);
	}
	apply->err_slot = NULL;

	de_insbuf_write(buf, &apply->err_slot);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(apply->batch_cxt);

	if (apply->buffer_snapshot)
	{
		PopActiveSnapshot();
		apply->buffer_snapshot = false;
	}
	CommandCounterIncrement();

	apply->buffered = NULL;
	apply->xact_rows += nrows;

	apply->err_rel = saved_rel;
	apply->err_type = saved_type;
}

/*
 * apply_find_in_partition
 *		Find the local row matching searchslot (the partition's layout) in
 *		a partition: through its identity index and locked, as PostgreSQL's
 *		own apply does, or, without one, by comparing the columns the
 *		register sent (lookup.c).
 */
static bool
apply_find_in_partition(ApplyRelState *state, ResultRelInfo *partinfo,
						ApplyPartSlots *ps, TupleTableSlot *searchslot)
{
	Relation	partrel = partinfo->ri_RelationDesc;
	Oid			idxoid = de_relmap_identity_index(partrel);
	TupleConversionMap *map = partinfo->ri_RootToPartitionMap;
	int			natts = RelationGetDescr(partrel)->natts;
	int			i;

	if (OidIsValid(idxoid))
		return RelationFindReplTupleByIndex(partrel, idxoid,
											LockTupleExclusive,
											searchslot, ps->found);

	if (ps->seqlookup == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(state->estate->es_query_cxt);

		ps->compare = palloc0(sizeof(bool) * Max(natts, 1));
		ps->seqlookup = de_seqlookup_create(partrel,
											de_rowcmp_create(RelationGetDescr(partrel)));
		MemoryContextSwitchTo(oldcxt);
	}
	for (i = 0; i < natts; i++)
	{
		AttrNumber	rootatt = (map != NULL) ? map->attrMap->attnums[i] : i + 1;

		ps->compare[i] = (rootatt > 0 && state->compare[rootatt - 1]);
	}
	return de_seqlookup_find(ps->seqlookup, searchslot, ps->compare,
							 ps->found);
}

/*
 * apply_find_tuple
 *		Find the local row matching the state's remote slot, into its local
 *		slot: through the identity index with a reused scan, or, for
 *		REPLICA IDENTITY FULL without one, by comparing the columns the
 *		register sent (both in lookup.c).
 */
static bool
apply_find_tuple(DeRelMapEntry *entry, ApplyRelState *state)
{
	if (OidIsValid(state->idxoid))
	{
		if (state->lookup == NULL)
		{
			ResultRelInfo *relinfo = state->relinfo;
			Relation	idxrel = NULL;
			MemoryContext lookupcxt;
			MemoryContext oldcxt;
			int			i;

			/* the executor opened the table's indexes */
			for (i = 0; i < relinfo->ri_NumIndices; i++)
				if (RelationGetRelid(relinfo->ri_IndexRelationDescs[i]) ==
					state->idxoid)
					idxrel = relinfo->ri_IndexRelationDescs[i];
			if (idxrel == NULL)
				return RelationFindReplTupleByIndex(state->rel, state->idxoid,
													LockTupleExclusive,
													state->remoteslot,
													state->localslot);
			lookupcxt = AllocSetContextCreate(state->estate->es_query_cxt,
											  "data_embassy index lookup",
											  ALLOCSET_SMALL_SIZES);
			oldcxt = MemoryContextSwitchTo(lookupcxt);
			state->lookup = de_lookup_create(state->rel, idxrel);
			MemoryContextSwitchTo(oldcxt);
		}
		return de_lookup_find(state->lookup, state->remoteslot,
							  state->localslot);
	}

	if (state->seqlookup == NULL)
	{
		DeRowCompare *rowcmp = de_relmap_rowcmp(entry, state->rel);
		MemoryContext lookupcxt;
		MemoryContext oldcxt;

		lookupcxt = AllocSetContextCreate(state->estate->es_query_cxt,
										  "data_embassy row search",
										  ALLOCSET_SMALL_SIZES);
		oldcxt = MemoryContextSwitchTo(lookupcxt);
		state->seqlookup = de_seqlookup_create(state->rel, rowcmp);
		MemoryContextSwitchTo(oldcxt);
	}
	return de_seqlookup_find(state->seqlookup, state->remoteslot,
							 state->compare, state->localslot);
}

/*
 * apply_not_found
 *		A row to update or delete is missing here: say so and go on, as
 *		core does.
 */
static void
apply_not_found(DeRelMapEntry *entry, CmdType cmd)
{
	if (cmd == CMD_UPDATE)
		ereport(LOG,
				errmsg("data_embassy did not find row to be updated in replication target table \"%s.%s\"",
					   entry->nspname, entry->relname));
	else
		ereport(LOG,
				errmsg("data_embassy did not find row to be deleted in replication target table \"%s.%s\"",
					   entry->nspname, entry->relname));
}

/*
 * apply_part_slots
 *		Slots for rows of one partition, made once per transaction.
 */
static ApplyPartSlots *
apply_part_slots(ApplyRelState *state, ResultRelInfo *partinfo)
{
	Relation	partrel = partinfo->ri_RelationDesc;
	ApplyPartSlots *ps;
	MemoryContext oldcxt;
	ListCell   *lc;

	foreach(lc, state->partslots)
	{
		ps = (ApplyPartSlots *) lfirst(lc);
		if (ps->relid == RelationGetRelid(partrel))
			return ps;
	}

	oldcxt = MemoryContextSwitchTo(state->estate->es_query_cxt);
	ps = palloc(sizeof(ApplyPartSlots));
	ps->relid = RelationGetRelid(partrel);
	ps->found = table_slot_create(partrel, &state->estate->es_tupleTable);
	ps->tuple = table_slot_create(partrel, &state->estate->es_tupleTable);
	ps->compare = NULL;
	ps->seqlookup = NULL;
	state->partslots = lappend(state->partslots, ps);
	MemoryContextSwitchTo(oldcxt);
	return ps;
}

/*
 * apply_find_partition
 *		The leaf partition a row of the partitioned target belongs to.
 */
static ResultRelInfo *
apply_find_partition(ApplyRelState *state, TupleTableSlot *slot)
{
	ResultRelInfo *partinfo;
	Relation	partrel;

	partinfo = ExecFindPartition(state->mtstate, state->relinfo,
								 state->proute, slot, state->estate);
	partrel = partinfo->ri_RelationDesc;
	CheckSubscriptionRelkind(partrel->rd_rel->relkind,
							 get_namespace_name(RelationGetNamespace(partrel)),
							 RelationGetRelationName(partrel));
	return partinfo;
}

/*
 * apply_to_partition
 *		A row of the root's layout in a partition's layout.
 */
static TupleTableSlot *
apply_to_partition(ApplyRelState *state, ResultRelInfo *partinfo,
				   TupleTableSlot *slot)
{
	ApplyPartSlots *ps = apply_part_slots(state, partinfo);
	TupleConversionMap *map = partinfo->ri_RootToPartitionMap;

	if (map != NULL)
		return execute_attr_map_slot(map->attrMap, slot, ps->tuple);

	ExecCopySlot(ps->tuple, slot);
	slot_getallattrs(ps->tuple);
	return ps->tuple;
}

/*
 * apply_route_insert
 *		Insert a row of the root's layout into its partition.
 */
static void
apply_route_insert(DeApply *apply, DeRelMapEntry *entry, TupleTableSlot *slot)
{
	ApplyRelState *state = entry->state;
	ResultRelInfo *partinfo = apply_find_partition(state, slot);

	apply_insert_row(apply, entry, partinfo,
					 apply_to_partition(state, partinfo, slot));
}

/*
 * apply_update_partitioned
 *		UPDATE through a partitioned target, as core's
 *		apply_handle_tuple_routing() does: find the row in its partition,
 *		update it there, or move it when it no longer belongs there.
 */
static bool
apply_update_partitioned(DeApply *apply, DeRelMapEntry *entry,
						 ApplyRelState *state, DeTuple *newtup)
{
	ResultRelInfo *partinfo = apply_find_partition(state, state->remoteslot);
	ApplyPartSlots *ps = apply_part_slots(state, partinfo);
	TupleTableSlot *search = apply_to_partition(state, partinfo,
												state->remoteslot);
	TupleConversionMap *tomap;
	TupleTableSlot *oldroot;
	TupleTableSlot *newpart;
	MemoryContext oldcxt;

	if (!apply_find_in_partition(state, partinfo, ps, search))
		return false;

	/*
	 * The local row in the root's layout, then the new row over it.  The map
	 * is built on first use and kept in the ResultRelInfo, so it must live as
	 * long as the executor state, not the row.
	 */
	oldcxt = MemoryContextSwitchTo(state->estate->es_query_cxt);
	tomap = ExecGetChildToRootMap(partinfo);
	MemoryContextSwitchTo(oldcxt);
	if (tomap != NULL)
		oldroot = execute_attr_map_slot(tomap->attrMap, ps->found,
										state->rootslot);
	else
		oldroot = ps->found;
	apply_store_tuple(apply, entry, newtup, state->remoteslot, oldroot, false);
	apply_fill_generated(state, state->remoteslot);
	apply->err_slot = state->remoteslot;

	newpart = apply_to_partition(state, partinfo, state->remoteslot);
	if (ExecPartitionCheck(partinfo, newpart, state->estate, false))
	{
		EvalPlanQualSetSlot(&state->epqstate, newpart);
		apply_update_row(apply, entry, partinfo, ps->found, newpart);
	}
	else
	{
		ExecSimpleRelationDelete(partinfo, state->estate, &state->epqstate,
								 ps->found);
		apply_route_insert(apply, entry, state->remoteslot);
	}
	ExecClearTuple(ps->found);
	ExecClearTuple(ps->tuple);
	return true;
}

/*
 * apply_delete_partitioned
 *		DELETE through a partitioned target.
 */
static bool
apply_delete_partitioned(ApplyRelState *state)
{
	ResultRelInfo *partinfo = apply_find_partition(state, state->remoteslot);
	ApplyPartSlots *ps = apply_part_slots(state, partinfo);
	TupleTableSlot *search = apply_to_partition(state, partinfo,
												state->remoteslot);
	bool		found;

	found = apply_find_in_partition(state, partinfo, ps, search);
	if (found)
		ExecSimpleRelationDelete(partinfo, state->estate, &state->epqstate,
								 ps->found);
	ExecClearTuple(ps->found);
	ExecClearTuple(ps->tuple);
	return found;
}

/*
 * apply_handle_update
 *		UPDATE: find the local row by the old key (or the new row when the
 *		key did not change) and update it.
 */
static void
apply_handle_update(DeApply *apply, DeRecord *rec)
{
	DeRelMapEntry *entry;
	ApplyRelState *state;
	DeTuple    *searchtup;
	bool		found;

	if (!apply_check_change(apply, rec))
		return;

	entry = apply_get_entry(apply, rec->relid);
	if (apply_ignored(apply, entry) ||
		!apply_table_wanted(apply, entry, true))
		return;
	state = apply_rel_open(apply, entry);
	apply_act_as_owner(apply, state->rel);
	de_relmap_check_updatable(entry, state->rel);
	searchtup = (rec->oldkind == DE_OLD_NONE) ? &rec->newtup : &rec->oldtup;

	apply_begin_row(state);
	apply_store_tuple(apply, entry, searchtup, state->remoteslot, NULL, true);
	apply->err_slot = state->remoteslot;

	if (state->proute != NULL)
		found = apply_update_partitioned(apply, entry, state, &rec->newtup);
	else
	{
		found = apply_find_tuple(entry, state);
		if (found)
		{
			apply->err_slot = NULL;
			apply_store_tuple(apply, entry, &rec->newtup, state->remoteslot,
							  state->localslot, false);
			apply->err_slot = state->remoteslot;
			EvalPlanQualSetSlot(&state->epqstate, state->remoteslot);
			apply_update_row(apply, entry, state->relinfo, state->localslot,
							 state->remoteslot);
		}
	}
	if (found)
		apply->xact_rows++;
	else
		apply_not_found(entry, CMD_UPDATE);
	apply->err_slot = NULL;
	apply_end_row(state);
}

/*
 * apply_handle_delete
 *		DELETE: find the local row by the old key and delete it.
 */
static void
apply_handle_delete(DeApply *apply, DeRecord *rec)
{
	DeRelMapEntry *entry;
	ApplyRelState *state;
	bool		found;

	if (!apply_check_change(apply, rec))
		return;

	entry = apply_get_entry(apply, rec->relid);
	if (apply_ignored(apply, entry) ||
		!apply_table_wanted(apply, entry, true))
		return;
	state = apply_rel_open(apply, entry);
	apply_act_as_owner(apply, state->rel);
	de_relmap_check_updatable(entry, state->rel);

	apply_begin_row(state);
	apply_store_tuple(apply, entry, &rec->oldtup, state->remoteslot, NULL,
					  true);
	apply->err_slot = state->remoteslot;

	if (state->proute != NULL)
		found = apply_delete_partitioned(state);
	else
	{
		found = apply_find_tuple(entry, state);
		if (found)
		{
			EvalPlanQualSetSlot(&state->epqstate, state->localslot);
			ExecSimpleRelationDelete(state->relinfo, state->estate,
									 &state->epqstate, state->localslot);
		}
	}
	if (found)
		apply->xact_rows++;
	else
		apply_not_found(entry, CMD_DELETE);
	apply->err_slot = NULL;
	apply_end_row(state);
}

/*
 * apply_act_as_owner
 *		Run what follows as the owner of rel, as PostgreSQL 16's apply worker
 *		does: triggers, column defaults, index expressions, domain checks and
 *		the functions of the table's types then run with the owner's
 *		rights, not the worker's.  Unless the owner is a superuser, under
 *		SECURITY_RESTRICTED_OPERATION and in a GUC nest level of its own, so
 *		that the owner's code cannot change the session for the worker.
 *		Stays in effect across the records of one table owner; the worker is
 *		itself again at every frame end, subtransaction boundary, commit
 *		and abort (switching costs a GUC nest level, not to be paid per
 *		row).
 */
static void
apply_act_as_owner(DeApply *apply, Relation rel)
{
	Oid			owner = rel->rd_rel->relowner;

	if (apply->acting_owner == owner)
		return;
	apply_act_as_worker(apply);

	GetUserIdAndSecContext(&apply->save_userid, &apply->save_sec_context);
	if (superuser_arg(owner))
	{
		SetUserIdAndSecContext(owner, apply->save_sec_context);
		apply->save_nestlevel = -1;
	}
	else
	{
		SetUserIdAndSecContext(owner, apply->save_sec_context |
							   SECURITY_RESTRICTED_OPERATION);
		apply->save_nestlevel = NewGUCNestLevel();
	}
	apply->acting_owner = owner;
}

/*
 * apply_act_as_worker
 *		Back to the worker's own identity; GUC changes made meanwhile are
 *		discarded.
 */
static void
apply_act_as_worker(DeApply *apply)
{
	if (!OidIsValid(apply->acting_owner))
		return;
	if (apply->save_nestlevel >= 0)
		AtEOXact_GUC(false, apply->save_nestlevel);
	SetUserIdAndSecContext(apply->save_userid, apply->save_sec_context);
	apply->acting_owner = InvalidOid;
}

/*
 * apply_act_as_truncate_owner
 *		A TRUNCATE runs no user code but the tables' TRUNCATE triggers
 *		(those enabled ALWAYS or REPLICA, the worker being a replica).  Act
 *		as the tables' owner when they have one; tables of several owners
 *		are truncated as the worker only if none of them has such a trigger,
 *		else refused.
 */
static void
apply_act_as_truncate_owner(DeApply *apply, List *rels)
{
	Oid			owner = InvalidOid;
	bool		one_owner = true;
	ListCell   *lc;

	foreach(lc, rels)
	{
		Relation	rel = lfirst(lc);

		if (!OidIsValid(owner))
			owner = rel->rd_rel->relowner;
		else if (owner != rel->rd_rel->relowner)
			one_owner = false;
	}
	if (rels == NIL)
		return;
	if (one_owner)
	{
		apply_act_as_owner(apply, (Relation) linitial(rels));
		return;
	}

	foreach(lc, rels)
	{
		Relation	rel = lfirst(lc);
		TriggerDesc *trigdesc = rel->trigdesc;

		if (trigdesc == NULL ||
			!(trigdesc->trig_truncate_before_statement ||
			  trigdesc->trig_truncate_after_statement))
			continue;
		for (int i = 0; i < trigdesc->numtriggers; i++)
		{
			Trigger    *trig = &trigdesc->triggers[i];

			if (TRIGGER_FOR_TRUNCATE(trig->tgtype) &&
				(trig->tgenabled == TRIGGER_FIRES_ALWAYS ||
				 trig->tgenabled == TRIGGER_FIRES_ON_REPLICA))
				ereport(ERROR,
						errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						errmsg("cannot apply a TRUNCATE of tables with different owners that fires trigger \"%s\" on table \"%s\"",
							   trig->tgname,
							   RelationGetRelationName(rel)),
						errdetail("The apply worker runs triggers as the owner of their table, and one TRUNCATE statement cannot run as several roles."),
						errhint("Give the tables one owner, or disable the trigger at the embassy."));
		}
	}
}

/*
 * apply_handle_truncate
 *		TRUNCATE the mapped tables (and the partitions of partitioned ones),
 *		with the register's CASCADE and RESTART IDENTITY, as core's
 *		apply_handle_truncate() does.
 */
static void
apply_handle_truncate(DeApply *apply, DeRecord *rec)
{
	List	   *rels = NIL;
	List	   *relids = NIL;
	List	   *relids_logged = NIL;
	ListCell   *lc;
	int			i;

	if (!apply_check_change(apply, rec))
		return;

	/* TRUNCATE refuses tables this session still has open. */
	apply_close_rels(apply);

	PushActiveSnapshot(GetTransactionSnapshot());

	for (i = 0; i < rec->nrelids; i++)
	{
		DeRelMapEntry *entry = apply_get_entry(apply, rec->relids[i]);
		Oid			relid;
		Relation	rel;

		/* a table being copied again: maybe its copy holds this already */
		if (apply_ignored(apply, entry) ||
			!apply_table_wanted(apply, entry, false))
			continue;
		relid = de_relmap_lock_local(entry, AccessExclusiveLock);
		if (list_member_oid(relids, relid))
			continue;

		rel = de_relmap_open_local(apply->relmap, entry, relid);
		apply_record_replicated(apply, entry, rel);

		rels = lappend(rels, rel);
		relids = lappend_oid(relids, relid);
		if (RelationIsLogicallyLogged(rel))
			relids_logged = lappend_oid(relids_logged, relid);

		if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		{
			List	   *children = find_all_inheritors(relid,
													   AccessExclusiveLock,
													   NULL);
			ListCell   *child;

			foreach(child, children)
			{
				Oid			childid = lfirst_oid(child);
				Relation	childrel;

				if (list_member_oid(relids, childid))
					continue;
				childrel = table_open(childid, NoLock);
				if (RELATION_IS_OTHER_TEMP(childrel))
				{
					table_close(childrel, NoLock);
					continue;
				}
				rels = lappend(rels, childrel);
				relids = lappend_oid(relids, childid);
				if (RelationIsLogicallyLogged(childrel))
					relids_logged = lappend_oid(relids_logged, childid);
			}
		}
	}
	apply->err_rel = NULL;
	if (rels == NIL)
	{
		PopActiveSnapshot();
		return;
	}

	apply_act_as_truncate_owner(apply, rels);
	ExecuteTruncateGuts(rels, relids, relids_logged,
						rec->cascade ? DROP_CASCADE : DROP_RESTRICT,
						rec->restart_seqs);

	apply_act_as_worker(apply);
	foreach(lc, rels)
		table_close((Relation) lfirst(lc), NoLock);

	PopActiveSnapshot();
	CommandCounterIncrement();
}

/*
 * apply_handle_message
 *		Logical decoding messages travel for the record (inspection, audits)
 *		but change nothing here: they belong to other consumers of the
 *		register's WAL.
 */
static void
apply_handle_message(DeApply *apply, DeRecord *rec)
{
	/* how many tables the copy holds (schema_list.h) */
	if (apply->state == DE_APPLY_COPYING && rec->prefix != NULL &&
		strcmp(rec->prefix, DE_COPY_TABLES_PREFIX) == 0)
	{
		int64		n = 0;
		bool		valid = !rec->transactional && apply->copy_tables_planned < 0 &&
		rec->content_len > 0 && rec->content_len <= 10;

		for (uint32 i = 0; valid && i < rec->content_len; i++)
		{
			if (rec->content[i] < '0' || rec->content[i] > '9')
				valid = false;
			else
				n = n * 10 + (rec->content[i] - '0');
		}
		if (!valid || n > PG_INT32_MAX)
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("invalid table count record in initial copy of register \"%s\"",
						   apply->register_name));
		apply->copy_tables_planned = (int) n;
		return;
	}

	/* the sealed marker of a copy without rows (schema_list.h) */
	if (apply->state == DE_APPLY_COPYING && rec->prefix != NULL &&
		strcmp(rec->prefix, DE_COPY_MODE_PREFIX) == 0)
	{
		if (rec->transactional || apply->copy_marker_seen ||
			rec->content_len != strlen(DE_COPY_MODE_NO_ROWS) ||
			memcmp(rec->content, DE_COPY_MODE_NO_ROWS, rec->content_len) != 0)
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("invalid copy mode record in initial copy of register \"%s\"",
						   apply->register_name));
		apply->copy_marker_seen = true;
		return;
	}
	if (rec->transactional)
		elog(DEBUG2, "register \"%s\" sent a transactional message with prefix \"%s\" at %X/%X (%u bytes)",
			 apply->register_name, rec->prefix ? rec->prefix : "",
			 LSN_FORMAT_ARGS(rec->lsn), rec->content_len);
	else
		elog(DEBUG2, "register \"%s\" sent a non-transactional message with prefix \"%s\" at %X/%X (%u bytes)",
			 apply->register_name, rec->prefix ? rec->prefix : "",
			 LSN_FORMAT_ARGS(rec->lsn), rec->content_len);
}

/*
 * apply_handle_sequences
 *		The register's sequences as of this transaction: each local sequence
 *		of the same name moves forward to the register's last value (never
 *		backwards, as setval semantics here), and the value is remembered in
 *		replicated_sequences for promote() to add its margin to.  This runs
 *		about once a second, not per row, so SPI is fine.
 */
static void
apply_handle_sequences(DeApply *apply, DeRecord *rec)
{
	int			i;

	if (!apply_check_change(apply, rec))
		return;

	PushActiveSnapshot(GetTransactionSnapshot());
	for (i = 0; i < rec->nsequences; i++)
	{
		Oid			nsp = get_namespace_oid(rec->seq_nspnames[i], true);
		Oid			relid = OidIsValid(nsp) ?
		get_relname_relid(rec->seq_relnames[i], nsp) : InvalidOid;

		if (!de_schema_list_contains(apply->schemas, rec->seq_nspnames[i]))
			continue;

		if (!OidIsValid(relid) || get_rel_relkind(relid) != RELKIND_SEQUENCE)
		{
			elog(DEBUG1, "register \"%s\" has sequence \"%s.%s\", which does not exist here",
				 apply->register_name, rec->seq_nspnames[i],
				 rec->seq_relnames[i]);
			continue;
		}
		de_catalog_report_sequence(apply->register_name, relid,
								   rec->seq_values[i]);
	}
	PopActiveSnapshot();
	CommandCounterIncrement();
}

/*
 * apply_handle_copy_end
 *		The end of an initial copy: every row announced must be here.
 */
static void
apply_handle_copy_end(DeApply *apply, DeRecord *rec)
{
	if (apply->state != DE_APPLY_COPYING)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("unexpected COPY_END record in stream of register \"%s\"",
					   apply->register_name));

	if (apply->copy_rows != rec->rows)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("initial copy of register \"%s\" is incomplete",
					   apply->register_name),
				errdetail("The copy announced %llu rows, but %llu were applied.",
						  (unsigned long long) rec->rows,
						  (unsigned long long) apply->copy_rows));

	/*
	 * copy_frames()'s with_rows travels unsealed: the sealed marker says
	 * which copy this is.
	 */
	if (apply->adopt_rows != apply->copy_marker_seen)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("initial copy of register \"%s\" is not the copy the embassy asked for",
					   apply->register_name),
				apply->adopt_rows ?
				errdetail("The embassy asked for the tables' descriptions without rows (copy_data => false); the register sealed a copy with rows.") :
				errdetail("The embassy asked for a copy with rows; the register sealed a copy without rows."),
				errhint("The request travels unsealed: something on the path between the sites altered it.  The copy starts over at the next attempt."));

	apply_set_state(apply, DE_APPLY_COPY_DONE);
}
