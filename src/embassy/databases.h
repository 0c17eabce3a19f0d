/*-------------------------------------------------------------------------
 *
 * databases.h
 *		  The databases that may hold registers, persisted in a file, and
 *		  the queue of databases whose registers table must be read again.
 *
 * Both lists live in DeShared (status.h).  Functions named *_locked need
 * DeShared->lock held by the caller (exclusively when they change
 * something); the others take the locks they need and must be called
 * without DeShared->lock.
 *
 * IDENTIFICATION
 *		  src/embassy/databases.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_DATABASES_H
#define DE_DATABASES_H

/* Read the file of databases into shared memory, once per server start. */
extern void de_databases_load_locked(void);

/* Position of dboid in the list of databases, or -1. */
extern int	de_database_index_locked(Oid dboid);

/*
 * Add dboid to the list, in shared memory and durably on disk.  Raises
 * ERRCODE_CONFIGURATION_LIMIT_EXCEEDED when the list is full.
 */
extern void de_databases_add(Oid dboid);

/*
 * Take dboid off the list and the rescan queue in shared memory.  Returns
 * whether it was listed; if so, the caller calls de_databases_persist()
 * once it has released DeShared->lock.
 */
extern bool de_databases_remove_locked(Oid dboid);

/* Write the list as it is now to disk, durably. */
extern void de_databases_persist(void);

/* The rescan queue.  None of these can fail. */
extern void de_rescan_queue_locked(Oid dboid);
extern void de_rescan_queue_all_locked(void);
extern void de_rescan_unqueue_locked(Oid dboid);
extern bool de_rescan_queued_locked(Oid dboid);

#endif							/* DE_DATABASES_H */
