/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		  The launcher: a background worker, connected to no database, that
 *		  keeps one apply worker running per register slot.
 *
 * Registers are rows of data_embassy.registers in each database that
 * installed the extension.  The launcher cannot read those tables itself,
 * so the databases that may hold registers are listed in the file
 * $PGDATA/data_embassy/databases, and for each database whose table may
 * have changed the launcher starts a short-lived "scan" worker that
 * connects to it, reads the table and reconciles the slots of that database
 * in shared memory.  SQL functions that change registers ask for such a
 * rescan when their transaction commits.
 *
 * The main loop then starts an apply worker for every slot that wants one,
 * notices when a worker exits and delays its restart with an exponential
 * backoff.
 *
 * Life of a slot:
 *	- A scan that finds a register without a slot takes a free one, bumps
 *	  its generation and resets its progress.  Workers are started with the
 *	  generation and attach only if it still matches (de_slot_attach), so a
 *	  worker started for an earlier occupant of the slot goes away.
 *	- drop_register, a scan that no longer finds the row, or a database that
 *	  leaves the list set drop_requested and stop the worker; the lag view
 *	  hides the slot from then on.  A scan frees it once the row is gone and
 *	  no worker runs.
 *	- A row that drop_register has locked is "busy": it gets no slot and
 *	  does not bring its slot back to work, so a scan that raced with the
 *	  drop cannot restart the worker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "data_embassy.h"
#include "embassy/catalog.h"
#include "embassy/launcher.h"
#include "embassy/status.h"
#include "privilege.h"
#include "seal/keys.h"

#define DE_LIBRARY_NAME			"data_embassy"
#define DE_DATABASES_FILE		DE_KEY_DIR "/databases"
#define DE_DATABASES_TMP_FILE	DE_KEY_DIR "/databases.tmp"

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
PGDLLEXPORT void de_scan_worker_main(Datum main_arg);

/* Backend state for de_launcher_rescan_at_commit(). */
static bool xact_callback_registered = false;
static bool rescan_pending = false;

/* Launcher state. */
static DeApplyHandle *apply_handles = NULL;
static DeScanState scan_states[DE_MAX_DATABASES];
static int	nscan_states = 0;
static bool worker_slots_warned = false;
static int	last_nfree = 0;

/* Scan worker state. */
static bool scan_done = false;

static void de_launcher_xact_callback(XactEvent event, void *arg);

/* ----------------------------------------------------------------
 * The list of databases
 * ----------------------------------------------------------------
 */

/*
 * database_index_locked
 *		Position of dboid in DeShared->databases, or -1.
 */
static int
database_index_locked(Oid dboid)
{
	int			i;

	for (i = 0; i < DeShared->ndatabases; i++)
		if (DeShared->databases[i] == dboid)
			return i;
	return -1;
}

/*
 * databases_load_locked
 *		Read the file of databases into shared memory, once per server
 *		start.  The caller holds DeShared->lock exclusively.
 */
static void
databases_load_locked(void)
{
	FILE	   *file;
	char		line[64];

	if (DeShared->databases_loaded)
		return;

	file = AllocateFile(DE_DATABASES_FILE, "r");
	if (file == NULL)
	{
		if (errno != ENOENT)
			ereport(ERROR,
					errcode_for_file_access(),
					errmsg("could not open file \"%s\": %m",
						   DE_DATABASES_FILE));
		DeShared->ndatabases = 0;
		DeShared->databases_loaded = true;
		return;
	}

	DeShared->ndatabases = 0;
	while (fgets(line, sizeof(line), file) != NULL)
	{
		char	   *end;
		unsigned long value;

		errno = 0;
		value = strtoul(line, &end, 10);
		if (errno != 0 || end == line || (*end != '\n' && *end != '\0') ||
			value == 0 || value > PG_UINT32_MAX)
		{
			ereport(WARNING,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("ignoring invalid line in file \"%s\"",
						   DE_DATABASES_FILE));
			continue;
		}
		if (database_index_locked((Oid) value) >= 0)
			continue;
		if (DeShared->ndatabases >= DE_MAX_DATABASES)
			break;
		DeShared->databases[DeShared->ndatabases++] = (Oid) value;
	}
	if (ferror(file))
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not read file \"%s\": %m", DE_DATABASES_FILE));
	FreeFile(file);

	DeShared->databases_loaded = true;
}

