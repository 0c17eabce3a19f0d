/*-------------------------------------------------------------------------
 *
 * guard.h
 *		  The write guard: until its register is promoted, a replicated table
 *		  at the embassy refuses writes from every session but an apply
 *		  worker.
 *
 * IDENTIFICATION
 *		  src/embassy/guard.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_GUARD_H
#define DE_GUARD_H

/* Set by apply workers: their writes are the replica's only source. */
extern bool de_guard_exempt;

/* Install the executor and utility hooks (from _PG_init, when preloaded). */
extern void de_guard_install(void);

/*
 * Tell every backend that the set of guarded tables changed, at commit of
 * the current transaction (call after changing
 * data_embassy.replicated_relations).
 */
extern void de_guard_invalidate(void);

#endif							/* DE_GUARD_H */
