/*-------------------------------------------------------------------------
 *
 * lookup.c
 *		  Finding the local row of an UPDATE or DELETE: through the table's
 *		  identity index, with one index scan kept open per table, or by
 *		  comparing whole rows (REPLICA IDENTITY FULL without an index).
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
 * A table with REPLICA IDENTITY FULL and no identity index at the embassy
 * is searched sequentially for a row equal to the one the register sent.
 * PostgreSQL 15's RelationFindReplTupleSeq() compares with each type's
 * default equality operator and gives up ("could not identify an equality
 * operator") on types that have none: point, box, polygon, circle, line,
 * lseg, path, xml, and arrays and composites of them.  Here such columns
 * are compared by the binary image of their values (datum_image_eq(), as
 * record_image_eq() does), which the register's values, sent in the types'
 * own send format and rebuilt by their receive functions, reproduce; the
 * comparison functions are looked up once per relation, not per row, and
 * only the columns the register sent are compared.
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
#include "access/tableam.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/lockoptions.h"
#include "storage/lmgr.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

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

/* How one column is compared. */
typedef struct DeColumnCompare
{
	bool		skip;			/* dropped column */
	bool		use_eq;			/* true: eqfn; false: binary image */
	bool		typbyval;
	int16		typlen;
	Oid			collation;
	FmgrInfo	eqfn;
} DeColumnCompare;

struct DeRowCompare
{
	int			natts;
	DeColumnCompare *cols;
};

struct DeSeqLookup
{
	MemoryContext cxt;			/* the scan's memory */
	Relation	rel;
	const DeRowCompare *cmp;
	SnapshotData dirty;
	TableScanDesc scan;			/* begun at the first lookup */
	TupleTableSlot *scanslot;
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

/*
 * de_rowcmp_create
 *		Look up, once, how each column of a layout is compared.
 */
DeRowCompare *
de_rowcmp_create(TupleDesc desc)
{
	DeRowCompare *cmp = palloc(sizeof(DeRowCompare));
	int			i;

	cmp->natts = desc->natts;
	cmp->cols = palloc0(sizeof(DeColumnCompare) * Max(desc->natts, 1));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		DeColumnCompare *col = &cmp->cols[i];
		TypeCacheEntry *typentry;

		if (att->attisdropped)
		{
			col->skip = true;
			continue;
		}
		col->typbyval = att->attbyval;
		col->typlen = att->attlen;
		col->collation = att->attcollation;

		/* the default btree opclass's equality, else the hash opclass's */
		typentry = lookup_type_cache(att->atttypid, TYPECACHE_EQ_OPR_FINFO);
		if (OidIsValid(typentry->eq_opr_finfo.fn_oid))
		{
			col->use_eq = true;
			fmgr_info_copy(&col->eqfn, &typentry->eq_opr_finfo,
						   CurrentMemoryContext);
		}
	}
	return cmp;
}

/*
 * rowcmp_equal
 *		Are two rows equal in the columns to compare?  NULL equals NULL, as
 *		PostgreSQL's tuples_equal() has it.
 */
static bool
rowcmp_equal(const DeRowCompare *cmp, const bool *compare,
			 TupleTableSlot *a, TupleTableSlot *b)
{
	int			i;

	slot_getallattrs(a);
	slot_getallattrs(b);
	for (i = 0; i < cmp->natts; i++)
	{
		const DeColumnCompare *col = &cmp->cols[i];
		Datum		va;
		Datum		vb;

		if (col->skip || !compare[i])
			continue;
		if (a->tts_isnull[i] != b->tts_isnull[i])
			return false;
		if (a->tts_isnull[i])
			continue;
		va = a->tts_values[i];
		vb = b->tts_values[i];
		if (col->use_eq)
		{
			if (!DatumGetBool(FunctionCall2Coll((FmgrInfo *) &col->eqfn,
												col->collation, va, vb)))
				return false;
		}
		else if (!datum_image_eq(va, vb, col->typbyval, col->typlen))
			return false;
	}
	return true;
}

DeSeqLookup *
de_seqlookup_create(Relation rel, const DeRowCompare *cmp)
{
	DeSeqLookup *lookup = palloc0(sizeof(DeSeqLookup));

	if (cmp->natts != RelationGetDescr(rel)->natts)
		elog(ERROR, "row comparison of %d columns does not fit relation \"%s\"",
			 cmp->natts, RelationGetRelationName(rel));
	lookup->cxt = CurrentMemoryContext;
	lookup->rel = rel;
	lookup->cmp = cmp;
	InitDirtySnapshot(lookup->dirty);
	return lookup;
}

bool
de_seqlookup_find(DeSeqLookup *lookup, TupleTableSlot *searchslot,
				  const bool *compare, TupleTableSlot *outslot)
{
	MemoryContext oldcxt;
	TransactionId xwait;
	bool		found;

	/*
	 * The scan's state lives across rows, in the lookup's context; the
	 * comparisons (which may detoast) allocate in the caller's, which is
	 * reset after every record.
	 */
	oldcxt = MemoryContextSwitchTo(lookup->cxt);
	if (lookup->scan == NULL)
	{
		lookup->scan = table_beginscan(lookup->rel, &lookup->dirty, 0, NULL);
		lookup->scanslot = table_slot_create(lookup->rel, NULL);
	}
	MemoryContextSwitchTo(oldcxt);

retry:
	found = false;
	xwait = InvalidTransactionId;
	oldcxt = MemoryContextSwitchTo(lookup->cxt);
	table_rescan(lookup->scan, NULL);
	MemoryContextSwitchTo(oldcxt);
	while (table_scan_getnextslot(lookup->scan, ForwardScanDirection,
								  lookup->scanslot))
	{
		CHECK_FOR_INTERRUPTS();
		if (!rowcmp_equal(lookup->cmp, compare, lookup->scanslot, searchslot))
			continue;
		xwait = TransactionIdIsValid(lookup->dirty.xmin) ?
			lookup->dirty.xmin : lookup->dirty.xmax;
		found = true;
		break;
	}

	/* Another transaction is inserting, changing or locking it: wait. */
	if (TransactionIdIsValid(xwait))
	{
		XactLockTableWait(xwait, NULL, NULL, XLTW_None);
		goto retry;
	}

	if (found)
	{
		ExecCopySlot(outslot, lookup->scanslot);
		ExecMaterializeSlot(outslot);
	}
	ExecClearTuple(lookup->scanslot);
	return found;
}

void
de_seqlookup_end(DeSeqLookup *lookup)
{
	if (lookup->scan != NULL)
		table_endscan(lookup->scan);
	if (lookup->scanslot != NULL)
		ExecDropSingleTupleTableSlot(lookup->scanslot);
	lookup->scan = NULL;
	lookup->scanslot = NULL;
}
