/*-------------------------------------------------------------------------
 *
 * lookup.h
 *		  Finding the local row of an UPDATE or DELETE through the table's
 *		  identity index, with one index scan kept open per table.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_LOOKUP_H
#define DE_LOOKUP_H

#include "executor/tuptable.h"
#include "utils/relcache.h"

typedef struct DeIndexLookup DeIndexLookup;

/*
 * Prepare lookups of rel's rows through idxrel (its replica identity index
 * or primary key, open and locked by the caller for the transaction).
 * Allocated in CurrentMemoryContext, which must last as long as the
 * lookup: the scan keeps its state there.
 */
extern DeIndexLookup *de_lookup_create(Relation rel, Relation idxrel);

/*
 * Find the row whose identity columns equal searchslot's (local layout)
 * and store it in outslot.  Returns false when there is none.  The row is
 * not locked: the caller is the only writer (the write guard refuses
 * everybody else); a row some other transaction is changing right now
 * falls back to PostgreSQL's RelationFindReplTupleByIndex(), which waits
 * for it and locks.
 */
extern bool de_lookup_find(DeIndexLookup *lookup, TupleTableSlot *searchslot,
						   TupleTableSlot *outslot);

/* Close the scan (before the index and the transaction go). */
extern void de_lookup_end(DeIndexLookup *lookup);

#endif							/* DE_LOOKUP_H */
