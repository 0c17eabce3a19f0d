/*-------------------------------------------------------------------------
 *
 * sequences.c
 *		  Reading the register's sequences for the stream.
 *
 * PostgreSQL 15 does not decode sequences, so the output plugin reports
 * them itself: inside a replicated transaction, before its COMMIT, it reads
 * the current state of the register's permanent user sequences and writes
 * a SEQUENCES record with those that moved since the stream last reported
 * them.  The plugin does so at every commit that reaches the WAL flush
 * position (so the last transaction before a quiet spell, or a disaster,
 * carries the sequences) and, while the decoder is behind, at most every
 * data_embassy.sequence_interval.  The value read is the sequence's state
 * now, which is at least what it had handed out by the commit being
 * decoded; the embassy only ever moves a sequence forward, and promote()
 * adds data_embassy.promote_sequence_margin for what was handed out after
 * the last report.
 *
 * The list of sequences is read from pg_class once per stream and again
 * after any change to pg_class; each report then costs one buffer read per
 * sequence.
 *
 * The sequence is read straight from its page, as nextval() leaves it,
 * without taking a lock that could wait: a sequence that is being altered
 * right now is left for the next report.
 *
 * IDENTIFICATION
 *		  src/register/sequences.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/sequence.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "storage/smgr.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "seal/codec.h"
#include "register/sequences.h"
#include "schema_list.h"

/* The special-space marker of a sequence page (commands/sequence.c). */
#define DE_SEQ_MAGIC	0x1717

typedef struct DeSeqMagic
{
	uint32		magic;
} DeSeqMagic;

/*
 * de_sequence_last_value
 *		The last value a sequence handed out; false if it never did, or if
 *		it cannot be read without waiting.
 */
static bool
de_sequence_last_value(Oid relid, int64 *last_value)
{
	Relation	rel;
	bool		found = false;

	if (!ConditionalLockRelationOid(relid, AccessShareLock))
		return false;

	rel = RelationIdGetRelation(relid);
	if (RelationIsValid(rel))
	{
		if (smgrexists(RelationGetSmgr(rel), MAIN_FORKNUM) &&
			RelationGetNumberOfBlocks(rel) > 0)
		{
			Buffer		buf = ReadBuffer(rel, 0);
			Page		page;

			LockBuffer(buf, BUFFER_LOCK_SHARE);
			page = BufferGetPage(buf);
			if (PageGetSpecialSize(page) >= sizeof(DeSeqMagic) &&
				((DeSeqMagic *) PageGetSpecialPointer(page))->magic == DE_SEQ_MAGIC &&
				PageGetMaxOffsetNumber(page) >= FirstOffsetNumber)
			{
				ItemId		lp = PageGetItemId(page, FirstOffsetNumber);

				if (ItemIdIsNormal(lp))
				{
					HeapTupleHeader td = (HeapTupleHeader) PageGetItem(page, lp);
					Form_pg_sequence_data seq;

					seq = (Form_pg_sequence_data) ((char *) td + td->t_hoff);
					if (seq->is_called)
					{
						*last_value = seq->last_value;
						found = true;
					}
				}
			}
			UnlockReleaseBuffer(buf);
		}
		RelationClose(rel);
	}

	UnlockRelationOid(relid, AccessShareLock);
	return found;
}

typedef struct DeSeqEntry
{
	Oid			relid;
	char	   *nspname;
	char	   *relname;
	bool		reported;		/* last_value was sent in this stream */
	int64		last_value;
} DeSeqEntry;

struct DeSeqReporter
{
	MemoryContext cxt;			/* the list; reset when rebuilt */
	Oid			skip_namespace;
	List	   *schemas;		/* de_seqreport_set_schemas(): NIL, all */
	bool		valid;
	uint64		generation;		/* de_seq_generation when built */
	int			n;
	DeSeqEntry *entries;
};

/* Bumped when pg_class changes: every reporter of this process rebuilds. */
static uint64 de_seq_generation = 1;
static bool de_seq_callback_registered = false;

static void
de_seq_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	de_seq_generation++;
}

