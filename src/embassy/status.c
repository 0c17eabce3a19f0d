/*-------------------------------------------------------------------------
 *
 * status.c
 *		  Shared memory of an embassy: the register slots, their locking,
 *		  and the register_status() function the lag and failover_status
 *		  views are built on.
 *
 * The slots live in one struct allocated at server start; its size follows
 * data_embassy.max_registers.  See status.h for the locking protocol.
 *
 * IDENTIFICATION
 *		  src/embassy/status.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "data_embassy.h"
#include "embassy/status.h"

#define DE_SHMEM_NAME		"data_embassy"
#define DE_TRANCHE_NAME		"data_embassy"

#define REGISTER_STATUS_COLS	29

DeSharedState *DeShared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Slot this process is attached to, for the exit callback. */
static int	attached_index = -1;

static Size de_shmem_size(void);
static void de_shmem_request(void);
static void de_shmem_startup(void);
static void de_slot_detach_callback(int code, Datum arg);

PG_FUNCTION_INFO_V1(data_embassy_register_status);

/*
 * de_shmem_size
 *		Bytes needed for the shared state with max_registers slots.
 */
static Size
de_shmem_size(void)
{
	return add_size(offsetof(DeSharedState, slots),
					mul_size(de_max_registers, sizeof(DeRegisterSlot)));
}

/*
 * de_status_shmem_init_hooks
 *		Install the hooks that reserve and set up our shared memory.
 */
void
de_status_shmem_init_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = de_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = de_shmem_startup;
}

static void
de_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(de_shmem_size());
	RequestNamedLWLockTranche(DE_TRANCHE_NAME, 2);
}

/*
 * de_shmem_startup
 *		Allocate or attach to the shared state.  Runs in the postmaster and,
 *		under EXEC_BACKEND, in every child.
 */
static void
de_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);

	DeShared = ShmemInitStruct(DE_SHMEM_NAME, de_shmem_size(), &found);
	if (!found)
	{
		int			i;

		memset(DeShared, 0, de_shmem_size());
		DeShared->lock = &(GetNamedLWLockTranche(DE_TRANCHE_NAME))[0].lock;
		DeShared->file_lock = &(GetNamedLWLockTranche(DE_TRANCHE_NAME))[1].lock;
		DeShared->nslots = de_max_registers;
		for (i = 0; i < DeShared->nslots; i++)
			SpinLockInit(&DeShared->slots[i].mutex);
	}

	LWLockRelease(AddinShmemInitLock);
}

/*
 * de_state_name
 *		Name of a state as the views show it.
 */
const char *
de_state_name(DeState state)
{
	switch (state)
	{
		case DE_STATE_INITIALIZING:
			return "initializing";
		case DE_STATE_COPYING:
			return "copying";
		case DE_STATE_STREAMING:
			return "streaming";
		case DE_STATE_CATCHING_UP:
			return "catching_up";
		case DE_STATE_DISCONNECTED:
			return "disconnected";
		case DE_STATE_PAUSED:
			return "paused";
		case DE_STATE_ERROR:
			return "error";
		case DE_STATE_PROMOTING:
			return "promoting";
		case DE_STATE_PROMOTED:
			return "promoted";
	}
	return "unknown";
}

/*
 * de_slot_find
 *		Slot of register "name" in database dboid, or NULL.  The caller holds
 *		DeShared->lock.
 */
DeRegisterSlot *
de_slot_find(Oid dboid, const char *name)
{
	int			i;

	Assert(LWLockHeldByMe(DeShared->lock));

	for (i = 0; i < DeShared->nslots; i++)
	{
		DeRegisterSlot *slot = &DeShared->slots[i];

		if (slot->in_use && slot->dboid == dboid &&
			strcmp(slot->name, name) == 0)
			return slot;
	}
	return NULL;
}

/*
 * de_slot_set_state
 *		Set a slot's state, and its last error when errmsg is given.
 */
