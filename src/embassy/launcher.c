/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		  The launcher: a background worker, connected to no database, that
 *		  keeps one apply worker running per register slot.
 *
 * Registers are rows of data_embassy.registers in each database that
 * installed the extension.  The launcher cannot read those tables itself:
 * the databases that may hold registers are listed in a file
 * (databases.c), and for each database whose table may have changed the
 * launcher starts a short-lived scan worker (scan.c) that reads the table
 * and reconciles the slots of that database in shared memory.  SQL
 * functions that change registers ask for such a rescan when their
 * transaction commits (de_launcher_rescan_at_commit).
 *
 * The main loop then starts an apply worker for every slot that wants one,
 * notices when a worker exits and delays its restart with an exponential
 * backoff, frees the slots of databases that left the list, and forgets
 * databases that were dropped.
 *
 * IDENTIFICATION
 *		  src/embassy/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "data_embassy.h"
#include "embassy/databases.h"
#include "embassy/launcher.h"
#include "embassy/scan.h"
#include "embassy/status.h"

#define DE_LIBRARY_NAME			"data_embassy"

/* Longest the launcher sleeps when nothing is due. */
#define DE_LAUNCHER_NAPTIME_MS	60000

/* Scan workers that may run at the same time. */
#define DE_MAX_SCAN_WORKERS		2

/* Launcher-local view of an apply worker it started. */
typedef struct DeApplyHandle
{
	BackgroundWorkerHandle *handle; /* NULL when none was started */
	uint32		generation;		/* slot generation it was started for */
	pid_t		pid;			/* 0 until seen running */
} DeApplyHandle;

/* Launcher-local state of the scans of one database. */
typedef struct DeScanState
{
	Oid			dboid;
	BackgroundWorkerHandle *handle; /* running scan worker, or NULL */
	TimestampTz not_before;		/* no scan before this */
	int			delay_ms;		/* delay after a failed scan */
} DeScanState;

PGDLLEXPORT void de_launcher_main(Datum main_arg);

/* Backend state for de_launcher_rescan_at_commit(). */
static bool xact_callback_registered = false;
static bool rescan_pending = false;

/* Launcher state. */
static DeApplyHandle *apply_handles = NULL;
static DeScanState scan_states[DE_MAX_DATABASES];
static int	nscan_states = 0;
static bool worker_slots_warned = false;
static int	last_nfree = 0;

static void de_launcher_xact_callback(XactEvent event, void *arg);

/* ----------------------------------------------------------------
 * Requests from SQL functions
 * ----------------------------------------------------------------
 */

/*
 * de_launcher_rescan_at_commit
 *		Record the current database in the list of databases with
 *		registers now, and ask the launcher to rescan it at commit.
 */
void
de_launcher_rescan_at_commit(void)
{
	de_require_preloaded();

	de_databases_add(MyDatabaseId);

	if (!xact_callback_registered)
	{
		RegisterXactCallback(de_launcher_xact_callback, NULL);
		xact_callback_registered = true;
	}
	rescan_pending = true;
}

/*
 * de_launcher_xact_callback
 *		Hand the rescan request to the launcher when the transaction
 *		commits.  Nothing here may fail at commit.
 */
static void
de_launcher_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (rescan_pending)
				ereport(ERROR,
						errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						errmsg("cannot prepare a transaction that changed data_embassy registers"));
			break;
		case XACT_EVENT_COMMIT:
			if (rescan_pending)
			{
				rescan_pending = false;
				LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
				de_rescan_queue_locked(MyDatabaseId);
				if (DeShared->launcher_latch != NULL)
					SetLatch(DeShared->launcher_latch);
				LWLockRelease(DeShared->lock);
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			rescan_pending = false;
			break;
		default:
			break;
	}
}

/*
 * de_launcher_wakeup
 *		Set the launcher's latch, if it runs.
 */
void
de_launcher_wakeup(void)
{
	if (DeShared == NULL)
		return;

	LWLockAcquire(DeShared->lock, LW_SHARED);
	if (DeShared->launcher_latch != NULL)
		SetLatch(DeShared->launcher_latch);
	LWLockRelease(DeShared->lock);
}

/*
 * de_launcher_register
 *		Register the launcher as a static background worker.
 */
void
de_launcher_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, DE_LIBRARY_NAME, BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "de_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "data_embassy launcher", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "data_embassy launcher", BGW_MAXLEN);
	bgw.bgw_main_arg = (Datum) 0;
	bgw.bgw_notify_pid = 0;

	RegisterBackgroundWorker(&bgw);
}

/* ----------------------------------------------------------------
 * Launcher
 * ----------------------------------------------------------------
 */