/*
 * databases_write
 *		Replace the file of databases with the given list, atomically and
 *		durably.
 */
static void
databases_write(const Oid *databases, int ndatabases)
{
	StringInfoData buf;
	int			fd;
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < ndatabases; i++)
		appendStringInfo(&buf, "%u\n", databases[i]);

	if (MakePGDirectory(DE_KEY_DIR) < 0 && errno != EEXIST)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not create directory \"%s\": %m", DE_KEY_DIR));

	fd = OpenTransientFile(DE_DATABASES_TMP_FILE,
						   O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not create file \"%s\": %m",
					   DE_DATABASES_TMP_FILE));

	errno = 0;
	if (write(fd, buf.data, buf.len) != buf.len)
	{
		/* if write didn't set errno, assume problem is no disk space */
		if (errno == 0)
			errno = ENOSPC;
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not write file \"%s\": %m",
					   DE_DATABASES_TMP_FILE));
	}
	if (pg_fsync(fd) != 0)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not fsync file \"%s\": %m",
					   DE_DATABASES_TMP_FILE));
	if (CloseTransientFile(fd) != 0)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not close file \"%s\": %m",
					   DE_DATABASES_TMP_FILE));

	(void) durable_rename(DE_DATABASES_TMP_FILE, DE_DATABASES_FILE, ERROR);

	pfree(buf.data);
}

/*
 * queue_rescan_locked
 *		Ask for the registers of dboid to be read again.  The caller holds
 *		DeShared->lock exclusively.  Cannot fail.
 */
static void
queue_rescan_locked(Oid dboid)
{
	int			i;

	for (i = 0; i < DeShared->nrescan; i++)
		if (DeShared->rescan[i] == dboid)
			return;
	if (DeShared->nrescan < DE_MAX_DATABASES)
		DeShared->rescan[DeShared->nrescan++] = dboid;
}

/* Rescan every listed database; caller holds DeShared->lock exclusively. */
static void
queue_rescan_all_locked(void)
{
	int			i;

	for (i = 0; i < DeShared->ndatabases; i++)
		queue_rescan_locked(DeShared->databases[i]);
}

static void
unqueue_rescan_locked(Oid dboid)
{
	int			i;

	for (i = 0; i < DeShared->nrescan; i++)
	{
		if (DeShared->rescan[i] == dboid)
		{
			DeShared->rescan[i] = DeShared->rescan[--DeShared->nrescan];
			return;
		}
	}
}

static bool
rescan_queued_locked(Oid dboid)
{
	int			i;

	for (i = 0; i < DeShared->nrescan; i++)
		if (DeShared->rescan[i] == dboid)
			return true;
	return false;
}

/*
 * list_database_locked
 *		Add dboid to the list of databases, on disk first.  The caller holds
 *		DeShared->lock exclusively.
 */
static void
list_database_locked(Oid dboid)
{
	Oid			databases[DE_MAX_DATABASES];
	int			n;

	databases_load_locked();
	if (database_index_locked(dboid) >= 0)
		return;

	n = DeShared->ndatabases;
	if (n >= DE_MAX_DATABASES)
		ereport(ERROR,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("too many databases hold data_embassy registers"),
				errdetail("At most %d databases of a cluster can hold registers.",
						  DE_MAX_DATABASES));

	memcpy(databases, DeShared->databases, sizeof(Oid) * n);
	databases[n++] = dboid;
	databases_write(databases, n);

	DeShared->databases[DeShared->ndatabases++] = dboid;
}

/*
 * forget_database_locked
 *		Remove dboid from the list of databases, in memory and on disk.
 *		Its slots are freed by the launcher (or as soon as their worker is
 *		gone).  The caller holds DeShared->lock exclusively.
 */
