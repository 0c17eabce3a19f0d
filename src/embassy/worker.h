/*-------------------------------------------------------------------------
 *
 * worker.h
 *		  The apply worker: one per register, started by the launcher.
 *
 * IDENTIFICATION
 *		  src/embassy/worker.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_WORKER_H
#define DE_WORKER_H

#include "postgres.h"

/*
 * Entry point.  main_arg is the slot index in DeShared->slots;
 * bgw_extra holds the slot generation (uint32) the launcher saw.
 */
extern PGDLLEXPORT void de_apply_worker_main(Datum main_arg);

/* Name of the replication origin of a register in the current database. */
extern char *de_origin_name(Oid dboid, const char *register_name);

#endif							/* DE_WORKER_H */
