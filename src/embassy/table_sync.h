/*-------------------------------------------------------------------------
 *
 * table_sync.h
 *		  resync_table(): copy one table of a register again, in a snapshot
 *		  of its own, while the apply worker goes on with the others.
 *
 * IDENTIFICATION
 *		  src/embassy/table_sync.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_TABLE_SYNC_H
#define DE_TABLE_SYNC_H

#include "access/xlogdefs.h"

#include "embassy/apply.h"

/* The copy's own background worker. */
extern PGDLLEXPORT void de_table_sync_worker_main(Datum main_arg);

/*
 * The apply worker's side.  de_table_sync_start() at the start of a run
 * (it voids the attempts of an earlier run and reads which tables are to
 * be copied or were copied at an LSN the stream has not passed yet);
 * apply is the worker's, which applies the deferred changes.
 */
extern void de_table_sync_start(const char *register_name, DeApply *apply);

/*
 * Between transactions (no local transaction open): read the catalog again
 * now and then, start the copy of a table that waits for one, apply the
 * deferred changes of a table whose copy committed (in a local transaction
 * of their own), forget the copies the stream has passed.  Returns whether
 * a table is being copied or waits to be (then streamed transactions must
 * be spooled, so that their commit LSN is known when their changes are
 * applied or deferred).
 */
extern bool de_table_sync_poll(XLogRecPtr applied);

/* Is any table being copied, or waiting for a copy? (cheap) */
extern bool de_table_sync_any(void);

/*
 * Is a change to local table relid in the register transaction that
 * committed at commit_lsn to be applied now?  Not when the table's copy
 * holds it already, nor while the table waits for a copy (the copy's later
 * snapshot will hold it), nor while it is being copied: then the change
 * (its record, raw) is deferred, and applied after the copy if the copy
 * does not hold it.  raw NULL: a change that cannot be deferred (TRUNCATE);
 * the table is then copied once more after the running copy.
 */
extern bool de_table_sync_wanted(Oid relid, XLogRecPtr commit_lsn,
								 const char *raw, size_t rawlen);

/*
 * A RELATION record for local table relid; same_description: it describes
 * the table as the one before did.  Another description while changes are
 * deferred means copying the table once more.
 */
extern void de_table_sync_relation(Oid relid, bool same_description);

/* The stream starts over: deferred changes are lost (copy once more). */
extern void de_table_sync_stream_reset(void);

/*
 * retry_register(): tables whose copy failed are copied again without
 * waiting out their backoff.  Returns how many wait.
 */
extern int	de_table_sync_retry(void);

#endif							/* DE_TABLE_SYNC_H */
