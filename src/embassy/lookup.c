/*-------------------------------------------------------------------------
 *
 * lookup.c
 *		  Finding the local row of an UPDATE or DELETE through the table's
 *		  identity index, with one index scan kept open per table.
 *
 * PostgreSQL's RelationFindReplTupleByIndex() (execReplication.c), which
 * native logical replication uses for every UPDATE and DELETE, opens the
 * index, looks up the operators of its columns, begins a scan, ends it and
 * closes the index again for each row, and locks the row it finds, which
 * writes a WAL record and dirties the heap page once more before the
 * update or delete itself does.  Here the scan keys are built once per
 * table and transaction, the scan is only restarted with the new key
 * values, and the row is not locked: at the embassy the apply worker is the
 * only writer of replicated tables (guard.c refuses everybody else), so
 * nobody can change the row between the lookup and the change; should a
 * row be in the middle of another transaction's change after all, the
 * lookup falls back to RelationFindReplTupleByIndex(), which waits for it.
 *
 * Like PostgreSQL, the scan uses a dirty snapshot, which sees the rows the
 * worker's own transaction has written so far without a command counter
 * increment.
 *
 * IDENTIFICATION
 *		  src/embassy/lookup.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "executor/executor.h"
#include "nodes/lockoptions.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "embassy/lookup.h"

struct DeIndexLookup
{
	MemoryContext cxt;			/* the scan's memory, as long as the lookup */
	Relation	rel;
	Relation	idxrel;
	int			nkeys;
	ScanKeyData *keys;			/* operator and collation set once */
	AttrNumber *attnos;			/* table column of each index column */
	SnapshotData dirty;
	IndexScanDesc scan;			/* begun at the first lookup */
};

DeIndexLookup *
de_lookup_create(Relation rel, Relation idxrel)
{
	DeIndexLookup *lookup = palloc0(sizeof(DeIndexLookup));
	int2vector *indkey = &idxrel->rd_index->indkey;
	int			i;

	lookup->cxt = CurrentMemoryContext;
	lookup->rel = rel;
	lookup->idxrel = idxrel;
	lookup->nkeys = IndexRelationGetNumberOfKeyAttributes(idxrel);
	lookup->keys = palloc0(sizeof(ScanKeyData) * lookup->nkeys);
	lookup->attnos = palloc(sizeof(AttrNumber) * lookup->nkeys);

	for (i = 0; i < lookup->nkeys; i++)
	{
		Oid			opfamily = idxrel->rd_opfamily[i];
		Oid			optype = idxrel->rd_opcintype[i];
		Oid			operator;

		if (indkey->values[i] <= 0)
			elog(ERROR, "identity index \"%s\" has an expression column",
				 RelationGetRelationName(idxrel));
		lookup->attnos[i] = indkey->values[i];

		operator = get_opfamily_member(opfamily, optype, optype,
									   BTEqualStrategyNumber);
		if (!OidIsValid(operator))
			elog(ERROR, "missing operator %d(%u,%u) in opfamily %u",
				 BTEqualStrategyNumber, optype, optype, opfamily);
		ScanKeyInit(&lookup->keys[i], i + 1, BTEqualStrategyNumber,
					get_opcode(operator), (Datum) 0);
		lookup->keys[i].sk_collation = idxrel->rd_indcollation[i];
	}

	InitDirtySnapshot(lookup->dirty);
	return lookup;
}

bool
de_lookup_find(DeIndexLookup *lookup, TupleTableSlot *searchslot,
			   TupleTableSlot *outslot)
{
	TransactionId xwait = InvalidTransactionId;
	bool		found = false;
	MemoryContext oldcxt;
	int			i;

	slot_getallattrs(searchslot);
	for (i = 0; i < lookup->nkeys; i++)
	{
		int			att = lookup->attnos[i] - 1;

		/* identity columns are NOT NULL; leave odd cases to PostgreSQL */
		if (searchslot->tts_isnull[att])
			return RelationFindReplTupleByIndex(lookup->rel,
												RelationGetRelid(lookup->idxrel),
												LockTupleExclusive,
												searchslot, outslot);
		lookup->keys[i].sk_argument = searchslot->tts_values[att];
	}

	/*
	 * The scan lives across rows, and the index AM allocates some of its
	 * state lazily, in whatever context is current then: keep it all in the
	 * lookup's.
	 */
	oldcxt = MemoryContextSwitchTo(lookup->cxt);
	if (lookup->scan == NULL)
		lookup->scan = index_beginscan(lookup->rel, lookup->idxrel,
									   &lookup->dirty, lookup->nkeys, 0);
	index_rescan(lookup->scan, lookup->keys, lookup->nkeys, NULL, 0);

	/* the identity index is unique: the first visible row is the one */
	if (index_getnext_slot(lookup->scan, ForwardScanDirection, outslot))
	{
		xwait = TransactionIdIsValid(lookup->dirty.xmin) ?
			lookup->dirty.xmin : lookup->dirty.xmax;
		found = true;
	}
	MemoryContextSwitchTo(oldcxt);

	if (TransactionIdIsValid(xwait))
		return RelationFindReplTupleByIndex(lookup->rel,
											RelationGetRelid(lookup->idxrel),
											LockTupleExclusive,
											searchslot, outslot);
	if (found)
		ExecMaterializeSlot(outslot);
	return found;
}

void
de_lookup_end(DeIndexLookup *lookup)
{
	if (lookup->scan != NULL)
		index_endscan(lookup->scan);
	lookup->scan = NULL;
}
