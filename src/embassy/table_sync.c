/*-------------------------------------------------------------------------
 *
 * table_sync.c
 *		  resync_table(register, relation): copy one table of a register
 *		  again, sealed, in a snapshot of its own, while the register's
 *		  apply worker goes on applying the other tables.
 *
 * This is the embassy's counterpart of PostgreSQL's tablesync.c.  Where
 * core's table sync worker catches up with the stream from its own slot,
 * here the apply worker keeps the table's changes aside while the copy runs
 * and applies those the copy does not hold once it has committed.
 *
 * The state of a table lives in data_embassy.replicated_relations:
 * sync_state 'i' (a new copy is wanted), 'd' (the copy committed, the
 * apply worker catches up) or 'r' (ready), sync_lsn (the register LSN of
 * the last copy's snapshot) and sync_attempt (the attempt the apply worker
 * claimed the copy with).
 *
 *	1. resync_table() sets sync_state = 'i'; so does an initial copy that
 *	   left the table out because its rows did not apply here
 *	   (initial_sync.c), with the error in sync_error.
 *	2. The apply worker reads it between transactions (de_table_sync_poll(),
 *	   once a second), claims the copy with a fresh attempt number (a
 *	   committed UPDATE) and starts a dynamic background worker for it, the
 *	   copy worker.  Until the claim it drops the table's changes (the
 *	   copy's snapshot, taken later, holds them).  From the claim on it
 *	   applies none of the table's changes: it writes their records, with the commit LSN of
 *	   their transaction, to a spool file (de_table_sync_wanted()), and goes
 *	   on with everything else.  Streamed transactions are spooled by
 *	   stream.c meanwhile, so that each one's commit LSN is known when its
 *	   changes are applied or deferred.  One copy runs at a time per
 *	   register; others wait their turn.
 *	3. The copy worker connects to the register in replication mode,
 *	   creates a TEMPORARY slot (the embassy's slot name with
 *	   DE_RESYNC_SLOT_SUFFIX) exporting a snapshot whose consistent point is
 *	   S, and on a second connection reads copy_table_frames(..., [table])
 *	   in that snapshot: sealed frames of an initial-copy stream for a fresh
 *	   session key pair, bound by the register to the slot's snapshot, whose
 *	   HELLO seals the slot's name and S and whose RELATION record names
 *	   the one table copied.  In one local transaction it deletes the
 *	   table's rows, applies the copy's rows, and sets sync_state = 'd' and
 *	   sync_lsn = S, but only while sync_attempt is still its own.
 *	4. The apply worker, at its next boundary between transactions, applies
 *	   the deferred changes of the transactions that committed at or after
 *	   S (the copy holds the others) and sets sync_state = 'r', in one local
 *	   transaction that does not move the origin (ts_catch_up()).  From
 *	   then on it skips the table's changes of transactions committed
 *	   before S, until its origin passes S.
 *
 * What cannot be deferred is dropped and the table copied once more after
 * the running copy (a snapshot taken later holds all of it): a TRUNCATE of
 * the table, a RELATION record that describes it otherwise than the
 * deferred changes were read with, a stream that starts over (pause).
 *
 * Crashes and failures.  Everything of the copy commits at once, or not at
 * all; so do the deferred changes with state 'r'.  A copy that fails
 * leaves the table as it was, says why in sync_error (the view
 * table_resyncs shows it as 'failed'), and is claimed and started again
 * from a new slot after a backoff that grows with each failure in a row
 * (as the apply worker's own, de_backoff_ms()), or at once after
 * retry_register(); its deferred changes are dropped meanwhile, since the
 * new S is later than all of them.  So a table whose rows cannot apply here
 * until a DBA changes it costs a spool of at most one attempt's changes
 * and one copy per backoff, and nothing of the other tables.  The temporary slot goes
 * with the copy worker's connection, however the worker ends.  A new run
 * of the apply worker (after a crash or a restart its deferred changes are
 * gone) first sets every 'd' back to 'i' and voids every claim (a copy
 * worker of the earlier run can then no longer commit) and starts the copy
 * again.
 *
 * Progress shows in the lag view's copy columns (copy_tables_total 1,
 * copy_tables_done, copy_rows, copy_bytes) and in the view table_resyncs.
 *
 * IDENTIFICATION
 *		  src/embassy/table_sync.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/buffile.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "data_embassy.h"
#include "embassy/apply.h"
#include "embassy/catalog.h"
#include "embassy/guard.h"
#include "embassy/launcher.h"
#include "embassy/status.h"
#include "embassy/table_sync.h"
#include "embassy/walconn.h"
#include "privilege.h"
#include "seal/codec.h"
#include "seal/crypto.h"
#include "seal/frame.h"
#include "seal/keys.h"

PG_FUNCTION_INFO_V1(data_embassy_resync_table);

/* application_name of the copy worker's connections on the register */
#define TABLE_SYNC_APPNAME		"data_embassy resync"

/* how often the apply worker reads the catalog between transactions */
#define TABLE_SYNC_READ_MS		1000

/* how often a change that waits for a copy looks again */
#define TABLE_SYNC_WAIT_MS		200

/* what the apply worker hands its copy worker (bgw_extra) */
typedef struct TableSyncArgs
{
	Oid			dboid;
	Oid			relid;
	int64		attempt;
	pid_t		launcher_pid;	/* the apply worker that claimed the copy */
	char		register_name[NAMEDATALEN];
} TableSyncArgs;

