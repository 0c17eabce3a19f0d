/*-------------------------------------------------------------------------
 *
 * promote.c
 *		  data_embassy.promote(): fail over one register, or all of them.
 *
 * For each register:
 *	1. With wait_for_catchup, ask the register for its current WAL position
 *	   and wait (at most that long) until the worker has applied up to it: a
 *	   planned switch-over loses nothing.  An unreachable register is the
 *	   disaster case: there is nothing to wait for.
 *	2. Tell the apply worker to stop (the slot's "promoted" flag): it applies
 *	   the frames it has already received, abandons a transaction whose last
 *	   frame never came, and exits.
 *	3. In one transaction: mark the register promoted with its time and the
 *	   register LSN everything before which was applied (the fence: no worker
 *	   ever connects for a promoted register again), advance every replicated
 *	   sequence past its last replicated value by
 *	   data_embassy.promote_sequence_margin, and lift the write guard.
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
#include "embassy/walconn.h"
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
} PromoteTarget;

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
 * promote_wait_catchup
 *		Ask the register for its WAL position and wait until the worker has
 *		applied that far, or the time is up.  Returns the position asked
 *		for, or InvalidXLogRecPtr if the register could not be reached.
 */
static void
identify_on(DeWalConn *conn, void *arg)
{
	uint64		sysid;
	TimeLineID	tli;

	de_walconn_identify(conn, &sysid, &tli, (XLogRecPtr *) arg);
}

static XLogRecPtr
promote_wait_catchup(PromoteTarget *t, DeRegisterSlot *slot, int64 wait_ms)
{
	XLogRecPtr	target = InvalidXLogRecPtr;
	TimestampTz deadline;
	ErrorData  *edata;

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);

	edata = de_walconn_try(t->reg->conninfo, "data_embassy promote",
						   identify_on, &target);
	if (edata != NULL)
	{
		ereport(NOTICE,
				errmsg("register \"%s\" cannot be reached; promoting with what was received",
					   t->reg->name),
				errdetail("%s", edata->message));
		FreeErrorData(edata);
		return InvalidXLogRecPtr;
	}

	if (slot == NULL)
		return target;

	for (;;)
	{
		XLogRecPtr	applied,
					source;

		CHECK_FOR_INTERRUPTS();
		slot_positions(slot, &applied, &source);
		if (applied >= target)
			break;
		if (GetCurrentTimestamp() >= deadline)
		{
			ereport(NOTICE,
					errmsg("register \"%s\" did not catch up within the wait; promoting at %X/%X, %X/%X was asked for",
						   t->reg->name, LSN_FORMAT_ARGS(applied),
						   LSN_FORMAT_ARGS(target)));
			break;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 50, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	return target;
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
 *		this or a later register fails.
 */
static void
promote_one(PromoteTarget *t, int64 wait_ms)
{
	XLogRecPtr	target = InvalidXLogRecPtr;
	RepOriginId origin;

	t->source = InvalidXLogRecPtr;
	if (wait_ms > 0)
		target = promote_wait_catchup(t, t->slot, wait_ms);
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
	if (target > t->source)
		t->source = target;
	if (t->source < t->applied)
		t->source = t->applied;

	t->now = GetCurrentTimestamp();
	(void) promote_commit_state(t->reg->name, t->applied, t->source,
								t->now);
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

			promote_one(t, wait_ms);
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

		if (t->slot)
		{
			SpinLockAcquire(&t->slot->mutex);
			t->slot->promoted_at = t->now;
			t->slot->promoted_lsn = t->applied;
			SpinLockRelease(&t->slot->mutex);
			de_slot_set_state(t->slot, DE_STATE_PROMOTED, NULL);
		}

		values[0] = CStringGetTextDatum(t->reg->name);
		values[1] = TimestampTzGetDatum(t->now);
		values[2] = LSNGetDatum(t->applied);
		nulls[2] = XLogRecPtrIsInvalid(t->applied);
		values[3] = LSNGetDatum(t->source);
		nulls[3] = XLogRecPtrIsInvalid(t->source);
		/* unknown unless both positions are known */
		values[4] = Int64GetDatum(t->source > t->applied ?
								  (int64) (t->source - t->applied) : 0);
		nulls[4] = nulls[2] || nulls[3];
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

		ereport(LOG,
				errmsg("register \"%s\" promoted at register LSN %X/%X",
					   t->reg->name, LSN_FORMAT_ARGS(t->applied)));
	}

	de_launcher_rescan_at_commit();
	return (Datum) 0;
}
