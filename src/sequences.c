/*-------------------------------------------------------------------------
 *
 * sequences.c
 *		  Reading the register's sequences for the stream.
 *
 * PostgreSQL 15 does not decode sequences, so the output plugin reports
 * them itself: at a bounded interval, inside a replicated transaction, it
 * reads the current state of every permanent user sequence and writes a
 * SEQUENCES record before the COMMIT.  The value read is the sequence's
 * state now, which is at least what it had handed out by the commit being
 * decoded; the embassy only ever moves a sequence forward, and promote()
 * adds data_embassy.promote_sequence_margin for what was handed out after
 * the last report.
 *
 * The sequence is read straight from its page, as nextval() leaves it,
 * without taking a lock that could wait: a sequence that is being altered
 * right now is left for the next report.
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
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "codec.h"
#include "sequences.h"

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

int
de_sequences_write(StringInfo out, Oid skip_namespace)
{
	Relation	pg_class;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	int			n = 0;
	int			cap = 16;
	char	  **nspnames = palloc(sizeof(char *) * cap);
	char	  **relnames = palloc(sizeof(char *) * cap);
	int64	   *values = palloc(sizeof(int64) * cap);

	ScanKeyInit(&key, Anum_pg_class_relkind, BTEqualStrategyNumber,
				F_CHAREQ, CharGetDatum(RELKIND_SEQUENCE));
	pg_class = table_open(RelationRelationId, AccessShareLock);
	scan = systable_beginscan(pg_class, InvalidOid, false, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_class cls = (Form_pg_class) GETSTRUCT(tup);
		int64		last_value;

		if (cls->relpersistence != RELPERSISTENCE_PERMANENT ||
			cls->relnamespace == skip_namespace ||
			IsCatalogNamespace(cls->relnamespace) ||
			isAnyTempNamespace(cls->relnamespace))
			continue;
		if (!de_sequence_last_value(cls->oid, &last_value))
			continue;

		if (n == cap)
		{
			cap *= 2;
			nspnames = repalloc(nspnames, sizeof(char *) * cap);
			relnames = repalloc(relnames, sizeof(char *) * cap);
			values = repalloc(values, sizeof(int64) * cap);
		}
		nspnames[n] = get_namespace_name(cls->relnamespace);
		relnames[n] = pstrdup(NameStr(cls->relname));
		values[n] = last_value;
		n++;
	}
	systable_endscan(scan);
	table_close(pg_class, AccessShareLock);

	if (n > 0)
		de_write_sequences(out, n, nspnames, relnames, values);
	return n;
}