StaticAssertDecl(sizeof(TableSyncArgs) <= BGW_EXTRALEN,
				 "TableSyncArgs does not fit in bgw_extra");

/* Where a table is, as the apply worker sees it. */
typedef enum TableSyncPhase
{
	TS_PENDING,					/* a copy is wanted, not claimed yet: the
								 * table's changes are dropped (the copy's
								 * later snapshot holds them) */
	TS_COPYING,					/* claimed: its changes are deferred */
	TS_DONE						/* copied at lsn; the stream is before it */
} TableSyncPhase;

typedef struct TableSyncEntry
{
	Oid			relid;
	TableSyncPhase phase;
	XLogRecPtr	lsn;			/* skip the table's changes of transactions
								 * that committed before it (invalid: none) */
	int64		attempt;		/* TS_COPYING: the claim */
	bool		copied;			/* TS_COPYING: the copy committed (state 'd') */
	XLogRecPtr	copied_lsn;		/* at this LSN */
	bool		spool_lost;		/* deferred changes dropped: copy again */
	int			failures;		/* copies that failed in a row */
	TimestampTz next_attempt;	/* no new copy before this (backoff) */
	char		relname[NAMEDATALEN];	/* for messages (set when claimed) */
} TableSyncEntry;

/* the apply worker's side */
static MemoryContext ts_cxt = NULL;
static char ts_register[NAMEDATALEN];
static DeApply *ts_apply = NULL;
static List *ts_entries = NIL;	/* of TableSyncEntry, in ts_cxt */
static BackgroundWorkerHandle *ts_handle = NULL;	/* the copy worker */
static TableSyncEntry *ts_running = NULL;	/* its table */
static BufFile *ts_spool = NULL;	/* its deferred changes */
static uint64 ts_spool_changes = 0;
static bool ts_replaying = false;	/* ts_catch_up() is applying them */
static TimestampTz ts_next_read = 0;
static TimestampTz ts_next_launch = 0;

static void ts_read_catalog(bool reset_attempts, XLogRecPtr applied);
static TableSyncEntry *ts_find(Oid relid);
static void ts_spool_reset(void);
static void ts_spool_lost(TableSyncEntry *e, const char *why);
static bool ts_copy_worker_stopped(void);
static void ts_launch(TableSyncEntry *e);
static bool ts_claim(TableSyncEntry *e);
static void ts_catch_up(TableSyncEntry *e);
static void ts_retry_later(void);

/*-------------------------------------------------------------------------
 * resync_table()
 *-------------------------------------------------------------------------
 */

/*
 * data_embassy_resync_table
 *		resync_table(register text, relation regclass): ask for a new copy of
 *		one table that the register replicates into.  The register's apply
 *		worker starts it within a second; the view table_resyncs and the lag
 *		view's copy columns show it.
 */
Datum
data_embassy_resync_table(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			relid;
	DeRegister *reg;
	char	   *owner;
	Oid			remote_relid;
	char	   *relname;

	de_require_preloaded();
	de_check_admin_call("data_embassy.resync_table()");

	name = de_name_arg(fcinfo, 0, DE_NAME_REGISTER);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("relation must not be null"),
				errhint("Pass the local table to copy again, for example 'public.accounts'."));
	relid = PG_GETARG_OID(1);
	relname = get_rel_name(relid);
	if (relname == NULL)
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_TABLE),
				errmsg("relation with OID %u does not exist", relid));
	relname = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
										 relname);

	/* waits for drop_register, pause and promote (and they for us) */
	reg = de_catalog_get_register(name, DE_LOCK_NO_KEY_UPDATE, false);
	if (reg->phase == DE_PHASE_PROMOTED)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" has been promoted", name),
				errdetail("A promoted register is not replicated any more; there is nothing to copy again."));
	if (reg->phase == DE_PHASE_INIT)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" has not finished its initial copy",
					   name),
				errhint("Its tables are copied once the initial copy commits; to start the whole copy over, use data_embassy.resync_register('%s').",
						name));
	if (reg->paused)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" is paused", name),
				errhint("Resume it with data_embassy.resume_register('%s'); its apply worker runs the copy.",
						name));

	owner = de_catalog_relation_register(relid, &remote_relid);
	if (owner == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("table %s is not replicated from register \"%s\"",
					   relname, name),
				errdetail("No register replicates into it (yet): a table is recorded with its first change or copy."));
	if (strcmp(owner, name) != 0)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("table %s is not replicated from register \"%s\"",
					   relname, name),
				errdetail("It is the replica of a table of register \"%s\".",
						  owner));
	if (!OidIsValid(remote_relid))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("table %s does not know which table of register \"%s\" it replicates",
					   relname, name),
				errhint("Copy the whole register again with data_embassy.resync_register('%s').",
						name));

	if (!de_catalog_request_table_sync(relid))
	{
		ereport(NOTICE,
				errmsg("a new copy of table %s is already under way", relname));
		PG_RETURN_VOID();
	}

	ereport(LOG,
			errmsg("register \"%s\": a new copy of table %s was requested by user \"%s\"",
				   name, relname, GetUserNameFromId(GetUserId(), false)));
	PG_RETURN_VOID();
}

/*-------------------------------------------------------------------------
 * The apply worker's side
 *-------------------------------------------------------------------------
 */