void
de_slot_set_state(DeRegisterSlot *slot, DeState state, const char *errmsg)
{
	SpinLockAcquire(&slot->mutex);
	slot->state = state;
	if (errmsg != NULL)
	{
		strlcpy(slot->last_error, errmsg, DE_ERROR_LEN);
		slot->failed_commit_lsn = InvalidXLogRecPtr;
	}
	SpinLockRelease(&slot->mutex);
}

/*
 * de_slot_copy_begin
 *		A copy starts: the lag view's copy columns count from zero.
 */
void
de_slot_copy_begin(DeRegisterSlot *slot)
{
	SpinLockAcquire(&slot->mutex);
	slot->copy_started = true;
	slot->copy_tables_done = 0;
	slot->copy_tables_total = 0;
	slot->copy_rows = 0;
	slot->copy_bytes = 0;
	SpinLockRelease(&slot->mutex);
}

/*
 * de_slot_attach
 *		Attach the current process to slot "index" as its worker, as long as
 *		the slot still holds the register of the given generation and no
 *		other worker is attached.  Returns the slot, or NULL when the worker
 *		is not needed any more.  The attachment ends when the process exits.
 */
DeRegisterSlot *
de_slot_attach(int index, uint32 generation)
{
	DeRegisterSlot *slot;

	if (index < 0 || index >= DeShared->nslots)
		elog(ERROR, "data_embassy slot index %d out of range", index);

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	slot = &DeShared->slots[index];
	if (!slot->in_use || slot->generation != generation ||
		slot->drop_requested || slot->worker_pid != 0)
	{
		LWLockRelease(DeShared->lock);
		return NULL;
	}
	slot->worker_pid = MyProcPid;
	slot->worker_latch = MyLatch;
	attached_index = index;
	LWLockRelease(DeShared->lock);

	before_shmem_exit(de_slot_detach_callback, (Datum) 0);

	return slot;
}

/*
 * de_slot_detach
 *		End this process's attachment to its slot, if any.
 */
void
de_slot_detach(void)
{
	DeRegisterSlot *slot;

	if (attached_index < 0)
		return;

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	slot = &DeShared->slots[attached_index];
	if (slot->worker_pid == MyProcPid)
	{
		slot->worker_pid = 0;
		slot->worker_latch = NULL;
	}
	attached_index = -1;

	/* let the launcher notice at once */
	if (DeShared->launcher_latch != NULL)
		SetLatch(DeShared->launcher_latch);
	LWLockRelease(DeShared->lock);
}

static void
de_slot_detach_callback(int code, Datum arg)
{
	/* an error may have left the lock held */
	if (LWLockHeldByMe(DeShared->lock))
		LWLockRelease(DeShared->lock);
	de_slot_detach();
}

/*
 * lsn_datum_or_null
 *		Fill one LSN column, NULL when the LSN is not known yet.
 */
static void
lsn_datum_or_null(XLogRecPtr lsn, Datum *value, bool *isnull)
{
	if (XLogRecPtrIsInvalid(lsn))
		*isnull = true;
	else
		*value = LSNGetDatum(lsn);
}

static void
timestamp_datum_or_null(TimestampTz ts, Datum *value, bool *isnull)
{
	if (ts == 0)
		*isnull = true;
	else
		*value = TimestampTzGetDatum(ts);
}

/* Interval of "usecs" microseconds, never negative. */
static Datum
interval_datum(int64 usecs)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = Max(usecs, 0);
	return IntervalPGetDatum(iv);
}

/*
 * de_unreplicated_bytes
 *		The register's sealed WAL position beyond what is applied here, 0
 *		when caught up with it, -1 when either is unknown.
 */
int64
de_unreplicated_bytes(XLogRecPtr source, XLogRecPtr applied)
{
	if (XLogRecPtrIsInvalid(source) || XLogRecPtrIsInvalid(applied))
		return -1;
	return source > applied ? (int64) (source - applied) : 0;
}

