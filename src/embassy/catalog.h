/*-------------------------------------------------------------------------
 *
 * catalog.h
 *		  The embassy's catalog: data_embassy.registers and its companions
 *		  replicated_relations and replicated_sequences.
 *
 * Every SQL statement on these tables lives in catalog.c, as core keeps
 * pg_subscription's in pg_subscription.c.  The functions run their SQL as
 * the owner of the tables, under SECURITY_RESTRICTED_OPERATION, with a
 * search_path of pg_catalog only (see de_privileged_sql_begin()), so the
 * caller's identity, search_path and the database's settings cannot change
 * what they do.  Each must be called inside a transaction with a snapshot
 * set where it reads or writes (the callers are SQL functions and the
 * worker's and launcher's own transactions).  Results are allocated in the
 * caller's memory context.
 *
 * IDENTIFICATION
 *		  src/embassy/catalog.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_CATALOG_H
#define DE_CATALOG_H

#include "access/transam.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

/* registers.state: where a register is in its life. */
typedef enum DeRegisterPhase
{
	DE_PHASE_INIT,				/* added; no initial sync committed yet */
	DE_PHASE_STREAMING,			/* initial sync done; streaming */
	DE_PHASE_PROMOTED			/* failed over: never connected to again */
} DeRegisterPhase;

/* One row of data_embassy.registers. */
typedef struct DeRegister
{
	char	   *name;
	char	   *conninfo;
	char	   *register_key;	/* canonical text */
	bool		copy_data;
	char	   *slot_name;		/* NULL until the first connection */
	DeRegisterPhase phase;
	bool		paused;
	bool		require_tls;	/* another host only with verify-ca/full */
	bool		pinned;			/* sysid and dboid known */
	uint64		sysid;
	Oid			dboid;
	TimestampTz promoted_at;	/* 0 unless promoted */
	XLogRecPtr	promoted_lsn;	/* invalid unless promoted */
	XLogRecPtr	skip_lsn;		/* skip(): commit LSN to skip, or invalid */
	XLogRecPtr	history_lsn;	/* the last proven heartbeat, or invalid */
	uint32		history_crc;	/* the CRC of its WAL record */
} DeRegister;

/* Row locks that de_catalog_get_register() can take. */
typedef enum DeRowLock
{
	DE_LOCK_NONE,
	DE_LOCK_KEY_SHARE,
	DE_LOCK_NO_KEY_UPDATE,		/* pause/resume: waits for drop_register */
	DE_LOCK_UPDATE				/* drop_register, promote */
} DeRowLock;

extern const char *de_register_phase_name(DeRegisterPhase phase);

/*
 * The register of this database called name, or NULL when there is none
 * (with missing_ok; otherwise ERRCODE_UNDEFINED_OBJECT "register ... does
 * not exist").  The extension missing from the database counts as missing.
 */
extern DeRegister *de_catalog_get_register(const char *name, DeRowLock lock,
										   bool missing_ok);

/* Every register of this database, by name; only_active: not promoted. */
extern List *de_catalog_list_registers(bool only_active);

/*
 * The names of the registers whose rows can be key-share locked now
 * (without waiting): those not being dropped.  Takes the locks.
 */
extern List *de_catalog_lock_registers(void);

/*
 * Insert a new register in phase init.  ERRCODE_DUPLICATE_OBJECT when the
 * name or the key is taken.
 */
extern void de_catalog_insert_register(const char *name, const char *conninfo,
									   const char *register_key,
									   bool copy_data, bool require_tls);
extern void de_catalog_delete_register(const char *name);

/*
 * registers.schemas: the schemas the register replicates here (a List of
 * names; NIL: every schema).  See schema_list.h.
 */
extern void de_catalog_set_schemas(const char *name, List *schemas);
extern List *de_catalog_register_schemas(const char *name);
extern void de_catalog_set_paused(const char *name, bool paused);
extern void de_catalog_set_require_tls(const char *name, bool require_tls);

/* The first connection pins the register's identity and names the slot. */
extern void de_catalog_set_identity(const char *name, uint64 sysid, Oid dboid,
									const char *slot_name);

/* Phase streaming; ERRCODE_UNDEFINED_OBJECT if the row is gone. */
extern void de_catalog_set_streaming(const char *name);

/*
 * Back to phase init with copy_data, for resync_register: the worker copies
 * the register again.  ERRCODE_UNDEFINED_OBJECT if the row is gone.
 */
extern void de_catalog_set_resync(const char *name);

/*
 * The last sealed heartbeat the worker received: where its WAL record
 * starts at the register, and that record's CRC.  Every stream asks the
 * register about it (the history check), after restarts too; a resync
 * forgets it.  Never waits for a row lock: false when the row is locked
 * (promote(), drop_register()) or gone, and nothing was written.
 */
extern bool de_catalog_set_history(const char *name, XLogRecPtr lsn,
								   uint32 crc);

