/*-------------------------------------------------------------------------
 *
 * scan.h
 *		  The scan worker, which reads the registers table of one database
 *		  into the register slots.
 *
 * IDENTIFICATION
 *		  src/embassy/scan.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_SCAN_H
#define DE_SCAN_H

#include "embassy/status.h"

/* Entry point; main_arg is the OID of the database to read. */
extern PGDLLEXPORT void de_scan_worker_main(Datum main_arg);

/*
 * A slot's register is gone: free the slot if no worker runs, else mark it
 * drop_requested and stop the worker (a later scan frees it).  The caller
 * holds DeShared->lock exclusively.
 */
extern void de_slot_free_or_stop_locked(DeRegisterSlot *slot);

#endif							/* DE_SCAN_H */
