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
 * A crash before step 3 commits leaves the register as it was: replicating,
 * not promoted (the worker restarts).  Once it commits the register is fully
 * promoted.  An error between the steps puts the worker back to work.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/origin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "data_embassy.h"
#include "embassy/guard.h"
#include "embassy/launcher.h"
#include "embassy/promote.h"
#include "embassy/status.h"
#include "embassy/walconn.h"
#include "embassy/worker.h"

int			de_promote_sequence_margin = 1000;
int			de_test_promote_delay_ms = 0;

/* How long the worker gets to apply what it has and stop. */
#define PROMOTE_STOP_TIMEOUT_MS		60000

PG_FUNCTION_INFO_V1(data_embassy_promote);

typedef struct PromoteTarget
{
	char	   *name;
	char	   *conninfo;
	bool		promoted;
} PromoteTarget;

/*
 * promote_targets
 *		The registers to promote: the one named (which must exist and not be
 *		promoted yet), or every register of this database not yet promoted.
 */
static pg_noinline List *
promote_targets(const char *name)
{
	List	   *targets = NIL;
	Datum		arg;
	Oid			argtype = TEXTOID;
	int			ret;
	uint64		i;

	SPI_connect();
	if (name)
	{
		arg = CStringGetTextDatum(name);
		ret = SPI_execute_with_args("SELECT name, conninfo, state = 'promoted' "
									"FROM data_embassy.registers WHERE name = $1",
									1, &argtype, &arg, NULL, true, 0);
	}
	else
		ret = SPI_execute("SELECT name, conninfo, state = 'promoted' "
						  "FROM data_embassy.registers "
						  "WHERE state <> 'promoted' ORDER BY name",
						  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read data_embassy.registers: %s",
			 SPI_result_code_string(ret));

	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		PromoteTarget *t = MemoryContextAlloc(TopTransactionContext,
											  sizeof(PromoteTarget));
		bool		isnull;

		t->name = MemoryContextStrdup(TopTransactionContext,
									  SPI_getvalue(tup, desc, 1));
		t->conninfo = MemoryContextStrdup(TopTransactionContext,
										  SPI_getvalue(tup, desc, 2));
		t->promoted = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		targets = lappend(targets, t);
	}
	SPI_finish();

	if (name && targets == NIL)
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("register \"%s\" does not exist", name),
				errhint("The registers of this database are listed in data_embassy.lag."));
	if (name && ((PromoteTarget *) linitial(targets))->promoted)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" is already promoted", name));
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
static XLogRecPtr
promote_wait_catchup(PromoteTarget *t, DeRegisterSlot *slot, int64 wait_ms)
{
	XLogRecPtr	target = InvalidXLogRecPtr;
	TimestampTz deadline;
	MemoryContext oldcxt = CurrentMemoryContext;

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);

	PG_TRY();
	{
		DeWalConn  *conn = de_walconn_connect(t->conninfo, true,
											  "data_embassy promote");
		uint64		sysid;
		TimeLineID	tli;

		de_walconn_identify(conn, &sysid, &tli, &target);
		de_walconn_close(conn);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(NOTICE,
				errmsg("register \"%s\" cannot be reached; promoting with what was received",
					   t->name),
				errdetail("%s", edata->message));
		return InvalidXLogRecPtr;
	}
	PG_END_TRY();

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
						   t->name, LSN_FORMAT_ARGS(applied),
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
promote_commit_state(const char *name, XLogRecPtr applied, TimestampTz now)
{
	Oid			types[4] = {TEXTOID, TIMESTAMPTZOID, LSNOID, INT8OID};
	Datum		args[4];
	int			ret;
	uint64		nseq;

	args[0] = CStringGetTextDatum(name);
	args[1] = TimestampTzGetDatum(now);
	args[2] = LSNGetDatum(applied);
	args[3] = Int64GetDatum(de_promote_sequence_margin);

	SPI_connect();
	ret = SPI_execute_with_args("UPDATE data_embassy.registers "
								"SET state = 'promoted', paused = false, "
								"promoted_at = $2, promoted_lsn = $3 "
								"WHERE name = $1",
								3, types, args, NULL, false, 0);
	if (ret != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "could not mark register \"%s\" promoted", name);

	/*
	 * Each replicated sequence goes past both its own value and the last
	 * value the register reported, by the margin.
	 */
	ret = SPI_execute_with_args("SELECT pg_catalog.setval(s.relid::regclass, "
								"  greatest(coalesce(pg_catalog.pg_sequence_last_value(s.relid::regclass), 0), "
								"           s.last_value) + $4) "
								"FROM data_embassy.replicated_sequences s "
								"JOIN pg_catalog.pg_class c ON c.oid = s.relid "
								"WHERE s.register = $1",
								4, types, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not advance the sequences of register \"%s\"", name);
	nseq = SPI_processed;

	ret = SPI_execute_with_args("DELETE FROM data_embassy.replicated_relations "
								"WHERE register = $1",
								1, types, args, NULL, false, 0);
	if (ret != SPI_OK_DELETE)
		elog(ERROR, "could not lift the write guard of register \"%s\"", name);
	SPI_finish();

	de_guard_invalidate();
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

typedef struct PromoteResult
{
	XLogRecPtr	applied;
	XLogRecPtr	source;
	TimestampTz now;
} PromoteResult;

/*
 * promote_one
 *		Steps 1 to 3 for one register; the caller undoes the worker stop if
 *		this fails.
 */
static void
promote_one(PromoteTarget *t, DeRegisterSlot *slot, int64 wait_ms,
			PromoteResult *res)
{
	XLogRecPtr	target = InvalidXLogRecPtr;
	RepOriginId origin;

	res->source = InvalidXLogRecPtr;
	if (wait_ms > 0)
		target = promote_wait_catchup(t, slot, wait_ms);
	if (slot)
	{
		promote_stop_worker(slot, t->name);
		slot_positions(slot, &res->applied, &res->source);
	}

	if (de_test_promote_delay_ms > 0)
		promote_test_delay();

	/* What is applied is what the origin says is committed here. */
	origin = replorigin_by_name(de_origin_name(MyDatabaseId, t->name), true);
	res->applied = (origin != InvalidRepOriginId) ?
		replorigin_get_progress(origin, false) : InvalidXLogRecPtr;
	if (target > res->source)
		res->source = target;
	if (res->source < res->applied)
		res->source = res->applied;

	res->now = GetCurrentTimestamp();
	(void) promote_commit_state(t->name, res->applied, res->now);
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
	de_check_admin("promote a register");

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

	foreach(lc, targets)
	{
		PromoteTarget *t = lfirst(lc);
		DeRegisterSlot *slot;
		PromoteResult res;
		Datum		values[5];
		bool		nulls[5] = {false};

		LWLockAcquire(DeShared->lock, LW_SHARED);
		slot = de_slot_find(MyDatabaseId, t->name);
		LWLockRelease(DeShared->lock);

		PG_TRY();
		{
			promote_one(t, slot, wait_ms, &res);
		}
		PG_CATCH();
		{
			/* Not promoted after all: let the worker run again. */
			if (slot)
			{
				LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
				slot->promoted = false;
				LWLockRelease(DeShared->lock);
				de_launcher_wakeup();
			}
			PG_RE_THROW();
		}
		PG_END_TRY();

		if (slot)
		{
			SpinLockAcquire(&slot->mutex);
			slot->promoted_at = res.now;
			slot->promoted_lsn = res.applied;
			SpinLockRelease(&slot->mutex);
			de_slot_set_state(slot, DE_STATE_PROMOTED, NULL);
		}

		values[0] = CStringGetTextDatum(t->name);
		values[1] = TimestampTzGetDatum(res.now);
		values[2] = LSNGetDatum(res.applied);
		nulls[2] = XLogRecPtrIsInvalid(res.applied);
		values[3] = LSNGetDatum(res.source);
		nulls[3] = XLogRecPtrIsInvalid(res.source);
		values[4] = Int64GetDatum(res.source > res.applied ?
								  (int64) (res.source - res.applied) : 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

		ereport(LOG,
				errmsg("data_embassy: register \"%s\" promoted at %X/%X",
					   t->name, LSN_FORMAT_ARGS(res.applied)));
	}

	de_launcher_rescan_at_commit();
	return (Datum) 0;
}
