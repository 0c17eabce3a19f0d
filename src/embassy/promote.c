/*-------------------------------------------------------------------------
 *
 * promote.c
 *		  data_embassy.promote(): fail over one register, or all of them.
 *
 * For each register:
 *	1. With wait_for_catchup (a planned switch-over), ask the worker for a
 *	   sealed heartbeat made after the call began and wait (at most that
 *	   long) until it has come back and everything up to the register's WAL
 *	   flush position it carries is applied: then nothing is lost as of that
 *	   proof.  Without such a proof in time it is an error and nothing is
 *	   promoted, unless accept_data_loss says to promote with what was
 *	   received.  Nothing unsealed (IDENTIFY_SYSTEM, keepalives) is asked.
 *	   Without wait_for_catchup (the register is lost) nothing is waited for.
 *	2. Tell the apply worker to stop (the slot's "promoted" flag): it applies
 *	   the frames it has already received, abandons a transaction whose last
 *	   frame never came, and exits.
 *	3. In one transaction: mark the register promoted with its time and the
 *	   register LSN everything before which was applied (the fence: no worker
 *	   ever connects for a promoted register again), advance every replicated
 *	   sequence past its last replicated value by
 *	   data_embassy.promote_sequence_margin, and lift the write guard.
 *	4. Once every register named is promoted, warn of each one's tables
 *	   whose last copy did not finish (replicated_relations.sync_state other
 *	   than 'r': a resync_table() copy wanted, under way or catching up,
 *	   or a table an initial copy left out):
 *	   they are promoted as they are, without the register's changes made
 *	   to them since that copy began.
 *
 * Every register named is promoted in one transaction, or none is: an error
 * for any of them puts every worker stopped so far back to work.  Their
 * rows are locked FOR NO KEY UPDATE first, so of two concurrent promote() calls
 * for one register the second waits and then finds it promoted.  A crash
 * before the commit leaves the registers as they were: replicating, not
 * promoted (the workers restart).  Once it commits they are fully
 * promoted, and data_embassy.promotions keeps the record.
 *
 * IDENTIFICATION
 *		  src/embassy/promote.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/origin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "data_embassy.h"
#include "embassy/catalog.h"
#include "embassy/guard.h"
#include "embassy/launcher.h"
#include "embassy/promote.h"
#include "embassy/status.h"
#include "embassy/worker.h"
#include "privilege.h"

int			de_promote_sequence_margin = 1000;
int			de_test_promote_delay_ms = 0;

/* How long the worker gets to apply what it has and stop. */
#define PROMOTE_STOP_TIMEOUT_MS		60000

PG_FUNCTION_INFO_V1(data_embassy_promote);

typedef struct PromoteTarget
{
	DeRegister *reg;
	DeRegisterSlot *slot;		/* NULL if the register has no slot */
	bool		stopped;		/* we flagged the slot promoted */
	DeState		prior_state;	/* the slot's state before that */
	XLogRecPtr	applied;
	XLogRecPtr	source;
	TimestampTz now;
	List	   *not_ready;		/* tables whose last copy did not finish */
} PromoteTarget;

/* At most this many of those tables are named in the warning. */
#define PROMOTE_NOT_READY_NAMED		10

/*
 * promote_targets
 *		The registers to promote: the one named (which must exist and not be
 *		promoted yet), or every register of this database not yet promoted.
 *		Their rows are locked FOR NO KEY UPDATE until the end of the
 *		transaction, so a concurrent promote() of the same register waits
 *		for this one and then finds it promoted, and drop_register (FOR
 *		UPDATE) waits too; the launcher's scans (FOR KEY SHARE SKIP LOCKED,
 *		which take a row they cannot lock for one being dropped) do not.
 */
static pg_noinline List *
promote_targets(const char *name)
{
	List	   *names = NIL;
	List	   *targets = NIL;
	ListCell   *lc;

	if (name)
		names = list_make1(pstrdup(name));
	else
	{
		foreach(lc, de_catalog_list_registers(true))
			names = lappend(names, ((DeRegister *) lfirst(lc))->name);
	}

	foreach(lc, names)
	{
		const char *n = lfirst(lc);
		PromoteTarget *t;
		DeRegister *reg;

		reg = de_catalog_get_register(n, DE_LOCK_NO_KEY_UPDATE, name == NULL);
		if (reg == NULL)
			continue;			/* dropped meanwhile */
		if (reg->phase == DE_PHASE_PROMOTED)
		{
			if (name == NULL)
				continue;		/* promoted meanwhile */
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("register \"%s\" is already promoted", n),
					errdetail("It was promoted at %s, at register LSN %X/%X.",
							  timestamptz_to_str(reg->promoted_at),
							  LSN_FORMAT_ARGS(reg->promoted_lsn)));
		}
		t = palloc0(sizeof(PromoteTarget));
		t->reg = reg;
		targets = lappend(targets, t);
	}
	return targets;
}

