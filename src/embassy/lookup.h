/*-------------------------------------------------------------------------
 *
 * lookup.h
 *		  Finding the local row of an UPDATE or DELETE: through the table's
 *		  identity index, with one index scan kept open per table, or by
 *		  comparing whole rows (REPLICA IDENTITY FULL without an index).
 *
 * IDENTIFICATION
 *		  src/embassy/lookup.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_LOOKUP_H
#define DE_LOOKUP_H

#include "executor/tuptable.h"
#include "utils/relcache.h"

typedef struct DeIndexLookup DeIndexLookup;
typedef struct DeRowCompare DeRowCompare;
typedef struct DeSeqLookup DeSeqLookup;

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

/*
 * How the columns of rows of one layout are compared: with the default
 * btree or hash equality of a column's type where it has one, else by the
 * binary image of the values (point, box, polygon, xml...), as
 * record_image_eq() does.  Made once per relation, in CurrentMemoryContext.
 */
extern DeRowCompare *de_rowcmp_create(TupleDesc desc);

/*
 * Prepare searches of rel's rows by comparing them with a search row, with
 * one sequential scan kept open; allocated in CurrentMemoryContext, which
 * must last as long as the lookup.  cmp must describe rel's layout.
 */
extern DeSeqLookup *de_seqlookup_create(Relation rel, const DeRowCompare *cmp);

/*
 * Find a row equal to searchslot in the columns where compare[] is true
 * (the columns the register sent) and store it in outslot.  Returns false
 * when there is none.  A row that another transaction is changing is
 * waited for, as in PostgreSQL's RelationFindReplTupleSeq(); the row is not
 * locked, for the reason given at de_lookup_find().
 */
extern bool de_seqlookup_find(DeSeqLookup *lookup, TupleTableSlot *searchslot,
							  const bool *compare, TupleTableSlot *outslot);

/* Close the scan (before the table and the transaction go). */
extern void de_seqlookup_end(DeSeqLookup *lookup);

#endif							/* DE_LOOKUP_H */