/*
 * Phase promoted with its time and LSN (the fence), and a row in
 * data_embassy.promotions that outlives the register (with source_lsn, the
 * register's position as far as known, and the current user).
 */
extern void de_catalog_set_promoted(const char *name, TimestampTz at,
									XLogRecPtr lsn, XLogRecPtr source_lsn);

/*
 * skip(): the commit LSN of the register transaction to skip, with the
 * current user as the one who asked; InvalidXLogRecPtr withdraws it.
 */
extern void de_catalog_set_skip(const char *name, XLogRecPtr lsn);

/*
 * The worker skipped the transaction at commit LSN lsn: if that skip is
 * still asked for, record it in data_embassy.skipped_transactions and clear
 * it.  Returns false when it was withdrawn meanwhile.
 */
extern bool de_catalog_record_skip(const char *name, XLogRecPtr lsn,
								   TransactionId xid,
								   TimestampTz commit_time);

/*
 * replicated_relations: the register relid is the replica of, or NULL
 * (and the register's OID of the table it follows, InvalidOid if not
 * recorded); and a new entry.
 */
extern char *de_catalog_relation_register(Oid relid, Oid *remote_relid);
extern void de_catalog_add_relation(const char *register_name, Oid relid,
									Oid remote_relid);

/* The register's table a replica follows changed (a new initial copy). */
extern void de_catalog_set_relation_remote(Oid relid, Oid remote_relid);

/* The local tables that are replicas of the register (OIDs). */
extern List *de_catalog_register_relations(const char *register_name);

/*
 * Forget the register's relations and sequences: promote lifts the write
 * guard (after de_catalog_advance_sequences).
 */
extern void de_catalog_clear_relations(const char *register_name);

/*
 * replicated_sequences: remember the register's last value of sequence
 * relid (never lower than remembered) and move the local sequence forward
 * to it.
 */
extern void de_catalog_report_sequence(const char *register_name, Oid relid,
									   int64 last_value);

/*
 * Move every replicated sequence of the register past both its own value
 * and the register's last reported one, by margin.  Returns how many.
 */
extern uint64 de_catalog_advance_sequences(const char *register_name,
										   int64 margin);

/*
 * Per-table resync (table_sync.c).  A row of replicated_relations with a
 * resync asked for (state 'i') or a past copy's LSN.
 */
typedef struct DeTableSyncRow
{
	Oid			relid;
	char		state;			/* 'r' ready, 'i' a copy is wanted, 'd' its
								 * rows are copied, the stream catches up */
	XLogRecPtr	lsn;			/* the last copy's LSN, or invalid */
	int64		attempt;		/* the claim ('i', 'd'), or 0 */
} DeTableSyncRow;

/* resync_table(): state 'i'; false unless the state was 'r'. */
extern bool de_catalog_request_table_sync(Oid relid);

/*
 * The register's rows in state 'i' or 'd' or with a sync LSN
 * (DeTableSyncRow).  reset_attempts: first set every 'd' back to 'i' and
 * void every claimed attempt (a new apply worker), so that a copy claimed
 * by an earlier one can no longer commit, and copies whose stream had not
 * caught up start over.
 */
extern List *de_catalog_table_syncs(const char *register_name,
									bool reset_attempts);

/*
 * The qualified names (text, sorted) of the register's tables whose
 * sync_state is not 'r': their last copy did not finish (or catch up).
 */
extern List *de_catalog_tables_not_ready(const char *register_name);

/* A relation's sync state ('\0' if not recorded), LSN and attempt. */
extern char de_catalog_table_sync_state(Oid relid, XLogRecPtr *lsn,
										int64 *attempt);

/*
 * Claim a wanted copy for attempt (state 'i'): from state 'i', or from 'd'
 * of copied_attempt (to copy once more).  False when neither.
 */
extern bool de_catalog_claim_table_sync(Oid relid, int64 copied_attempt,
										int64 attempt);

/*
 * The copy of attempt committed at register LSN lsn: state 'd'.  False
 * (nothing changed) when the attempt is no longer the claimed one.
 */
extern bool de_catalog_finish_table_sync(Oid relid, int64 attempt,
										 XLogRecPtr lsn);

/* The stream caught up with the copy of attempt: state 'r'. */
extern bool de_catalog_ready_table_sync(Oid relid, int64 attempt);

/*
 * A copy of the table failed, saying why: state 'i' (copied again on its
 * own).  attempt: the claim it ran under, or 0 for the initial copy.
 * False (nothing changed) when the attempt is no longer the claimed one.
 */
extern bool de_catalog_fail_table_sync(Oid relid, int64 attempt,
									   const char *error);

/*
 * A new initial copy of the register (its transaction): every table of
 * the register is ready again, with no copy LSN, claim or error.
 */
extern void de_catalog_reset_table_syncs(const char *register_name);

/* How many of the register's tables wait for a copy after one failed. */
extern int64 de_catalog_failed_table_syncs(const char *register_name);

#endif							/* DE_CATALOG_H */
