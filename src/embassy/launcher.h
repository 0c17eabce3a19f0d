/*-------------------------------------------------------------------------
 *
 * launcher.h
 *		  The launcher background worker and its wake-up protocol.
 *
 * IDENTIFICATION
 *		  src/embassy/launcher.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_LAUNCHER_H
#define DE_LAUNCHER_H

/* Register the launcher as a static background worker (from _PG_init). */
extern void de_launcher_register(void);

/*
 * Ask the launcher to read the registers table of the current database
 * again once the current transaction commits (add, drop, pause, resume,
 * promote call this).  Also records the database in the persistent list of
 * databases that hold registers.
 */
extern void de_launcher_rescan_at_commit(void);

/* Wake the launcher now. */
extern void de_launcher_wakeup(void);

/* retry_interval doubled per failure in a row, at most ten times it */
extern int64 de_backoff_ms(int failures);

#endif							/* DE_LAUNCHER_H */