static void
launcher_exit(int code, Datum arg)
{
	if (LWLockHeldByMe(DeShared->lock))
		LWLockRelease(DeShared->lock);
	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	if (DeShared->launcher_pid == MyProcPid)
	{
		DeShared->launcher_pid = 0;
		DeShared->launcher_latch = NULL;
	}
	LWLockRelease(DeShared->lock);
}

/*
 * de_backoff_ms
 *		Delay before the next start of a worker (or the next copy of a
 *		table) that failed "failures" times in a row: retry_interval doubled
 *		per failure, at most ten times it.
 */
int64
de_backoff_ms(int failures)
{
	int64		delay = de_retry_interval_ms;
	int			i;

	for (i = 1; i < failures && delay < 10 * (int64) de_retry_interval_ms; i++)
		delay *= 2;
	return Min(delay, 10 * (int64) de_retry_interval_ms);
}

/* Milliseconds from now until ts, at least 0. */
static long
ms_until(TimestampTz now, TimestampTz ts)
{
	if (ts <= now)
		return 0;
	return (long) Min((ts - now) / 1000 + 1, (int64) DE_LAUNCHER_NAPTIME_MS);
}

/*
 * register_worker
 *		Start a dynamic background worker whose handle outlives this cycle.
 *		Returns NULL, with a WARNING the first time, when none is free.
 */
static BackgroundWorkerHandle *
register_worker(BackgroundWorker *bgw)
{
	BackgroundWorkerHandle *handle;
	MemoryContext oldcxt;
	bool		ok;

	bgw->bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw->bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw->bgw_restart_time = BGW_NEVER_RESTART;
	bgw->bgw_notify_pid = MyProcPid;
	strlcpy(bgw->bgw_library_name, DE_LIBRARY_NAME, BGW_MAXLEN);

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	ok = RegisterDynamicBackgroundWorker(bgw, &handle);
	MemoryContextSwitchTo(oldcxt);

	if (!ok)
	{
		if (!worker_slots_warned)
			ereport(WARNING,
					errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					errmsg("out of background worker slots"),
					errhint("You might need to increase \"max_worker_processes\"."));
		worker_slots_warned = true;
		return NULL;
	}
	worker_slots_warned = false;
	return handle;
}

static DeScanState *
scan_state_for(Oid dboid)
{
	int			i;

	for (i = 0; i < nscan_states; i++)
		if (scan_states[i].dboid == dboid)
			return &scan_states[i];

	/* drop entries of databases that have nothing going on */
	for (i = 0; i < nscan_states; i++)
	{
		if (scan_states[i].handle == NULL && scan_states[i].delay_ms == 0)
		{
			scan_states[i] = scan_states[--nscan_states];
			i--;
		}
	}
	if (nscan_states >= DE_MAX_DATABASES)
		return NULL;

	memset(&scan_states[nscan_states], 0, sizeof(DeScanState));
	scan_states[nscan_states].dboid = dboid;
	return &scan_states[nscan_states++];
}

/*
 * reap_apply_workers
 *		Notice apply workers that exited and schedule their restart.
 */
static void
reap_apply_workers(TimestampTz now)
{
	int			i;

	for (i = 0; i < DeShared->nslots; i++)
	{
		DeApplyHandle *h = &apply_handles[i];
		DeRegisterSlot *slot = &DeShared->slots[i];
		BgwHandleStatus status;
		pid_t		pid;

		if (h->handle == NULL)
			continue;

		status = GetBackgroundWorkerPid(h->handle, &pid);
		if (status == BGWH_POSTMASTER_DIED)
			proc_exit(1);
		if (status == BGWH_STARTED)
			h->pid = pid;
		if (status != BGWH_STOPPED)
			continue;

		LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
		if (slot->in_use && slot->generation == h->generation)
		{
			/* a worker that died without detaching */
			if (h->pid != 0 && slot->worker_pid == h->pid)
			{
				slot->worker_pid = 0;
				slot->worker_latch = NULL;
			}
			if (slot->drop_requested)
			{
				/* the slot can be freed once the register's row is gone */
				de_rescan_queue_locked(slot->dboid);
			}
			else if (slot->restart_requested)
			{
				/* asked to start over (resync_register): no backoff */
				slot->restart_requested = false;
				slot->failures = 0;
				slot->next_start = 0;
			}
			else if (!slot->promoted)
			{
				slot->failures++;
				slot->next_start = TimestampTzPlusMilliseconds(now,
															   de_backoff_ms(slot->failures));

				/*
				 * The extension may have been dropped under the worker: read
				 * the table again, at failures 1, 2, 4, 8... so that a
				 * register that keeps failing does not cause endless scans.
				 */
				if ((slot->failures & (slot->failures - 1)) == 0)
					de_rescan_queue_locked(slot->dboid);
			}
		}
		LWLockRelease(DeShared->lock);

		pfree(h->handle);
		h->handle = NULL;
		h->pid = 0;
	}
}