void
de_table_sync_start(const char *register_name, DeApply *apply)
{
	if (ts_cxt == NULL)
		ts_cxt = AllocSetContextCreate(TopMemoryContext,
									   "data_embassy table sync",
									   ALLOCSET_SMALL_SIZES);
	strlcpy(ts_register, register_name, NAMEDATALEN);
	ts_apply = apply;
	ts_entries = NIL;
	ts_handle = NULL;
	ts_running = NULL;
	ts_spool = NULL;
	MemoryContextReset(ts_cxt);

	/* copies claimed by an earlier run can no longer commit */
	ts_read_catalog(true, InvalidXLogRecPtr);
	ts_next_read = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											   TABLE_SYNC_READ_MS);
}

bool
de_table_sync_any(void)
{
	return ts_entries != NIL;
}

static TableSyncEntry *
ts_find(Oid relid)
{
	ListCell   *lc;

	foreach(lc, ts_entries)
	{
		TableSyncEntry *e = (TableSyncEntry *) lfirst(lc);

		if (e->relid == relid)
			return e;
	}
	return NULL;
}

/* Forget the deferred changes (the spool file goes with them). */
static void
ts_spool_reset(void)
{
	if (ts_spool != NULL)
		BufFileClose(ts_spool);
	ts_spool = NULL;
	ts_spool_changes = 0;
}

/*
 * ts_spool_lost
 *		A change to the table being copied could not be deferred (or the
 *		deferred ones can no longer be applied): drop them, and have the
 *		copy made again once this one is in, from a snapshot later than all
 *		of them, which then holds them.
 */
static void
ts_spool_lost(TableSyncEntry *e, const char *why)
{
	if (!e->spool_lost)
		ereport(LOG,
				errmsg("register \"%s\": table \"%s\" will be copied once more: %s",
					   ts_register, e->relname, why));
	e->spool_lost = true;
	ts_spool_reset();
}

/*
 * ts_read_catalog
 *		Read the register's tables to copy, copied or with a copy's LSN the
 *		stream has not passed (applied), in a transaction of its own.
 */
static void
ts_read_catalog(bool reset_attempts, XLogRecPtr applied)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	List	   *rows;
	List	   *seen = NIL;
	ListCell   *lc;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	MemoryContextSwitchTo(ts_cxt);
	rows = de_catalog_table_syncs(ts_register, reset_attempts);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(ts_cxt);

	foreach(lc, rows)
	{
		DeTableSyncRow *row = (DeTableSyncRow *) lfirst(lc);
		TableSyncEntry *e = ts_find(row->relid);

		if (row->state == 'r' &&
			(XLogRecPtrIsInvalid(row->lsn) ||
			 (!XLogRecPtrIsInvalid(applied) && row->lsn <= applied)))
			continue;			/* passed: nothing to skip any more */
		seen = lappend_oid(seen, row->relid);
		if (e == NULL)
		{
			e = palloc0(sizeof(TableSyncEntry));
			e->relid = row->relid;
			e->phase = TS_DONE;
			e->lsn = row->lsn;
			ts_entries = lappend(ts_entries, e);
		}
		if (row->state == 'r')
		{
			if (e->phase != TS_COPYING)
			{
				e->phase = TS_DONE;
				e->lsn = row->lsn;
			}
		}
		else if (e->phase == TS_DONE)
			e->phase = TS_PENDING;	/* 'i' (or 'd' of a run gone) */
		if (e->phase == TS_COPYING && row->state == 'd' &&
			row->attempt == e->attempt)
		{
			e->copied = true;
			e->copied_lsn = row->lsn;
		}
	}

	/* rows gone (resync_register, a relation no longer replicated) */
	foreach(lc, ts_entries)
	{
		TableSyncEntry *e = (TableSyncEntry *) lfirst(lc);

		if (!list_member_oid(seen, e->relid))
		{
			if (ts_running == e)
			{
				ts_running = NULL;
				ts_spool_reset();
			}
			ts_entries = foreach_delete_current(ts_entries, lc);
			pfree(e);
		}
	}
	list_free_deep(rows);
	list_free(seen);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * ts_copy_worker_stopped
 *		Has the copy worker ended (or was none started)?
 */
static bool
ts_copy_worker_stopped(void)
{
	pid_t		pid;

	if (ts_handle == NULL)
		return true;
	if (GetBackgroundWorkerPid(ts_handle, &pid) != BGWH_STOPPED)
		return false;
	pfree(ts_handle);
	ts_handle = NULL;
	return true;
}

static void
ts_retry_later(void)
{
	ts_next_launch = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												 Max(de_retry_interval_ms, 1000));
}

/*
 * ts_launch
 *		Start the copy worker of a claimed table.
 */