/* Copy a slot's applied and source positions under its spinlock. */
static void
slot_positions(DeRegisterSlot *slot, XLogRecPtr *applied, XLogRecPtr *source)
{
	SpinLockAcquire(&slot->mutex);
	*applied = slot->applied_lsn;
	*source = slot->source_lsn;
	SpinLockRelease(&slot->mutex);
}

/*
 * promote_wait_proof
 *		Ask the worker for a sealed heartbeat made from now on and wait, at
 *		most wait_ms, until one has come back and the worker has applied up
 *		to the WAL flush position it carries.  Returns that position, or
 *		raises an error (nothing is promoted) when there is no such proof in
 *		time, unless accept_loss: then it warns and returns
 *		InvalidXLogRecPtr.
 */
static XLogRecPtr
promote_wait_proof(PromoteTarget *t, DeRegisterSlot *slot, int64 wait_ms,
				   bool accept_loss)
{
	TimestampTz start = GetCurrentTimestamp();
	TimestampTz deadline = TimestampTzPlusMilliseconds(start, wait_ms);
	TimestampTz proof_at = 0;
	XLogRecPtr	proof_flush = InvalidXLogRecPtr;
	XLogRecPtr	applied = InvalidXLogRecPtr;
	const char *why;

	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		if (slot->heartbeat_requested_at < start)
			slot->heartbeat_requested_at = start;
		SpinLockRelease(&slot->mutex);

		LWLockAcquire(DeShared->lock, LW_SHARED);
		if (slot->worker_latch != NULL)
			SetLatch(slot->worker_latch);
		LWLockRelease(DeShared->lock);

		for (;;)
		{
			CHECK_FOR_INTERRUPTS();

			SpinLockAcquire(&slot->mutex);
			proof_at = slot->proof_at;
			proof_flush = slot->proof_flush_lsn;
			applied = slot->applied_lsn;
			SpinLockRelease(&slot->mutex);

			if (proof_at >= start && !XLogRecPtrIsInvalid(applied) &&
				applied >= proof_flush)
				return proof_flush;
			if (GetCurrentTimestamp() >= deadline)
				break;

			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 50, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}

	if (slot == NULL)
		why = _("No apply worker runs for it.");
	else if (proof_at < start)
		why = _("No sealed heartbeat made after the call began came back from the register.");
	else
		why = psprintf(_("The register proved its WAL flushed to %X/%X, but only %X/%X was applied here."),
					   LSN_FORMAT_ARGS(proof_flush), LSN_FORMAT_ARGS(applied));

	if (!accept_loss)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" could not be proven caught up within %lld ms; nothing was promoted",
					   t->reg->name, (long long) wait_ms),
				errdetail_internal("%s", why),
				errhint("Check that data_embassy.lag shows its worker streaming and try again, or, to promote with what was received and lose what the register wrote since, call promote() with accept_data_loss => true."));

	ereport(WARNING,
			errmsg("register \"%s\" is promoted without proof that it caught up",
				   t->reg->name),
			errdetail_internal("%s", why));
	return InvalidXLogRecPtr;
}

/*
 * promote_stop_worker
 *		Flag the slot promoted and wait until its worker has gone.
 */
static void
promote_stop_worker(DeRegisterSlot *slot, const char *name)
{
	uint32		generation;

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	slot->promoted = true;
	generation = slot->generation;
	if (slot->worker_latch)
		SetLatch(slot->worker_latch);
	LWLockRelease(DeShared->lock);
	de_slot_set_state(slot, DE_STATE_PROMOTING, NULL);

	de_slot_wait_stopped(slot, generation, PROMOTE_STOP_TIMEOUT_MS, name);
}

