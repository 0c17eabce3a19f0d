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

/* The copy's own background worker. */
extern PGDLLEXPORT void de_table_sync_worker_main(Datum main_arg);

/*
 * The apply worker's side.  de_table_sync_start() at the start of a run
 * (it voids the attempts of an earlier run and reads which tables are to
 * be copied or were copied at an LSN the stream has not passed yet);
 * keepalive is called now and then while a change waits for a copy (the
 * register must hear from the worker), check_stop may leave the process.
 */
extern void de_table_sync_start(const char *register_name,
								void (*keepalive) (void),
								void (*check_stop) (void));

/*
 * Between transactions (no local transaction open): read the catalog again
 * now and then, start the copy of a table that waits for one, forget the
 * copies the stream has passed.  Returns whether a table is being copied
 * or waits to be (then streamed transactions must be spooled, so that their
 * commit LSN is known when their changes are applied).
 */
extern bool de_table_sync_poll(XLogRecPtr applied);

/* Is any table being copied, or waiting for a copy? (cheap) */
extern bool de_table_sync_any(void);

/*
 * Is a change to local table relid in the register transaction that
 * committed at commit_lsn to be applied?  Not when the table's copy holds
 * it already; a change that follows a copy still running waits here for
 * that copy to commit.
 */
extern bool de_table_sync_wanted(Oid relid, XLogRecPtr commit_lsn);

#endif							/* DE_TABLE_SYNC_H */