static void
ts_launch(TableSyncEntry *e)
{
	BackgroundWorker bgw;
	TableSyncArgs args;
	MemoryContext oldcxt;
	BackgroundWorkerHandle *handle;

	memset(&bgw, 0, sizeof(bgw));
	memset(&args, 0, sizeof(args));
	args.dboid = MyDatabaseId;
	args.relid = e->relid;
	args.attempt = e->attempt;
	args.launcher_pid = MyProcPid;
	strlcpy(args.register_name, ts_register, NAMEDATALEN);

	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	bgw.bgw_notify_pid = MyProcPid;
	strlcpy(bgw.bgw_library_name, DE_EXTENSION_NAME, BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "de_table_sync_worker_main", BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN,
			 "data_embassy resync of table %u for register %s",
			 e->relid, ts_register);
	strlcpy(bgw.bgw_type, "data_embassy resync", BGW_MAXLEN);
	bgw.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);
	memcpy(bgw.bgw_extra, &args, sizeof(args));

	ts_running = e;
	oldcxt = MemoryContextSwitchTo(ts_cxt);
	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		MemoryContextSwitchTo(oldcxt);
		ts_retry_later();
		ereport(WARNING,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("register \"%s\": no background worker slot free for the new copy of a table",
					   ts_register),
				errhint("You might need to increase \"max_worker_processes\".  The copy is tried again."));
		return;
	}
	MemoryContextSwitchTo(oldcxt);
	ts_handle = handle;
}

/*
 * ts_claim
 *		Claim the copy of a table under a fresh attempt number (from state
 *		'i', or again from 'd' of our own attempt): a committed UPDATE, so
 *		that a copy of any other attempt can no longer commit.
 */
static bool
ts_claim(TableSyncEntry *e)
{
	int64		attempt;
	bool		claimed;

	if (!pg_strong_random(&attempt, sizeof(attempt)))
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not generate a random attempt number"));
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	claimed = de_catalog_claim_table_sync(e->relid, e->phase == TS_COPYING ?
										  e->attempt : 0, attempt);
	{
		char	   *name = get_rel_name(e->relid);

		strlcpy(e->relname, name ? name : "?", NAMEDATALEN);
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(ts_cxt);
	if (!claimed)
		return false;
	e->phase = TS_COPYING;
	e->attempt = attempt;
	e->copied = false;
	e->spool_lost = false;
	ts_spool_reset();
	return true;
}

/*
 * ts_catch_up
 *		The copy of e committed at copied_lsn: apply the deferred changes of
 *		the transactions that committed at or after it, and set the table
 *		ready, in one local transaction (a crash before its commit copies
 *		the table again).
 */
static void
ts_catch_up(TableSyncEntry *e)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	MemoryContext reccxt;
	uint64		applied = 0;
	uint64		skipped = 0;
	bool		ready;

	reccxt = AllocSetContextCreate(ts_cxt, "data_embassy deferred change",
								   ALLOCSET_DEFAULT_SIZES);
	de_apply_stream_begin(ts_apply, InvalidTransactionId, InvalidXLogRecPtr,
						  0);
	ts_replaying = true;
	if (ts_spool != NULL)
	{
		if (BufFileSeek(ts_spool, 0, 0, SEEK_SET) != 0)
			ereport(ERROR,
					errcode_for_file_access(),
					errmsg("could not rewind the deferred changes of table \"%s\": %m",
						   e->relname));
		for (;;)
		{
			XLogRecPtr	commit_lsn;
			uint32		len;
			char	   *buf;
			DeReader	reader;
			DeRecord	rec;
			size_t		n;

			CHECK_FOR_INTERRUPTS();
			n = BufFileRead(ts_spool, &commit_lsn, sizeof(commit_lsn));
			if (n == 0)
				break;
			if (n != sizeof(commit_lsn) ||
				BufFileRead(ts_spool, &len, sizeof(len)) != sizeof(len))
				ereport(ERROR,
						errcode(ERRCODE_DATA_CORRUPTED),
						errmsg("the deferred changes of table \"%s\" are truncated",
							   e->relname));
			MemoryContextSwitchTo(reccxt);
			/* the apply wants a byte after the last value */
			buf = palloc_extended((Size) len + 1, MCXT_ALLOC_HUGE);
			if (BufFileRead(ts_spool, buf, len) != len)
				ereport(ERROR,
						errcode(ERRCODE_DATA_CORRUPTED),
						errmsg("the deferred changes of table \"%s\" are truncated",
							   e->relname));
			buf[len] = '\0';
			if (commit_lsn >= e->copied_lsn)
			{
				de_reader_init(&reader, buf, len);
				while (de_read_record(&reader, &rec))
					de_apply_record(ts_apply, &rec);
				de_apply_frame_end(ts_apply);
				applied++;
			}
			else
				skipped++;
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(reccxt);
		}
	}
	PushActiveSnapshot(GetTransactionSnapshot());
	ready = de_catalog_ready_table_sync(e->relid, e->attempt);
	PopActiveSnapshot();
	if (!ready)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("table \"%s\" is no longer copied under this worker's claim",
					   e->relname));
	de_apply_commit_local(ts_apply);
	ts_replaying = false;
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(reccxt);

	ereport(LOG,
			errmsg("register \"%s\": table \"%s\" caught up with the stream after its new copy at %X/%X (" UINT64_FORMAT " deferred changes applied, " UINT64_FORMAT " held by the copy)",
				   ts_register, e->relname,
				   LSN_FORMAT_ARGS(e->copied_lsn), applied, skipped));
	e->phase = TS_DONE;
	e->lsn = e->copied_lsn;
	e->copied = false;
	ts_spool_reset();
	if (ts_running == e)
		ts_running = NULL;
}