/*
 * reap_scan_workers
 *		Notice scan workers that exited; delay the next scan of a database
 *		whose scan failed.
 */
static void
reap_scan_workers(TimestampTz now)
{
	int			i;

	for (i = 0; i < nscan_states; i++)
	{
		DeScanState *s = &scan_states[i];
		BgwHandleStatus status;
		pid_t		pid;
		bool		again;

		if (s->handle == NULL)
			continue;

		status = GetBackgroundWorkerPid(s->handle, &pid);
		if (status == BGWH_POSTMASTER_DIED)
			proc_exit(1);
		if (status != BGWH_STOPPED)
			continue;

		pfree(s->handle);
		s->handle = NULL;

		LWLockAcquire(DeShared->lock, LW_SHARED);
		again = de_rescan_queued_locked(s->dboid);
		LWLockRelease(DeShared->lock);

		/*
		 * Queued again by the time the scan ended: a request that came in
		 * meanwhile, or a scan that failed.  Telling them apart matters
		 * little, so the first repetition runs at once and further ones back
		 * off, from 100 ms up to retry_interval.
		 */
		if (!again)
		{
			s->delay_ms = 0;
			s->not_before = 0;
		}
		else
		{
			s->not_before = s->delay_ms == 0 ? 0 :
				TimestampTzPlusMilliseconds(now, s->delay_ms);
			s->delay_ms = s->delay_ms == 0 ? 100 :
				Min(s->delay_ms * 2, de_retry_interval_ms);
		}
	}
}

/*
 * free_orphaned_slots
 *		Free the slots of databases that left the list once their workers
 *		are gone, and rescan every database when slots became free.
 */
static void
free_orphaned_slots(void)
{
	int			nfree = 0;
	int			i;

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	for (i = 0; i < DeShared->nslots; i++)
	{
		DeRegisterSlot *slot = &DeShared->slots[i];

		if (!slot->in_use || de_database_index_locked(slot->dboid) >= 0)
			continue;
		if (apply_handles[i].handle != NULL)
		{
			slot->drop_requested = true;
			if (slot->worker_pid != 0)
				kill(slot->worker_pid, SIGTERM);
			continue;
		}
		de_slot_free_or_stop_locked(slot);
	}

	/*
	 * Whoever freed a slot (a scan, drop_register, this function), a register
	 * that found none may fit now: read every table again.
	 */
	for (i = 0; i < DeShared->nslots; i++)
		if (!DeShared->slots[i].in_use)
			nfree++;
	if (nfree > last_nfree)
		de_rescan_queue_all_locked();
	last_nfree = nfree;

	LWLockRelease(DeShared->lock);
}

/*
 * forget_dropped_databases
 *		Take databases that were dropped off the list and the rescan queue;
 *		their slots are then freed.  DROP DATABASE tells nobody, so every
 *		cycle looks.
 */
static void
forget_dropped_databases(void)
{
	Oid			dbs[2 * DE_MAX_DATABASES];
	bool		exists[2 * DE_MAX_DATABASES];
	int			ndbs;
	int			i;

	LWLockAcquire(DeShared->lock, LW_SHARED);
	ndbs = DeShared->ndatabases;
	memcpy(dbs, DeShared->databases, sizeof(Oid) * ndbs);
	memcpy(dbs + ndbs, DeShared->rescan, sizeof(Oid) * DeShared->nrescan);
	ndbs += DeShared->nrescan;
	LWLockRelease(DeShared->lock);

	if (ndbs == 0)
		return;

	StartTransactionCommand();
	for (i = 0; i < ndbs; i++)
		exists[i] = SearchSysCacheExists1(DATABASEOID,
										  ObjectIdGetDatum(dbs[i]));
	CommitTransactionCommand();

	for (i = 0; i < ndbs; i++)
	{
		bool		removed;

		if (exists[i])
			continue;
		LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
		removed = de_databases_remove_locked(dbs[i]);
		LWLockRelease(DeShared->lock);

		/* on disk after the lock is released */
		if (removed)
			de_databases_persist();
	}
}

/*
 * start_scan_workers
 *		Start a scan worker for databases waiting for one.  Returns the time
 *		to wait for the next delayed scan.
 */
