/*-------------------------------------------------------------------------
 *
 * status.h
 *		  Shared memory at the embassy: one slot per register, holding what
 *		  the launcher needs to run its worker and what the lag view shows.
 *
 * Locking protocol:
 *	- DeShared->lock (LWLock) guards slot allocation and the control fields
 *	  of every slot (in_use, generation, dboid, name, paused, promoted,
 *	  drop_requested, restart_requested, worker_pid, worker_latch, failures,
 *	  next_start, spool_xid) and the
 *	  database lists.  Take it shared to read, exclusive to change.
 *	- DeShared->file_lock (LWLock) serializes writing the file of databases,
 *	  which is done without holding DeShared->lock (see databases.c).  It is
 *	  taken before DeShared->lock, never while holding it.
 *	- Each slot's mutex (spinlock) guards its progress fields (state ...
 *	  copy_bytes).  Only the slot's own worker writes them (and the launcher
 *	  or SQL functions when no worker runs); readers copy them out under the
 *	  spinlock and format outside it.
 *
 * IDENTIFICATION
 *		  src/embassy/status.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_STATUS_H
#define DE_STATUS_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"

#define DE_MAX_DATABASES	64
#define DE_ERROR_LEN		512

typedef enum DeState
{
	DE_STATE_INITIALIZING = 0,
	DE_STATE_COPYING,
	DE_STATE_STREAMING,
	DE_STATE_CATCHING_UP,
	DE_STATE_DISCONNECTED,
	DE_STATE_PAUSED,
	DE_STATE_ERROR,
	DE_STATE_PROMOTING,
	DE_STATE_PROMOTED
} DeState;

typedef struct DeRegisterSlot
{
	/* control, under DeShared->lock */
	bool		in_use;
	uint32		generation;		/* bumped each time the slot is reused */
	Oid			dboid;
	char		name[NAMEDATALEN];
	bool		paused;
	bool		promoted;
	bool		drop_requested;
	bool		restart_requested;	/* resync_register: start over now */
	bool		retry_tables;	/* retry_register: copy the tables whose copy
								 * failed now */
	pid_t		worker_pid;		/* 0 when no worker runs */
	Latch	   *worker_latch;
	int			failures;		/* consecutive failed runs, for backoff */
	TimestampTz next_start;		/* launcher starts no worker before this */
	TransactionId spool_xid;	/* the last run failed in this streamed
								 * transaction: the next run spools it, so
								 * that its commit LSN is known */

	/* progress, under mutex */
	slock_t		mutex;
	DeState		state;
	XLogRecPtr	source_lsn;		/* register's WAL end as last reported */
	XLogRecPtr	received_lsn;	/* end_lsn of the last frame received */
	XLogRecPtr	applied_lsn;	/* everything before this is applied */
	TimestampTz last_applied_commit_at; /* register commit time */
	TimestampTz last_message_at;	/* arrival of the latest sealed frame */
	TimestampTz pending_since;	/* commit time of the oldest received but
								 * unapplied commit, 0 if none */
	TimestampTz behind_since;	/* when source_lsn first passed applied_lsn, 0
								 * when caught up; kept across the worker's
								 * runs */
	TimestampTz contact_at;		/* newest sealed proof that the register was
								 * alive: the moment the nonce of a HELLO or
								 * of a matched heartbeat was made */
	TimestampTz failing_since;	/* first failure of the current series of
								 * failed runs, 0 once a run streams */
	uint64		frames_applied;
	uint64		rows_applied;
	uint64		wire_bytes;
	uint64		plain_bytes;
	char		last_error[DE_ERROR_LEN];
	XLogRecPtr	failed_commit_lsn;	/* commit LSN of the transaction that
									 * last_error is about, if known */
	TimestampTz promoted_at;
	XLogRecPtr	promoted_lsn;

	/*
	 * Sealed freshness: the newest heartbeat the register sealed with a nonce
	 * this embassy made, the moment the nonce was made (the register was
	 * alive then or later), its WAL flush position and the heartbeat's own
	 * position.  heartbeat_requested_at: somebody (promote) wants a heartbeat
	 * made after this moment; the worker sends one at once.
	 */
	TimestampTz proof_at;
	XLogRecPtr	proof_flush_lsn;
	XLogRecPtr	proof_lsn;
	uint32		proof_crc;		/* CRC of that heartbeat's WAL record: the
								 * next stream asks the register whether its
								 * WAL still holds it (history.c) */
	TimestampTz heartbeat_requested_at;

	/* the latest initial copy (or resync) since server start */
	bool		copy_started;
	uint64		copy_tables_done;	/* tables whose rows all arrived */
	uint64		copy_tables_total;	/* tables to copy, 0 if not known (a
									 * resync_table copy knows it) */
	uint64		copy_rows;
	uint64		copy_bytes;		/* frame bytes received (sealed) */
} DeRegisterSlot;

typedef struct DeSharedState
{
	LWLock	   *lock;
	LWLock	   *file_lock;		/* writes of the file of databases */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;

	/* databases that may hold registers (persisted in a file) */
	bool		databases_loaded;
	int			ndatabases;
	Oid			databases[DE_MAX_DATABASES];

	/* databases whose registers table must be read again */
	int			nrescan;
	Oid			rescan[DE_MAX_DATABASES];

	int			nslots;
	DeRegisterSlot slots[FLEXIBLE_ARRAY_MEMBER];
} DeSharedState;

extern PGDLLIMPORT DeSharedState *DeShared;

/*
 * The bytes a promotion now would lose as far as sealed data tells: the
 * register's sealed WAL position beyond what is applied here (0 when
 * applied is at or past it), or -1 when either position is unknown.  The
 * views and promote() both use it.
 */
extern int64 de_unreplicated_bytes(XLogRecPtr source, XLogRecPtr applied);

/* Install shmem_request/shmem_startup hooks (from _PG_init). */
extern void de_status_shmem_init_hooks(void);

/* Name of a state as the views show it ("streaming"...). */
extern const char *de_state_name(DeState state);

/* Slot of a register in a database, or NULL; caller holds DeShared->lock. */
extern DeRegisterSlot *de_slot_find(Oid dboid, const char *name);

/*
 * Set state (and, if errmsg is not NULL, last_error, and then
 * failed_commit_lsn to invalid) under the spinlock.
 */
extern void de_slot_set_state(DeRegisterSlot *slot, DeState state,
							  const char *errmsg);

/* An initial copy (or resync) starts: its progress counters from zero. */
extern void de_slot_copy_begin(DeRegisterSlot *slot);

/*
 * Attach the current process to slot "index" as its worker if the slot
 * still holds the register of that generation, is not being dropped and has
 * no worker; sets worker_pid and worker_latch and clears them again at
 * process exit.  Returns NULL when the worker is not wanted any more.
 */
extern DeRegisterSlot *de_slot_attach(int index, uint32 generation);

/* End the attachment early (also done automatically at exit). */
extern void de_slot_detach(void);

/*
 * Wait, at most timeout_ms and checking for interrupts, until the slot (of
 * this generation) has no worker; raise ERROR naming the register when the
 * worker is still running at the end.
 */
extern void de_slot_wait_stopped(DeRegisterSlot *slot, uint32 generation,
								 int timeout_ms, const char *register_name);

#endif							/* DE_STATUS_H */
