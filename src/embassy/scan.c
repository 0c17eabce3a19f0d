/*-------------------------------------------------------------------------
 *
 * scan.c
 *		  The scan worker: a short-lived background worker that reads the
 *		  registers table of one database into the register slots.
 *
 * The launcher, connected to no database, starts one for each database
 * whose registers may have changed (see databases.c for the queue).  It
 * connects to the database, reads data_embassy.registers and reconciles the
 * slots of that database in shared memory:
 *	- a register without a slot takes a free one: its generation is bumped
 *	  and its progress reset, so a worker started for an earlier occupant
 *	  of the slot goes away (de_slot_attach);
 *	- changed flags (paused, promoted) are carried over to the slot, and
 *	  its worker is woken to act on them;
 *	- a slot whose register is gone is marked drop_requested and its worker
 *	  stopped, and is freed once no worker runs;
 *	- a row that drop_register has locked is "busy": it gets no slot and
 *	  does not bring its slot back to work, so a scan that raced with the
 *	  drop cannot restart the worker.
 * A database where the extension is gone leaves the list of databases, and
 * its slots are freed.  A scan that fails queues its database again.
 *
 * IDENTIFICATION
 *		  src/embassy/scan.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"

#include "data_embassy.h"
#include "embassy/catalog.h"
#include "embassy/databases.h"
#include "embassy/scan.h"
#include "embassy/status.h"
#include "privilege.h"

/* Set once the scan has finished; until then, exiting queues it again. */
static bool scan_done = false;

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
	de_rescan_queue_locked(DatumGetObjectId(arg));
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
		{
			if (strcmp(reg->name, lfirst(lc2)) == 0)
				rows[i].busy = false;
		}
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
	Assert(LWLockHeldByMeInMode(DeShared->lock, LW_EXCLUSIVE));

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
	slot->spool_xid = InvalidTransactionId;

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
	slot->contact_at = 0;
	slot->failing_since = 0;
	slot->proof_at = 0;
	slot->proof_flush_lsn = InvalidXLogRecPtr;
	slot->proof_lsn = InvalidXLogRecPtr;
	slot->proof_crc = 0;
	slot->heartbeat_requested_at = 0;
	slot->frames_applied = 0;
	slot->rows_applied = 0;
	slot->wire_bytes = 0;
	slot->plain_bytes = 0;
	slot->last_error[0] = '\0';
	slot->failed_commit_lsn = InvalidXLogRecPtr;
	slot->copy_started = false;
	slot->copy_tables_done = 0;
	slot->copy_rows = 0;
	slot->copy_bytes = 0;
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

	Assert(LWLockHeldByMeInMode(DeShared->lock, LW_EXCLUSIVE));

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
			de_slot_free_or_stop_locked(slot);
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
	de_rescan_unqueue_locked(dboid);
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
			de_databases_add(dboid);

		reconcile_slots(dboid, rows, nrows);
	}
	else
	{
		bool		removed;
		int			i;

		LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
		removed = de_databases_remove_locked(dboid);
		for (i = 0; i < DeShared->nslots; i++)
		{
			DeRegisterSlot *slot = &DeShared->slots[i];

			if (slot->in_use && slot->dboid == dboid)
				de_slot_free_or_stop_locked(slot);
		}
		if (DeShared->launcher_latch != NULL)
			SetLatch(DeShared->launcher_latch);
		LWLockRelease(DeShared->lock);

		/* on disk after the lock is released */
		if (removed)
			de_databases_persist();
	}

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	scan_done = true;
}

/*
 * de_slot_free_or_stop_locked
 *		A slot's register is gone: free the slot if no worker runs, else mark
 *		it and stop the worker (a later scan frees it).  Caller holds
 *		DeShared->lock exclusively.
 */
void
de_slot_free_or_stop_locked(DeRegisterSlot *slot)
{
	Assert(LWLockHeldByMeInMode(DeShared->lock, LW_EXCLUSIVE));

	slot->drop_requested = true;
	if (slot->worker_pid != 0)
		kill(slot->worker_pid, SIGTERM);
	else
		slot->in_use = false;
}