static long
start_scan_workers(TimestampTz now)
{
	Oid			queued[DE_MAX_DATABASES];
	int			nqueued;
	int			running = 0;
	long		wait = DE_LAUNCHER_NAPTIME_MS;
	int			i;

	for (i = 0; i < nscan_states; i++)
		if (scan_states[i].handle != NULL)
			running++;

	LWLockAcquire(DeShared->lock, LW_SHARED);
	nqueued = DeShared->nrescan;
	memcpy(queued, DeShared->rescan, sizeof(Oid) * nqueued);
	LWLockRelease(DeShared->lock);

	for (i = 0; i < nqueued && running < DE_MAX_SCAN_WORKERS; i++)
	{
		Oid			dboid = queued[i];
		DeScanState *s = scan_state_for(dboid);
		BackgroundWorker bgw;

		if (s == NULL || s->handle != NULL)
			continue;
		if (s->not_before > now)
		{
			wait = Min(wait, ms_until(now, s->not_before));
			continue;
		}

		memset(&bgw, 0, sizeof(bgw));
		strlcpy(bgw.bgw_function_name, "de_scan_worker_main", BGW_MAXLEN);
		snprintf(bgw.bgw_name, BGW_MAXLEN,
				 "data_embassy scan of database %u", dboid);
		strlcpy(bgw.bgw_type, "data_embassy scan worker", BGW_MAXLEN);
		bgw.bgw_main_arg = ObjectIdGetDatum(dboid);

		s->handle = register_worker(&bgw);
		if (s->handle == NULL)
		{
			wait = Min(wait, de_retry_interval_ms);
			break;
		}
		running++;
	}

	return wait;
}

/*
 * start_apply_workers
 *		Start a worker for every slot that wants one.  Returns the time to
 *		wait for the next delayed start.
 */
static long
start_apply_workers(TimestampTz now)
{
	long		wait = DE_LAUNCHER_NAPTIME_MS;
	int			i;

	for (i = 0; i < DeShared->nslots; i++)
	{
		DeRegisterSlot *slot = &DeShared->slots[i];
		DeApplyHandle *h = &apply_handles[i];
		BackgroundWorker bgw;
		char		name[NAMEDATALEN];
		uint32		generation;
		TimestampTz next_start;
		bool		wanted;

		if (h->handle != NULL)
			continue;

		LWLockAcquire(DeShared->lock, LW_SHARED);

		/*
		 * A paused register has a worker too: it holds, but keeps asking the
		 * register for its position so that the lag view stays true.
		 */
		wanted = slot->in_use && !slot->promoted &&
			!slot->drop_requested && slot->worker_pid == 0 &&
			de_database_index_locked(slot->dboid) >= 0;
		generation = slot->generation;
		next_start = slot->next_start;
		strlcpy(name, slot->name, NAMEDATALEN);
		LWLockRelease(DeShared->lock);

		if (!wanted)
			continue;
		if (next_start > now)
		{
			wait = Min(wait, ms_until(now, next_start));
			continue;
		}

		memset(&bgw, 0, sizeof(bgw));
		strlcpy(bgw.bgw_function_name, "de_apply_worker_main", BGW_MAXLEN);
		snprintf(bgw.bgw_name, BGW_MAXLEN, "data_embassy register %s", name);
		strlcpy(bgw.bgw_type, "data_embassy apply worker", BGW_MAXLEN);
		bgw.bgw_main_arg = Int32GetDatum(i);
		memcpy(bgw.bgw_extra, &generation, sizeof(uint32));

		h->handle = register_worker(&bgw);
		if (h->handle == NULL)
		{
			wait = Min(wait, de_retry_interval_ms);
			break;
		}
		h->generation = generation;
		h->pid = 0;
	}

	return wait;
}

/*
 * de_launcher_main
 *		Entry point of the launcher.
 */
void
de_launcher_main(Datum main_arg)
{
	MemoryContext cyclecxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	before_shmem_exit(launcher_exit, (Datum) 0);

	/* no database, but the shared catalogs are readable */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	apply_handles = MemoryContextAllocZero(TopMemoryContext,
										   sizeof(DeApplyHandle) * DeShared->nslots);

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	DeShared->launcher_pid = MyProcPid;
	DeShared->launcher_latch = MyLatch;
	de_databases_load_locked();
	de_rescan_queue_all_locked();
	LWLockRelease(DeShared->lock);

	ereport(DEBUG1,
			errmsg_internal("data_embassy launcher started"));

	cyclecxt = AllocSetContextCreate(TopMemoryContext,
									 "data_embassy launcher cycle",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		MemoryContext oldcxt;
		TimestampTz now;
		long		wait;
		int			rc;

		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		MemoryContextReset(cyclecxt);
		oldcxt = MemoryContextSwitchTo(cyclecxt);

		now = GetCurrentTimestamp();
		reap_apply_workers(now);
		reap_scan_workers(now);
		forget_dropped_databases();
		free_orphaned_slots();
		wait = start_scan_workers(now);
		wait = Min(wait, start_apply_workers(now));

		MemoryContextSwitchTo(oldcxt);

		rc = WaitLatch(MyLatch,
					   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   wait, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
			ResetLatch(MyLatch);
	}
}
