/*-------------------------------------------------------------------------
 *
 * apply.h
 *		  Applying decoded change records to local tables at executor level.
 *
 * The worker opens frames and hands every record to de_apply_record().
 * BEGIN starts a local transaction (or continues none for a record that
 * needs none), changes go through the executor's replication routines
 * (execReplication.c) with index maintenance, runs of INSERTs into one
 * table are gathered and written with table_multi_insert()
 * (multi_insert.c), tables are found through the relation map (relmap.c),
 * and COMMIT
 * commits the local transaction with the replication origin advanced to the
 * register's commit end LSN, in the same transaction.
 *
 * A transaction spread over several frames stays open across them; the
 * caller calls de_apply_frame_end() after each frame so that buffered
 * inserts, whose values point into the frame body, are written before the
 * body is freed.
 *
 * IDENTIFICATION
 *		  src/embassy/apply.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_APPLY_H
#define DE_APPLY_H

#include "access/xlogdefs.h"
#include "replication/origin.h"

#include "seal/codec.h"

typedef struct DeApply DeApply;

/*
 * Make the apply state of one register.  "origin" is the register's
 * replication origin; the caller has already called replorigin_session_setup
 * for it.  Long-lived state is allocated in mcxt.  InvalidRepOriginId: a
 * table's own copy (table_sync.c), which moves no origin.
 */
extern DeApply *de_apply_create(MemoryContext mcxt, const char *register_name,
								RepOriginId origin);

/*
 * A register added without copy_data: its initial copy describes the
 * tables without their rows, and must say so sealed (schema_list.h).  Its
 * DBA vouches for the tables here, so the copy makes every table it
 * describes a guarded replica, one with rows included.  Otherwise such a
 * table is refused (it holds rows that did not come from the register).
 */
extern void de_apply_adopt_rows(DeApply *apply, bool adopt);

/*
 * Apply only the register's tables and sequences in these schemas (a List
 * of names, NIL for every schema; it must live as long as the apply
 * state); records of others are verified and ignored.  After the copy, a
 * new table in a listed schema may become a replica (see apply.c's
 * apply_record_replicated()).
 */
extern void de_apply_set_schemas(DeApply *apply, List *schemas);

/*
 * A new stream starts: forget the relation map (RELATION records come
 * again).  Aborts any local transaction left open by a broken stream.
 */
extern void de_apply_reset_stream(DeApply *apply);

/*
 * Apply one record.  Errors are raised with an errcontext naming the
 * relation, column and row at hand, the record, the register and the
 * register's transaction (xid, commit LSN and time, or "in progress").
 * Checks for interrupts first.
 */
extern void de_apply_record(DeApply *apply, DeRecord *rec);

/*
 * The record the next de_apply_record() applies, as it came (the bytes
 * de_read_record() read it from, valid until then): a change to a table
 * being copied again is deferred as such (table_sync.c).
 */
extern void de_apply_set_raw(DeApply *apply, const char *raw, size_t len);

/* After the last record of a frame: write buffered inserts. */
extern void de_apply_frame_end(DeApply *apply);

/* Is a register transaction open locally (BEGIN seen, COMMIT not yet)? */
extern bool de_apply_in_transaction(DeApply *apply);

/*
 * Initial copy.  de_apply_copy_begin() starts the local transaction the
 * whole copy runs in; records of a copy stream (RELATION, INSERT, COPY_END)
 * then go through de_apply_record(); de_apply_copy_done() tells whether
 * COPY_END was seen.  The caller finishes with de_apply_commit(), after
 * making its own catalog changes in the same transaction.
 */
extern void de_apply_copy_begin(DeApply *apply, bool per_table);
extern bool de_apply_copy_done(DeApply *apply);

/*
 * A copy with per_table: before any record but INSERT, the caller ends the
 * open table (de_apply_copy_table_end()); when that or de_apply_record()
 * raises an error, the caller's PG_CATCH asks de_apply_copy_table_failed()
 * whether it was the table's trouble (then the table is left out and the
 * copy goes on after the record that failed, or with the record that
 * de_apply_copy_table_end() came before) or must be re-thrown.
 */
extern void de_apply_copy_table_end(DeApply *apply);
extern bool de_apply_copy_table_failed(DeApply *apply, MemoryContext cxt);
extern uint64 de_apply_copy_rows(DeApply *apply, int *tables_failed);
extern int	de_apply_copy_tables_planned(DeApply *apply);

/* An error in one line: message; first context line; detail. */
extern char *de_apply_describe_error(ErrorData *edata);

/*
 * Commit the open local transaction with the origin advanced to remote_lsn
 * (commit_time as the origin timestamp), and remember the pair for
 * de_apply_flushed().
 */
extern void de_apply_commit(DeApply *apply, XLogRecPtr remote_lsn,
							TimestampTz commit_time);

/*
 * Commit the open local transaction without moving the origin (the
 * deferred changes of a table copied again, table_sync.c).
 */
extern void de_apply_commit_local(DeApply *apply);

/*
 * Transactions streamed before their commit (stream.c).  The local
 * transaction starts with de_apply_stream_begin(), given the commit's LSN
 * and time when the transaction has committed already (a replay from its
 * spool file), else InvalidXLogRecPtr and 0 (applied as it arrives: error
 * contexts say it is in progress); subtransactions nest
 * with de_apply_subxact_begin() and end with de_apply_subxact_end(), rolled
 * back or released; the top level ends with de_apply_commit() or
 * de_apply_stream_abort().
 */
extern void de_apply_stream_begin(DeApply *apply, TransactionId xid,
								  XLogRecPtr commit_lsn,
								  TimestampTz commit_time);
extern void de_apply_subxact_begin(DeApply *apply);
extern void de_apply_subxact_end(DeApply *apply, int levels, bool rollback);
extern void de_apply_stream_abort(DeApply *apply);

/*
 * Note a position reached without a transaction (a position frame): it
 * becomes confirmable once every earlier local commit is flushed.
 */
extern void de_apply_note_position(DeApply *apply, XLogRecPtr remote_lsn);

/*
 * The highest register LSN whose effects are durable here (local WAL
 * flushed), for feedback.  Never moves backwards.
 */
extern XLogRecPtr de_apply_flushed(DeApply *apply);

/* End LSN of the last applied commit or position. */
extern XLogRecPtr de_apply_last_applied(DeApply *apply);

/*
 * skip(): the commit LSN of the register transaction to skip, or
 * InvalidXLogRecPtr.  That transaction (whole, or streamed and replayed
 * from its spool file at its commit) is applied not at all; at its commit a
 * local transaction records it in data_embassy.skipped_transactions, clears
 * registers.skip_lsn and advances the origin past it.  The LSN is then
 * invalid again.
 */
extern void de_apply_set_skip_lsn(DeApply *apply, XLogRecPtr skip_lsn);

/*
 * While handling an error: was it raised applying a register transaction?
 * Its xid, commit LSN (invalid for a streamed one applied as it arrives,
 * before its commit) and whether it was streamed.
 */
extern bool de_apply_failed_transaction(DeApply *apply, TransactionId *xid,
										XLogRecPtr *commit_lsn,
										bool *streamed);

/* Rows applied since the last call (for the status counters). */
extern uint64 de_apply_take_row_count(DeApply *apply);

#endif							/* DE_APPLY_H */