static void
forget_database_locked(Oid dboid)
{
	Oid			remaining[DE_MAX_DATABASES];
	int			nremaining = 0;
	int			i;

	if (database_index_locked(dboid) < 0)
		return;

	for (i = 0; i < DeShared->ndatabases; i++)
		if (DeShared->databases[i] != dboid)
			remaining[nremaining++] = DeShared->databases[i];

	databases_write(remaining, nremaining);

	memcpy(DeShared->databases, remaining, sizeof(Oid) * nremaining);
	DeShared->ndatabases = nremaining;
	unqueue_rescan_locked(dboid);
}

/*
 * free_or_stop_slot_locked
 *		A slot's register is gone: free the slot if no worker runs, else mark
 *		it and stop the worker (a later scan frees it).  Caller holds
 *		DeShared->lock exclusively.
 */
static void
free_or_stop_slot_locked(DeRegisterSlot *slot)
{
	slot->drop_requested = true;
	if (slot->worker_pid != 0)
		kill(slot->worker_pid, SIGTERM);
	else
		slot->in_use = false;
}

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

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	list_database_locked(MyDatabaseId);
	LWLockRelease(DeShared->lock);

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
				queue_rescan_locked(MyDatabaseId);
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
 * Scan worker
 * ----------------------------------------------------------------
 */

/* A register as the scan worker sees it. */
typedef struct DeRegisterRow
{
	DeRegister *reg;
	bool		busy;			/* locked by drop_register, or just deleted */
} DeRegisterRow;

/*
 * scan_worker_exit
 *		A scan that did not finish asks to be run again.
 */
static void
scan_worker_exit(int code, Datum arg)
{
	if (scan_done)
		return;

	if (LWLockHeldByMe(DeShared->lock))
		LWLockRelease(DeShared->lock);
	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	queue_rescan_locked(DatumGetObjectId(arg));
	LWLockRelease(DeShared->lock);
}

/*
 * read_registers
 *		The registers of the current database, in the caller's memory
 *		context.
 */
static DeRegisterRow *
read_registers(int *nrows)
{
	List	   *regs = de_catalog_list_registers(false);
	List	   *unlocked;
	DeRegisterRow *rows;
	ListCell   *lc;
	int			i = 0;

	/*
	 * drop_register locks its row FOR UPDATE before it stops the worker, and
	 * nothing else locks rows that strongly; so the rows that cannot be
	 * locked now are being dropped (or were deleted since the first query),
	 * and must neither get a slot nor bring a slot being dropped back to
	 * work.
	 */
	unlocked = de_catalog_lock_registers();

	rows = palloc0(sizeof(DeRegisterRow) * (list_length(regs) + 1));
	foreach(lc, regs)
	{
		DeRegister *reg = lfirst(lc);
		ListCell   *lc2;

		rows[i].reg = reg;
		rows[i].busy = true;
		foreach(lc2, unlocked)
			if (strcmp(reg->name, lfirst(lc2)) == 0)
				rows[i].busy = false;
		i++;
	}
	*nrows = i;
	return rows;
}

/*
 * init_slot_locked
 *		Give a free slot to a register.  Caller holds DeShared->lock
 *		exclusively.
 */
static void
init_slot_locked(DeRegisterSlot *slot, Oid dboid, const DeRegisterRow *row)
{
	slot->in_use = true;
	slot->generation++;
	slot->dboid = dboid;
	strlcpy(slot->name, row->reg->name, NAMEDATALEN);
	slot->paused = row->reg->paused;
	slot->promoted = (row->reg->phase == DE_PHASE_PROMOTED);
	slot->drop_requested = false;
	slot->restart_requested = false;
	slot->worker_pid = 0;
	slot->worker_latch = NULL;
	slot->failures = 0;
	slot->next_start = 0;

	SpinLockAcquire(&slot->mutex);
	if (row->reg->phase == DE_PHASE_PROMOTED)
		slot->state = DE_STATE_PROMOTED;
	else if (row->reg->paused)
		slot->state = DE_STATE_PAUSED;
	else
		slot->state = DE_STATE_INITIALIZING;
	slot->source_lsn = InvalidXLogRecPtr;
	slot->received_lsn = InvalidXLogRecPtr;
	slot->applied_lsn = InvalidXLogRecPtr;
	slot->last_applied_commit_at = 0;
	slot->last_message_at = 0;
	slot->pending_since = 0;
	slot->behind_since = 0;
	slot->frames_applied = 0;
	slot->rows_applied = 0;
	slot->wire_bytes = 0;
	slot->plain_bytes = 0;
	slot->last_error[0] = '\0';
	slot->promoted_at = row->reg->promoted_at;
	slot->promoted_lsn = row->reg->promoted_lsn;
	SpinLockRelease(&slot->mutex);
}