DeSeqReporter *
de_seqreport_create(MemoryContext mcxt, Oid skip_namespace)
{
	DeSeqReporter *r = MemoryContextAllocZero(mcxt, sizeof(DeSeqReporter));

	r->cxt = AllocSetContextCreate(mcxt, "data_embassy sequences",
								   ALLOCSET_SMALL_SIZES);
	r->skip_namespace = skip_namespace;
	if (!de_seq_callback_registered)
	{
		CacheRegisterSyscacheCallback(RELOID, de_seq_invalidate, (Datum) 0);
		de_seq_callback_registered = true;
	}
	return r;
}

/*
 * de_seqreport_set_schemas
 *		Report only the sequences of these schemas (NIL: of every schema).
 *		The list must live as long as the reporter.
 */
void
de_seqreport_set_schemas(DeSeqReporter *r, List *schemas)
{
	r->schemas = schemas;
	r->valid = false;
}

/*
 * de_seqreport_rebuild
 *		Read the list of sequences, keeping what was reported of those that
 *		are still there.
 */
static void
de_seqreport_rebuild(DeSeqReporter *r)
{
	MemoryContext newcxt;
	MemoryContext oldcxt;
	Relation	pg_class;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	int			cap = 16;
	int			n = 0;
	DeSeqEntry *entries;

	newcxt = AllocSetContextCreate(MemoryContextGetParent(r->cxt),
								   "data_embassy sequences",
								   ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(newcxt);
	entries = palloc(sizeof(DeSeqEntry) * cap);

	ScanKeyInit(&key, Anum_pg_class_relkind, BTEqualStrategyNumber,
				F_CHAREQ, CharGetDatum(RELKIND_SEQUENCE));
	pg_class = table_open(RelationRelationId, AccessShareLock);
	scan = systable_beginscan(pg_class, InvalidOid, false, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_class cls = (Form_pg_class) GETSTRUCT(tup);
		int			i;

		if (cls->relpersistence != RELPERSISTENCE_PERMANENT ||
			cls->relnamespace == r->skip_namespace ||
			IsCatalogNamespace(cls->relnamespace) ||
			isAnyTempNamespace(cls->relnamespace) ||
			!de_schema_list_contains_oid(r->schemas, cls->relnamespace))
			continue;

		if (n == cap)
		{
			cap *= 2;
			entries = repalloc(entries, sizeof(DeSeqEntry) * cap);
		}
		entries[n].relid = cls->oid;
		entries[n].nspname = get_namespace_name(cls->relnamespace);
		entries[n].relname = pstrdup(NameStr(cls->relname));
		entries[n].reported = false;
		entries[n].last_value = 0;
		for (i = 0; i < r->n; i++)
		{
			if (r->entries[i].relid == cls->oid && r->entries[i].reported &&
				strcmp(r->entries[i].relname, entries[n].relname) == 0 &&
				strcmp(r->entries[i].nspname, entries[n].nspname) == 0)
			{
				entries[n].reported = true;
				entries[n].last_value = r->entries[i].last_value;
				break;
			}
		}
		n++;
	}
	systable_endscan(scan);
	table_close(pg_class, AccessShareLock);
	MemoryContextSwitchTo(oldcxt);

	MemoryContextDelete(r->cxt);
	r->cxt = newcxt;
	r->entries = entries;
	r->n = n;
	r->valid = true;
}

int
de_seqreport_write(DeSeqReporter *r, StringInfo out)
{
	char	  **nspnames;
	char	  **relnames;
	int64	   *values;
	int			n = 0;
	int			i;

	if (!r->valid || r->generation != de_seq_generation)
	{
		r->generation = de_seq_generation;
		de_seqreport_rebuild(r);
	}
	if (r->n == 0)
		return 0;

	nspnames = palloc(sizeof(char *) * r->n);
	relnames = palloc(sizeof(char *) * r->n);
	values = palloc(sizeof(int64) * r->n);

	for (i = 0; i < r->n; i++)
	{
		DeSeqEntry *e = &r->entries[i];
		int64		last_value;

		if (!de_sequence_last_value(e->relid, &last_value))
			continue;
		if (e->reported && e->last_value == last_value)
			continue;
		e->reported = true;
		e->last_value = last_value;
		nspnames[n] = e->nspname;
		relnames[n] = e->relname;
		values[n] = last_value;
		n++;
	}

	if (n > 0)
		de_write_sequences(out, n, nspnames, relnames, values);
	pfree(nspnames);
	pfree(relnames);
	pfree(values);
	return n;
}