bool
de_table_sync_poll(XLogRecPtr applied)
{
	TimestampTz now;
	bool		stopped = false;
	ListCell   *lc;

	if (ts_cxt == NULL || IsTransactionState())
		return ts_entries != NIL;

	now = GetCurrentTimestamp();
	if (ts_handle != NULL && ts_copy_worker_stopped())
	{
		/* the copy ended: committed, or to be started again */
		ts_next_read = 0;
		stopped = true;
	}
	if (now >= ts_next_read)
	{
		ts_read_catalog(false, applied);
		ts_next_read = TimestampTzPlusMilliseconds(now, TABLE_SYNC_READ_MS);
	}

	/*
	 * A copy that ended without committing: its deferred changes go (the next
	 * copy's snapshot is later than all of them), and the table waits its
	 * backoff before the next copy, in which it drops its changes.
	 */
	if (stopped && ts_running != NULL && ts_running->phase == TS_COPYING &&
		!ts_running->copied)
	{
		TableSyncEntry *e = ts_running;

		e->failures++;
		e->next_attempt = TimestampTzPlusMilliseconds(now,
													  de_backoff_ms(e->failures));
		e->phase = TS_PENDING;
		ts_spool_reset();
		ts_running = NULL;
	}

	/* a copy that committed: catch up, or copy once more */
	if (ts_running != NULL && ts_running->copied)
	{
		TableSyncEntry *e = ts_running;

		if (!e->spool_lost)
			ts_catch_up(e);
		else if (ts_claim(e))
		{
			ts_next_launch = 0;
			ereport(LOG,
					errmsg("register \"%s\": table \"%s\" is copied once more",
						   ts_register, e->relname));
		}
	}

	/* copies the stream has passed hold nothing back any more */
	foreach(lc, ts_entries)
	{
		TableSyncEntry *e = (TableSyncEntry *) lfirst(lc);

		if (e->phase == TS_DONE && !XLogRecPtrIsInvalid(applied) &&
			e->lsn <= applied)
		{
			ts_entries = foreach_delete_current(ts_entries, lc);
			pfree(e);
		}
	}

	/* one copy at a time: start the next one, or this one again */
	if (ts_handle == NULL && now >= ts_next_launch)
	{
		TableSyncEntry *next = NULL;

		foreach(lc, ts_entries)
		{
			TableSyncEntry *e = (TableSyncEntry *) lfirst(lc);

			if (e->phase == TS_COPYING && !e->copied)
			{
				next = e;
				break;
			}
		}
		if (next == NULL)
		{
			foreach(lc, ts_entries)
			{
				TableSyncEntry *e = (TableSyncEntry *) lfirst(lc);

				if (e->phase == TS_PENDING && e->next_attempt <= now &&
					ts_claim(e))
				{
					next = e;
					break;
				}
			}
		}
		if (next != NULL)
			ts_launch(next);
	}
	return ts_entries != NIL;
}

bool
de_table_sync_wanted(Oid relid, XLogRecPtr commit_lsn, const char *raw,
					 size_t rawlen)
{
	TableSyncEntry *e = ts_find(relid);
	MemoryContext oldcxt;
	uint32		len;

	if (e == NULL || ts_replaying)
		return true;
	if (e->phase == TS_PENDING)
		return false;
	if (e->phase != TS_COPYING)
		return XLogRecPtrIsInvalid(e->lsn) || commit_lsn >= e->lsn;

	/* being copied: defer the change, to be applied after the copy */
	if (e->spool_lost)
		return false;
	if (raw == NULL)
	{
		ts_spool_lost(e, "a TRUNCATE came while it was being copied");
		return false;
	}
	if (XLogRecPtrIsInvalid(commit_lsn))
		elog(ERROR, "change to a table being copied again in a transaction whose commit LSN is not known");
	if (rawlen > PG_UINT32_MAX)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("change record of %zu bytes is too large to defer",
					   rawlen));

	if (ts_spool == NULL)
	{
		oldcxt = MemoryContextSwitchTo(ts_cxt);
		ts_spool = BufFileCreateTemp(true);
		MemoryContextSwitchTo(oldcxt);
		ereport(LOG,
				errmsg("register \"%s\": changes to table \"%s\" are deferred until its new copy commits",
					   ts_register, e->relname));
	}
	len = (uint32) rawlen;
	BufFileWrite(ts_spool, &commit_lsn, sizeof(commit_lsn));
	BufFileWrite(ts_spool, &len, sizeof(len));
	BufFileWrite(ts_spool, unconstify(char *, raw), len);
	ts_spool_changes++;
	return false;
}

int
de_table_sync_retry(void)
{
	ListCell   *lc;
	int			waiting = 0;

	foreach(lc, ts_entries)
	{
		TableSyncEntry *e = (TableSyncEntry *) lfirst(lc);

		if (e->phase == TS_PENDING && e->failures > 0)
		{
			e->failures = 0;
			e->next_attempt = 0;
			waiting++;
		}
	}
	if (waiting > 0)
	{
		ts_next_launch = 0;
		ts_next_read = 0;
		ereport(LOG,
				errmsg_plural("register \"%s\": %d table whose copy failed is copied again now, as asked",
							  "register \"%s\": %d tables whose copy failed are copied again now, as asked",
							  waiting, ts_register, waiting));
	}
	return waiting;
}

void
de_table_sync_relation(Oid relid, bool same_description)
{
	TableSyncEntry *e = ts_find(relid);

	if (e != NULL && e->phase == TS_COPYING && !ts_replaying &&
		!same_description && ts_spool_changes > 0)
		ts_spool_lost(e, "the register described it anew while it was being copied");
}