/*
 * promote_commit_state
 *		The promotion proper, in the current transaction: fence, sequences,
 *		guard.  Returns the number of sequences advanced.
 */
static uint64
promote_commit_state(const char *name, XLogRecPtr applied,
					 XLogRecPtr source, TimestampTz now)
{
	uint64		nseq;

	de_catalog_set_promoted(name, now, applied, source);

	/*
	 * Each replicated sequence goes past both its own value and the last
	 * value the register reported, by the margin.
	 */
	nseq = de_catalog_advance_sequences(name, de_promote_sequence_margin);

	/* lifts the write guard */
	de_catalog_clear_relations(name);
	return nseq;
}

/*
 * promote_test_delay
 *		Pause between stopping the worker and committing, so that crash
 *		tests can kill the server in the middle (data_embassy.
 *		test_promote_delay).  Signals do not cut it short.
 */
static void
promote_test_delay(void)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													de_test_promote_delay_ms);

	for (;;)
	{
		long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														 until);

		CHECK_FOR_INTERRUPTS();
		if (ms <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * promote_one
 *		Steps 1 to 3 for one register; the caller undoes the worker stop if
 *		this or a later register fails.  The positions recorded are sealed
 *		ones only: what the origin says is applied here, and the highest
 *		register WAL position a sealed frame or proof reported.
 */
static void
promote_one(PromoteTarget *t, int64 wait_ms, bool accept_loss)
{
	XLogRecPtr	proven = InvalidXLogRecPtr;
	RepOriginId origin;

	t->source = InvalidXLogRecPtr;
	if (wait_ms > 0)
		proven = promote_wait_proof(t, t->slot, wait_ms, accept_loss);
	if (t->slot)
	{
		SpinLockAcquire(&t->slot->mutex);
		t->prior_state = t->slot->state;
		SpinLockRelease(&t->slot->mutex);
		t->stopped = true;
		promote_stop_worker(t->slot, t->reg->name);
		slot_positions(t->slot, &t->applied, &t->source);
	}

	if (de_test_promote_delay_ms > 0)
		promote_test_delay();

	/* What is applied is what the origin says is committed here. */
	origin = replorigin_by_name(de_origin_name(MyDatabaseId, t->reg->name),
								true);
	t->applied = (origin != InvalidRepOriginId) ?
		replorigin_get_progress(origin, false) : InvalidXLogRecPtr;
	if (proven > t->source)
		t->source = proven;

	/* before the promotion forgets them: see promote_warn_not_ready() */
	t->not_ready = de_catalog_tables_not_ready(t->reg->name);

	t->now = GetCurrentTimestamp();
	(void) promote_commit_state(t->reg->name, t->applied, t->source,
								t->now);
}

/*
 * promote_warn_not_ready
 *		The promotion goes ahead (whoever fails over cannot wait), but says
 *		which tables are not in step with the register: those a copy of
 *		which was wanted, under way or catching up with the stream
 *		(sync_state other than 'r': resync_table(), or an initial copy that
 *		did not finish).  They keep what they held before that copy, or the
 *		copy's rows without the register's changes since.
 */
static void
promote_warn_not_ready(PromoteTarget *t)
{
	StringInfoData names;
	int			n = list_length(t->not_ready);
	int			i = 0;
	ListCell   *lc;

	if (n == 0)
		return;
	initStringInfo(&names);
	foreach(lc, t->not_ready)
	{
		if (i == PROMOTE_NOT_READY_NAMED)
		{
			appendStringInfo(&names, _(", and %d more"), n - i);
			break;
		}
		if (i > 0)
			appendStringInfoString(&names, ", ");
		appendStringInfoString(&names, (const char *) lfirst(lc));
		i++;
	}
	ereport(WARNING,
			errcode(ERRCODE_WARNING),
			errmsg_plural("table %s is not in step with promoted register \"%s\": its last copy did not finish",
						  "tables %s are not in step with promoted register \"%s\": their last copy did not finish",
						  n, names.data, t->reg->name),
			errdetail_plural("It holds its rows from before that copy, or the copy's rows without the changes the register made since, so changes the register made to it may be missing here.  From now on it is an ordinary table that is not copied again.",
							 "They hold their rows from before that copy, or the copy's rows without the changes the register made since, so changes the register made to them may be missing here.  From now on they are ordinary tables that are not copied again.",
							 n),
			errhint_plural("If the register can still be reached, compare the table with its own and repair the rows that differ; otherwise accept the table as it is.",
						   "If the register can still be reached, compare the tables with its own and repair the rows that differ; otherwise accept the tables as they are.",
						   n));
	pfree(names.data);
}

/*
 * promote_undo_stops
 *		Not promoted after all: let the workers we stopped run again.
 */
static void
promote_undo_stops(List *targets)
{
	ListCell   *lc;
	bool		any = false;

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	foreach(lc, targets)
	{
		PromoteTarget *t = lfirst(lc);

		if (t->stopped)
		{
			/* we stopped it: start it again at once, no backoff */
			t->slot->promoted = false;
			t->slot->failures = 0;
			t->slot->next_start = 0;
			any = true;
		}
	}
	LWLockRelease(DeShared->lock);

	/* until its worker runs again, a slot shows what it showed before */
	foreach(lc, targets)
	{
		PromoteTarget *t = lfirst(lc);

		if (t->stopped)
			de_slot_set_state(t->slot, t->prior_state, NULL);
	}
	if (any)
		de_launcher_wakeup();
}

Datum
data_embassy_promote(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	int64		wait_ms = 0;
	bool		accept_loss;
	List	   *targets;
	ListCell   *lc;

	de_require_preloaded();
	de_check_admin_call("data_embassy.promote()");

	if (!PG_ARGISNULL(1))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(1);

		if (iv->month != 0 || iv->day != 0 || iv->time < 0)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid value for wait_for_catchup"),
					errdetail("The wait must be a non-negative number of hours, minutes or seconds."),
					errhint("Write it as, for example, '30 s' or '5 min'."));
		wait_ms = iv->time / 1000;
	}
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("accept_data_loss must not be null"),
				errhint("Pass true to promote without proof that the register caught up, false to refuse then."));
	accept_loss = PG_GETARG_BOOL(2);

	PreventInTransactionBlock(true, "data_embassy.promote()");

	SetSingleFuncCall(fcinfo, 0);
	targets = promote_targets(name);
	if (targets == NIL)
		ereport(NOTICE,
				errmsg("no register of this database is waiting to be promoted"));

	/*
	 * Every register named is promoted in this one transaction, or none is: a
	 * failure on any of them puts the workers stopped so far back to work and
	 * rolls back the state of all.
	 */
	PG_TRY();
	{
		foreach(lc, targets)
		{
			PromoteTarget *t = lfirst(lc);

			LWLockAcquire(DeShared->lock, LW_SHARED);
			t->slot = de_slot_find(MyDatabaseId, t->reg->name);
			LWLockRelease(DeShared->lock);

			promote_one(t, wait_ms, accept_loss);
		}
	}
	PG_CATCH();
	{
		promote_undo_stops(targets);
		PG_RE_THROW();
	}
	PG_END_TRY();

	foreach(lc, targets)
	{
		PromoteTarget *t = lfirst(lc);
		Datum		values[5];
		bool		nulls[5] = {false};
		int64		unreplicated;

		if (t->slot)
		{
			/* the views show what this promotion reports */
			SpinLockAcquire(&t->slot->mutex);
			t->slot->promoted_at = t->now;
			t->slot->promoted_lsn = t->applied;
			t->slot->applied_lsn = t->applied;
			t->slot->source_lsn = t->source;
			SpinLockRelease(&t->slot->mutex);
			de_slot_set_state(t->slot, DE_STATE_PROMOTED, NULL);
		}

		values[0] = CStringGetTextDatum(t->reg->name);
		values[1] = TimestampTzGetDatum(t->now);
		values[2] = LSNGetDatum(t->applied);
		nulls[2] = XLogRecPtrIsInvalid(t->applied);
		values[3] = LSNGetDatum(t->source);
		nulls[3] = XLogRecPtrIsInvalid(t->source);
		/* as failover_status computes it; unknown without both positions */
		unreplicated = de_unreplicated_bytes(t->source, t->applied);
		values[4] = Int64GetDatum(unreplicated);
		nulls[4] = (unreplicated < 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

		ereport(LOG,
				errmsg("register \"%s\" promoted at register LSN %X/%X",
					   t->reg->name, LSN_FORMAT_ARGS(t->applied)));
		promote_warn_not_ready(t);
	}

	de_launcher_rescan_at_commit();
	return (Datum) 0;
}