/*
 * update_slot_locked
 *		Carry changed flags of a register over to its slot.  Caller holds
 *		DeShared->lock exclusively.
 */
static void
update_slot_locked(DeRegisterSlot *slot, const DeRegisterRow *row)
{
	bool		idle = (slot->worker_pid == 0);

	if (slot->paused != row->reg->paused)
	{
		slot->paused = row->reg->paused;
		if (!row->reg->paused)
		{
			/* resumed: start again without waiting out earlier failures */
			slot->failures = 0;
			slot->next_start = 0;
		}
		if (idle && !slot->promoted)
			de_slot_set_state(slot,
							  row->reg->paused ? DE_STATE_PAUSED : DE_STATE_INITIALIZING,
							  NULL);

		/* the worker holds or resumes on its own; tell it now */
		if (slot->worker_latch != NULL)
			SetLatch(slot->worker_latch);
	}

	/*
	 * Only a committed promotion sets the flag here.  promote() raises it
	 * itself while it runs and lowers it again if it fails, so a row not yet
	 * promoted must not clear it.
	 */
	if ((row->reg->phase == DE_PHASE_PROMOTED) && !slot->promoted)
	{
		slot->promoted = true;
		if (slot->worker_latch != NULL)
			SetLatch(slot->worker_latch);
		if (idle)
		{
			SpinLockAcquire(&slot->mutex);
			slot->state = DE_STATE_PROMOTED;
			slot->promoted_at = row->reg->promoted_at;
			slot->promoted_lsn = row->reg->promoted_lsn;
			SpinLockRelease(&slot->mutex);
		}
	}
}

/*
 * reconcile_slots
 *		Make the slots of database dboid match its registers table.
 */
static void
reconcile_slots(Oid dboid, DeRegisterRow *rows, int nrows)
{
	bool	   *seen;
	List	   *unplaced = NIL;
	int			i;

	seen = palloc0(sizeof(bool) * DeShared->nslots);

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);

	for (i = 0; i < nrows; i++)
	{
		DeRegisterSlot *slot;
		int			j;

		if (strlen(rows[i].reg->name) >= NAMEDATALEN)
			continue;

		slot = de_slot_find(dboid, rows[i].reg->name);
		if (slot != NULL)
		{
			seen[slot - DeShared->slots] = true;
			if (!slot->drop_requested)
				update_slot_locked(slot, &rows[i]);
			else if (!rows[i].busy && slot->worker_pid == 0)
			{
				/*
				 * Dropped and added again under the same name (or a drop that
				 * failed): a new register for the slot.
				 */
				init_slot_locked(slot, dboid, &rows[i]);
			}
			continue;
		}
		if (rows[i].busy)
			continue;

		for (j = 0; j < DeShared->nslots; j++)
		{
			if (!DeShared->slots[j].in_use)
			{
				slot = &DeShared->slots[j];
				break;
			}
		}
		if (slot == NULL)
		{
			unplaced = lappend(unplaced, rows[i].reg->name);
			continue;
		}
		init_slot_locked(slot, dboid, &rows[i]);
		seen[slot - DeShared->slots] = true;
	}

	/* registers that are gone */
	for (i = 0; i < DeShared->nslots; i++)
	{
		DeRegisterSlot *slot = &DeShared->slots[i];

		if (slot->in_use && slot->dboid == dboid && !seen[i])
			free_or_stop_slot_locked(slot);
	}

	if (DeShared->launcher_latch != NULL)
		SetLatch(DeShared->launcher_latch);

	LWLockRelease(DeShared->lock);

	for (i = 0; i < nrows; i++)
	{
		if (strlen(rows[i].reg->name) >= NAMEDATALEN)
			ereport(WARNING,
					errcode(ERRCODE_NAME_TOO_LONG),
					errmsg("data_embassy register name \"%s\" is too long and is ignored",
						   rows[i].reg->name));
	}
	if (unplaced != NIL)
	{
		ListCell   *lc;

		foreach(lc, unplaced)
			ereport(WARNING,
					errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					errmsg("data_embassy register \"%s\" of database \"%s\" is not replicated: all %d register slots are in use",
						   (char *) lfirst(lc), get_database_name(dboid),
						   DeShared->nslots),
					errhint("Increase \"data_embassy.max_registers\" and restart the server."));
	}
}