void
de_table_sync_stream_reset(void)
{
	if (ts_running != NULL && ts_running->phase == TS_COPYING &&
		ts_spool_changes > 0)
		ts_spool_lost(ts_running, "the stream started over while it was being copied");
}

/*-------------------------------------------------------------------------
 * The copy worker
 *-------------------------------------------------------------------------
 */

/* the copy worker's state, for its error handling and progress */
static TableSyncArgs ts_args;
static DeWalConn *ts_repl_conn = NULL;
static DeWalConn *ts_copy_conn = NULL;
static DeRegisterSlot *ts_slot = NULL;
static char *ts_relname = NULL;

static void ts_worker_run(void);
static void ts_worker_close(void);
static void ts_check_launcher(void);
static void ts_empty_table(Oid relid, const char *qualified);

static void
ts_worker_close(void)
{
	if (ts_copy_conn != NULL)
	{
		de_walconn_close(ts_copy_conn);
		ts_copy_conn = NULL;
	}
	/* the temporary slot goes with this connection */
	if (ts_repl_conn != NULL)
	{
		de_walconn_close(ts_repl_conn);
		ts_repl_conn = NULL;
	}
}

void
de_table_sync_worker_main(Datum main_arg)
{
	memcpy(&ts_args, MyBgworkerEntry->bgw_extra, sizeof(ts_args));

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(ts_args.dboid, InvalidOid, 0);

	/* as the apply worker: a replica's triggers, the guard lets us write */
	SetConfigOption("session_replication_role", "replica",
					PGC_SUSET, PGC_S_OVERRIDE);
	de_background_session_settings();
	de_guard_exempt = true;

	PG_TRY();
	{
		ts_worker_run();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		EmitErrorReport();
		AbortOutOfAnyTransaction();
		LWLockReleaseAll();
		FlushErrorState();

		/*
		 * table_resyncs says why the copy failed (a shutdown or cancel is not
		 * the table's failure)
		 */
		if (ts_relname != NULL &&
			ERRCODE_TO_CATEGORY(edata->sqlerrcode) !=
			ERRCODE_OPERATOR_INTERVENTION)
		{
			char	   *why = de_apply_describe_error(edata);

			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			(void) de_catalog_fail_table_sync(ts_args.relid, ts_args.attempt,
											  why);
			PopActiveSnapshot();
			CommitTransactionCommand();
		}

		/* the lag view says why the table's changes wait */
		if (ts_slot != NULL)
		{
			char	   *msg = psprintf("new copy of table \"%s\": %s",
									   ts_relname ? ts_relname : "?",
									   edata->message);

			SpinLockAcquire(&ts_slot->mutex);
			strlcpy(ts_slot->last_error, msg, DE_ERROR_LEN);
			SpinLockRelease(&ts_slot->mutex);
		}
		ereport(LOG,
				errmsg("register \"%s\": the new copy of table \"%s\" failed; it will be tried again",
					   ts_args.register_name,
					   ts_relname ? ts_relname : "?"));
		ts_worker_close();
		proc_exit(1);
	}
	PG_END_TRY();

	ts_worker_close();
	proc_exit(0);
}

/*
 * ts_check_launcher
 *		The apply worker that claimed the copy must still run (its changes
 *		to the table wait for us); a copy of a run gone is not wanted (and
 *		could not commit).
 */
static void
ts_check_launcher(void)
{
	bool		ok;

	LWLockAcquire(DeShared->lock, LW_SHARED);
	ok = ts_slot->in_use && ts_slot->dboid == ts_args.dboid &&
		strcmp(ts_slot->name, ts_args.register_name) == 0 &&
		ts_slot->worker_pid == ts_args.launcher_pid &&
		!ts_slot->drop_requested && !ts_slot->promoted;
	LWLockRelease(DeShared->lock);
	if (!ok)
		ereport(ERROR,
				errcode(ERRCODE_ADMIN_SHUTDOWN),
				errmsg("the apply worker of register \"%s\" that started this copy has stopped",
					   ts_args.register_name));
}

/*
 * ts_empty_table
 *		Delete the table's rows in the copy's transaction, as the table's
 *		owner (readers keep seeing them until the copy commits).
 */