/*
 * contact_is_fresh
 *		Is the newest sealed proof of contact recent enough to vouch for the
 *		present?  The worker asks for one every heartbeat interval, so a
 *		proof older than two intervals means heartbeats are not coming back.
 */
static bool
contact_is_fresh(TimestampTz contact_at, TimestampTz now)
{
	return contact_at != 0 &&
		!TimestampDifferenceExceeds(contact_at, now,
									2 * de_heartbeat_interval_ms);
}

/* The earlier of two moments, where 0 means none. */
static TimestampTz
earlier_moment(TimestampTz a, TimestampTz b)
{
	if (a == 0)
		return b;
	if (b == 0)
		return a;
	return Min(a, b);
}

/*
 * data_embassy_register_status
 *		One row per register of the whole cluster, except those being
 *		dropped.
 *
 * Each slot is copied under the lock and its spinlock, then formatted
 * outside them.  Nothing here reveals a conninfo: the slots hold none.
 */
Datum
data_embassy_register_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DeRegisterSlot *copies;
	int			ncopies = 0;
	TimestampTz now;
	int			i;

	de_require_preloaded();

	SetSingleFuncCall(fcinfo, 0);

	copies = palloc(sizeof(DeRegisterSlot) * DeShared->nslots);

	LWLockAcquire(DeShared->lock, LW_SHARED);
	for (i = 0; i < DeShared->nslots; i++)
	{
		DeRegisterSlot *slot = &DeShared->slots[i];

		/* a register being dropped is gone as far as users are concerned */
		if (!slot->in_use || slot->drop_requested)
			continue;
		SpinLockAcquire(&slot->mutex);
		memcpy(&copies[ncopies], slot, sizeof(DeRegisterSlot));
		SpinLockRelease(&slot->mutex);
		ncopies++;
	}
	LWLockRelease(DeShared->lock);

	now = GetCurrentTimestamp();

	for (i = 0; i < ncopies; i++)
	{
		DeRegisterSlot *s = &copies[i];
		Datum		values[REGISTER_STATUS_COLS];
		bool		nulls[REGISTER_STATUS_COLS];
		char	   *dbname;
		int			col = 0;
		int64		unreplicated;
		bool		fresh;
		bool		caught_up;
		TimestampTz behind;

		memset(values, 0, sizeof(values));
		memset(nulls, 0, sizeof(nulls));

		/* register, database, state, worker_pid */
		values[col++] = CStringGetTextDatum(s->name);
		dbname = get_database_name(s->dboid);
		if (dbname != NULL)
			values[col] = DirectFunctionCall1(namein, CStringGetDatum(dbname));
		else
			nulls[col] = true;
		col++;
		values[col++] = CStringGetTextDatum(de_state_name(s->state));
		if (s->worker_pid != 0)
			values[col] = Int32GetDatum(s->worker_pid);
		else
			nulls[col] = true;
		col++;

		/* source_lsn, received_lsn, applied_lsn */
		lsn_datum_or_null(s->source_lsn, &values[col], &nulls[col]);
		col++;
		lsn_datum_or_null(s->received_lsn, &values[col], &nulls[col]);
		col++;
		lsn_datum_or_null(s->applied_lsn, &values[col], &nulls[col]);
		col++;

		/*
		 * lag_bytes: how far the register's WAL, as last sealed, is ahead of
		 * what we applied; failover_status shows it as unreplicated_bytes,
		 * computed as promote() computes its own.
		 */
		unreplicated = de_unreplicated_bytes(s->source_lsn, s->applied_lsn);
		if (unreplicated >= 0)
			values[col] = Int64GetDatum(unreplicated);
		else
			nulls[col] = true;
		col++;

		/*
		 * Caught up: nothing sealed is left to apply, and a fresh sealed
		 * proof says the register was alive lately.  Otherwise the replica is
		 * behind since the oldest of: the oldest received but unapplied
		 * commit, the moment the sealed source passed what was applied, and,
		 * when the proof is stale, the proof itself (nothing tells what the
		 * register did after it).  None of these moves on a retry.
		 */
		fresh = contact_is_fresh(s->contact_at, now);
		caught_up = fresh && unreplicated == 0 && s->pending_since == 0;
		behind = 0;
		if (!caught_up)
		{
			behind = earlier_moment(s->pending_since, s->behind_since);
			if (!fresh)
				behind = earlier_moment(behind, s->contact_at);
		}

		/* lag_time */
		if (caught_up)
			values[col] = interval_datum(0);
		else if (behind != 0)
			values[col] = interval_datum(now - behind);
		else
			nulls[col] = true;
		col++;

		timestamp_datum_or_null(s->last_applied_commit_at,
								&values[col], &nulls[col]);
		col++;
		timestamp_datum_or_null(s->last_message_at, &values[col], &nulls[col]);
		col++;

		values[col++] = Int64GetDatum((int64) s->frames_applied);
		values[col++] = Int64GetDatum((int64) s->rows_applied);
		values[col++] = Int64GetDatum((int64) s->wire_bytes);
		values[col++] = Int64GetDatum((int64) s->plain_bytes);

		if (s->last_error[0] != '\0')
			values[col] = CStringGetTextDatum(s->last_error);
		else
			nulls[col] = true;
		col++;

		timestamp_datum_or_null(s->promoted_at, &values[col], &nulls[col]);
		col++;
		lsn_datum_or_null(s->promoted_lsn, &values[col], &nulls[col]);
		col++;

		/* failed_commit_lsn: what skip() takes */
		lsn_datum_or_null(s->failed_commit_lsn, &values[col], &nulls[col]);
		col++;

		/*
		 * copy_tables_done, copy_tables_total, copy_rows, copy_bytes.  The
		 * register does not announce how many tables its initial copy holds,
		 * so that total is not known; a resync_table copy's is.
		 */
		if (s->copy_started)
		{
			values[col++] = Int64GetDatum((int64) s->copy_tables_done);
			if (s->copy_tables_total > 0)
				values[col++] = Int64GetDatum((int64) s->copy_tables_total);
			else
				nulls[col++] = true;
			values[col++] = Int64GetDatum((int64) s->copy_rows);
			values[col++] = Int64GetDatum((int64) s->copy_bytes);
		}
		else
		{
			nulls[col++] = true;
			nulls[col++] = true;
			nulls[col++] = true;
			nulls[col++] = true;
		}

		/* last_contact_at, contact_age, caught_up, behind_since */
		timestamp_datum_or_null(s->contact_at, &values[col], &nulls[col]);
		col++;
		if (s->contact_at != 0)
			values[col] = interval_datum(now - s->contact_at);
		else
			nulls[col] = true;
		col++;
		values[col++] = BoolGetDatum(caught_up);
		timestamp_datum_or_null(behind, &values[col], &nulls[col]);
		col++;

		/* retries, failing_since */
		values[col++] = Int32GetDatum(s->failures);
		timestamp_datum_or_null(s->failing_since, &values[col], &nulls[col]);
		col++;

		Assert(col == REGISTER_STATUS_COLS);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
							 values, nulls);
	}

	return (Datum) 0;
}

void
de_slot_wait_stopped(DeRegisterSlot *slot, uint32 generation, int timeout_ms,
					 const char *register_name)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   timeout_ms);

	for (;;)
	{
		pid_t		pid;

		CHECK_FOR_INTERRUPTS();

		LWLockAcquire(DeShared->lock, LW_SHARED);
		pid = (slot->in_use && slot->generation == generation) ?
			slot->worker_pid : 0;
		LWLockRelease(DeShared->lock);

		if (pid == 0)
			return;
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_IN_USE),
					errmsg("could not stop the apply worker of register \"%s\"",
						   register_name),
					errdetail("Process %d did not exit within %d seconds.",
							  (int) pid, timeout_ms / 1000));

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 20, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