/*
 * de_scan_worker_main
 *		Read the registers table of one database into the slots.
 */
void
de_scan_worker_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	bool		installed;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	before_shmem_exit(scan_worker_exit, ObjectIdGetDatum(dboid));

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid,
											  BGWORKER_BYPASS_ALLOWCONN);
	de_background_session_settings();

	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "reading data_embassy registers");

	/*
	 * Take the request off the queue before taking the snapshot: a request is
	 * queued after its transaction became visible, so every request removed
	 * here is served by this scan, and later ones queue again.
	 */
	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	unqueue_rescan_locked(dboid);
	LWLockRelease(DeShared->lock);

	PushActiveSnapshot(GetTransactionSnapshot());

	installed = OidIsValid(get_extension_oid(DE_EXTENSION_NAME, true));
	if (installed)
	{
		DeRegisterRow *rows;
		int			nrows;

		rows = read_registers(&nrows);

		/*
		 * A scan that ran while the extension was being created here may have
		 * taken the database off the list; put it back.
		 */
		if (nrows > 0)
		{
			LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
			list_database_locked(dboid);
			LWLockRelease(DeShared->lock);
		}

		reconcile_slots(dboid, rows, nrows);
	}
	else
	{
		int			i;

		LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
		forget_database_locked(dboid);
		for (i = 0; i < DeShared->nslots; i++)
		{
			DeRegisterSlot *slot = &DeShared->slots[i];

			if (slot->in_use && slot->dboid == dboid)
				free_or_stop_slot_locked(slot);
		}
		if (DeShared->launcher_latch != NULL)
			SetLatch(DeShared->launcher_latch);
		LWLockRelease(DeShared->lock);
	}

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	scan_done = true;
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
 * backoff_ms
 *		Delay before the next start of a worker that failed "failures" times
 *		in a row: retry_interval doubled per failure, at most ten times it.
 */
static int64
backoff_ms(int failures)
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
				queue_rescan_locked(slot->dboid);
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
															   backoff_ms(slot->failures));

				/*
				 * The extension may have been dropped under the worker: read
				 * the table again, at failures 1, 2, 4, 8... so that a
				 * register that keeps failing does not cause endless scans.
				 */
				if ((slot->failures & (slot->failures - 1)) == 0)
					queue_rescan_locked(slot->dboid);
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
		again = rescan_queued_locked(s->dboid);
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

		if (!slot->in_use || database_index_locked(slot->dboid) >= 0)
			continue;
		if (apply_handles[i].handle != NULL)
		{
			slot->drop_requested = true;
			if (slot->worker_pid != 0)
				kill(slot->worker_pid, SIGTERM);
			continue;
		}
		free_or_stop_slot_locked(slot);
	}

	/*
	 * Whoever freed a slot (a scan, drop_register, this function), a register
	 * that found none may fit now: read every table again.
	 */
	for (i = 0; i < DeShared->nslots; i++)
		if (!DeShared->slots[i].in_use)
			nfree++;
	if (nfree > last_nfree)
		queue_rescan_all_locked();
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
		if (exists[i])
			continue;
		LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
		forget_database_locked(dbs[i]);
		unqueue_rescan_locked(dbs[i]);
		LWLockRelease(DeShared->lock);
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
		 * A paused register has a worker too: it holds, but keeps asking
		 * the register for its position so that the lag view stays true.
		 */
		wanted = slot->in_use && !slot->promoted &&
			!slot->drop_requested && slot->worker_pid == 0 &&
			database_index_locked(slot->dboid) >= 0;
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
	databases_load_locked();
	queue_rescan_all_locked();
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