static void
ts_empty_table(Oid relid, const char *qualified)
{
	Oid			save_userid;
	int			save_sec_context;
	char	   *sql;
	int			ret;

	sql = psprintf("DELETE FROM %s%s",
				   get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE ?
				   "" : "ONLY ", qualified);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(de_relation_owner(relid),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute(sql, false, 0);
	if (ret != SPI_OK_DELETE)
		elog(ERROR, "could not empty table %s: %s", qualified,
			 SPI_result_code_string(ret));
	SPI_finish();
	PopActiveSnapshot();
	CommandCounterIncrement();
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/*
 * ts_worker_run
 *		The copy: see the file header, step 3.
 */
static void
ts_worker_run(void)
{
	MemoryContext cxt;
	MemoryContext framecxt;
	DeRegister *reg;
	char	   *owner;
	Oid			remote_relid = InvalidOid;
	char		state;
	XLogRecPtr	lsn;
	int64		attempt;
	char	   *nspname;
	char	   *qualified;
	uint8		own_priv[DE_KEY_LEN];
	uint8		own_pub[DE_KEY_LEN];
	DePublicKey own_key;
	DePublicKey register_pub;
	char	   *own_key_text;
	char	   *slot_name;
	char	   *snapshot;
	XLogRecPtr	consistent;
	XLogRecPtr	sealed = InvalidXLogRecPtr;
	uint8		session_priv[DE_KEY_LEN];
	uint8		session[DE_SESSION_LEN];
	uint64		sysid;
	TimeLineID	tli;
	XLogRecPtr	xlogpos;
	DeOpener   *opener;
	DeApply    *apply;
	char	   *frame;
	int			len;
	bool		relation_seen = false;
	uint64		rows = 0;
	uint64		bytes = 0;

	cxt = AllocSetContextCreate(TopMemoryContext, "data_embassy resync",
								ALLOCSET_DEFAULT_SIZES);
	framecxt = AllocSetContextCreate(cxt, "data_embassy resync frame",
									 ALLOCSET_DEFAULT_SIZES);

	/* is the copy still wanted, under our claim? */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	MemoryContextSwitchTo(cxt);
	reg = de_catalog_get_register(ts_args.register_name, DE_LOCK_NONE, true);
	state = de_catalog_table_sync_state(ts_args.relid, &lsn, &attempt);
	owner = de_catalog_relation_register(ts_args.relid, &remote_relid);
	ts_relname = get_rel_name(ts_args.relid);
	nspname = get_namespace_name(get_rel_namespace(ts_args.relid));
	if (reg == NULL || state != 'i' || attempt != ts_args.attempt ||
		owner == NULL || strcmp(owner, ts_args.register_name) != 0 ||
		ts_relname == NULL || nspname == NULL)
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		ereport(LOG,
				errmsg("register \"%s\": the new copy of table %u is no longer wanted",
					   ts_args.register_name, ts_args.relid));
		return;
	}
	qualified = quote_qualified_identifier(nspname, ts_relname);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);

	LWLockAcquire(DeShared->lock, LW_SHARED);
	ts_slot = de_slot_find(ts_args.dboid, ts_args.register_name);
	LWLockRelease(DeShared->lock);
	if (ts_slot == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" has no apply worker slot",
					   ts_args.register_name));
	ts_check_launcher();

	if (!reg->pinned || reg->slot_name == NULL ||
		reg->phase != DE_PHASE_STREAMING)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" is not streaming", reg->name));
	if (!OidIsValid(remote_relid))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("table %s does not know which table of register \"%s\" it replicates",
					   qualified, reg->name));

	de_identity_require(own_priv, own_pub);
	de_identity_public(&own_key);
	own_key_text = pstrdup(de_key_to_text(&own_key));
	de_key_from_text(reg->register_key, "register_key", &register_pub);

	ereport(LOG,
			errmsg("register \"%s\": new copy of table %s started",
				   reg->name, qualified));
	SpinLockAcquire(&ts_slot->mutex);
	ts_slot->copy_started = true;
	ts_slot->copy_tables_total = 1;
	ts_slot->copy_tables_done = 0;
	ts_slot->copy_rows = 0;
	ts_slot->copy_bytes = 0;
	SpinLockRelease(&ts_slot->mutex);

	/* the register, as pinned */
	if (reg->require_tls)
		(void) de_conninfo_require_tls(reg->conninfo, reg->name, ERROR,
									   ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION);
	ts_repl_conn = de_walconn_connect(reg->conninfo, true, TABLE_SYNC_APPNAME);
	de_walconn_identify(ts_repl_conn, &sysid, &tli, &xlogpos);
	if (sysid != reg->sysid ||
		de_walconn_database_oid(ts_repl_conn) != reg->dboid)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" is not the database it was first connected to",
					   reg->name));

	/* a snapshot of its own: a temporary slot's, at consistent point S */
	slot_name = psprintf("%s%s", reg->slot_name, DE_RESYNC_SLOT_SUFFIX);
	consistent = de_walconn_create_temp_slot(ts_repl_conn, slot_name,
											 &snapshot);

	/* a fresh session key pair: the register seals to its public half */
	de_x25519_generate(session_priv, session);
	ts_copy_conn = de_walconn_connect(reg->conninfo, false,
									  TABLE_SYNC_APPNAME);
	de_walconn_copy_table_start(ts_copy_conn, snapshot, own_key_text,
								session, slot_name, remote_relid);
	opener = de_opener_create(cxt, own_priv, register_pub.dh,
							  register_pub.sign, session_priv,
							  DE_FRAME_KIND_COPY, true,
							  reg->sysid, reg->dboid);
	de_secure_zero(own_priv, sizeof(own_priv));
	de_secure_zero(session_priv, sizeof(session_priv));

	/* one local transaction: the old rows go, the copy's come */
	apply = de_apply_create(cxt, reg->name, InvalidRepOriginId);
	de_apply_copy_begin(apply, false);
	ts_empty_table(ts_args.relid, qualified);

	while ((frame = de_walconn_copy_next(ts_copy_conn, &len)) != NULL)
	{
		DeFrameHeader hdr;
		StringInfoData plain;
		DeReader	reader;
		DeRecord	rec;
		uint64		frame_rows = 0;
		bool		end = false;

		CHECK_FOR_INTERRUPTS();
		ts_check_launcher();

		MemoryContextSwitchTo(framecxt);
		initStringInfo(&plain);
		de_opener_open(opener, frame, len, &hdr, &plain);

		if (!(hdr.flags & DE_FRAME_POSITION) && plain.len > 0)
		{
			de_reader_init(&reader, plain.data, plain.len);
			while (de_read_record(&reader, &rec))
			{
				CHECK_FOR_INTERRUPTS();

				/* frame 1 opens with the HELLO: our slot, sealed S */
				if (XLogRecPtrIsInvalid(sealed))
				{
					if (rec.type != DE_REC_HELLO || hdr.seq != 1)
						ereport(ERROR,
								errcode(ERRCODE_PROTOCOL_VIOLATION),
								errmsg("copy of table %s from register \"%s\" does not begin with its HELLO record",
									   qualified, reg->name));
					if (strcmp(rec.slot, slot_name) != 0)
						ereport(ERROR,
								errcode(ERRCODE_PROTOCOL_VIOLATION),
								errmsg("copy of table %s from register \"%s\" belongs to another replication slot",
									   qualified, reg->name),
								errdetail("Its HELLO names slot \"%s\"; the copy's slot is \"%s\".",
										  rec.slot, slot_name));
					if (XLogRecPtrIsInvalid(rec.lsn) ||
						rec.lsn != hdr.start_lsn || rec.lsn != consistent)
						ereport(ERROR,
								errcode(ERRCODE_PROTOCOL_VIOLATION),
								errmsg("reply of register \"%s\" to CREATE_REPLICATION_SLOT was rewritten",
									   reg->name),
								errdetail("The reply gave consistent point %X/%X; the register sealed %X/%X into the copy of table %s.",
										  LSN_FORMAT_ARGS(consistent),
										  LSN_FORMAT_ARGS(rec.lsn),
										  qualified));
					sealed = rec.lsn;
					continue;
				}

				switch (rec.type)
				{
					case DE_REC_RELATION:
						{
							Oid			local;

							/* exactly the table asked for, sealed */
							local = RangeVarGetRelid(makeRangeVar(rec.nspname,
																  rec.relname,
																  -1),
													 NoLock, true);
							if (relation_seen || rec.relid != remote_relid ||
								local != ts_args.relid)
								ereport(ERROR,
										errcode(ERRCODE_PROTOCOL_VIOLATION),
										errmsg("copy of table %s from register \"%s\" holds another table",
											   qualified, reg->name),
										errdetail("It holds table \"%s.%s\" (OID %u at the register); the copy asked for the table with OID %u there.",
												  rec.nspname, rec.relname,
												  rec.relid, remote_relid));
							relation_seen = true;
							break;
						}
					case DE_REC_INSERT:
						if (!relation_seen)
							ereport(ERROR,
									errcode(ERRCODE_PROTOCOL_VIOLATION),
									errmsg("copy of table %s from register \"%s\" sends rows before its table",
										   qualified, reg->name));
						frame_rows++;
						break;
					case DE_REC_MESSAGE:
						/* the sealed table count, before the table */
						if (relation_seen)
							ereport(ERROR,
									errcode(ERRCODE_PROTOCOL_VIOLATION),
									errmsg("unexpected %s record in copy of table %s from register \"%s\"",
										   de_record_type_name(rec.type),
										   qualified, reg->name));
						break;
					case DE_REC_COPY_END:
						if (de_apply_copy_tables_planned(apply) != 1)
							ereport(ERROR,
									errcode(ERRCODE_PROTOCOL_VIOLATION),
									errmsg("copy of table %s from register \"%s\" does not say it holds one table",
										   qualified, reg->name));
						end = true;
						break;
					default:
						ereport(ERROR,
								errcode(ERRCODE_PROTOCOL_VIOLATION),
								errmsg("unexpected %s record in copy of table %s from register \"%s\"",
									   de_record_type_name(rec.type),
									   qualified, reg->name));
				}
				de_apply_record(apply, &rec);
			}
			de_apply_frame_end(apply);
		}

		rows += frame_rows;
		bytes += len;
		SpinLockAcquire(&ts_slot->mutex);
		ts_slot->copy_rows = rows;
		ts_slot->copy_bytes = bytes;
		if (end)
			ts_slot->copy_tables_done = 1;
		SpinLockRelease(&ts_slot->mutex);

		MemoryContextSwitchTo(cxt);
		MemoryContextReset(framecxt);
	}

	if (XLogRecPtrIsInvalid(sealed) || !relation_seen ||
		!de_apply_copy_done(apply))
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("copy of table %s from register \"%s\" is incomplete",
					   qualified, reg->name),
				errdetail("The register ended it without its %s record.",
						  XLogRecPtrIsInvalid(sealed) ? "HELLO" :
						  !relation_seen ? "RELATION" : "COPY_END"));
	ts_check_launcher();

	/* the state with the rows: only under our claim */
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!de_catalog_finish_table_sync(ts_args.relid, ts_args.attempt, sealed))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("the new copy of table %s is no longer wanted",
					   qualified),
				errdetail("Another run of the apply worker of register \"%s\" took it over, or the table is no longer replicated.",
						  reg->name));
	PopActiveSnapshot();
	de_apply_commit(apply, sealed, GetCurrentTimestamp());
	MemoryContextSwitchTo(cxt);

	ts_worker_close();
	ereport(LOG,
			errmsg("register \"%s\": new copy of table %s done at register LSN %X/%X (" UINT64_FORMAT " rows)",
				   reg->name, qualified, LSN_FORMAT_ARGS(sealed), rows));
}
