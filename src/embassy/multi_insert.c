/*-------------------------------------------------------------------------
 *
 * multi_insert.c
 *		  Runs of INSERTs into one table, gathered and written with
 *		  table_multi_insert(), as COPY FROM does.
 *
 * The apply converts each INSERT of a run into a slot of the buffer; when
 * the buffer is full (DE_INSBUF_MAX_ROWS rows or DE_INSBUF_MAX_BYTES bytes
 * of values), when another record comes, at the end of each frame and
 * before commit, the rows are written in one table_multi_insert() call and
 * then indexed row by row, as copyfrom.c's CopyMultiInsertBufferFlush()
 * does.  Slots are made once per table and transaction and reused for
 * every run.  The contract is in multi_insert.h.
 *
 * IDENTIFICATION
 *		  src/embassy/multi_insert.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tableam.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "utils/rel.h"

#include "embassy/multi_insert.h"

/*
 * de_insbuf_usable
 *		Does the table have no row trigger on INSERT that fires in this
 *		session (given session_replication_role)?
 */
bool
de_insbuf_usable(Relation rel)
{
	TriggerDesc *trigdesc = rel->trigdesc;
	int			i;

	if (trigdesc == NULL)
		return true;
	for (i = 0; i < trigdesc->numtriggers; i++)
	{
		Trigger    *trig = &trigdesc->triggers[i];

		if (!TRIGGER_FOR_ROW(trig->tgtype) || !TRIGGER_FOR_INSERT(trig->tgtype))
			continue;
		if (trig->tgenabled == TRIGGER_FIRES_ALWAYS)
			return false;
		if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
		{
			if (trig->tgenabled == TRIGGER_FIRES_ON_REPLICA)
				return false;
		}
		else if (trig->tgenabled == TRIGGER_FIRES_ON_ORIGIN)
			return false;
	}
	return true;
}

/*
 * de_insbuf_create
 *		An empty buffer for one table.
 */
DeInsertBuffer *
de_insbuf_create(ResultRelInfo *relinfo, EState *estate, bool bulk)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(estate->es_query_cxt);
	DeInsertBuffer *buf = palloc0(sizeof(DeInsertBuffer));

	buf->rel = relinfo->ri_RelationDesc;
	buf->relinfo = relinfo;
	buf->estate = estate;
	if (bulk)
		buf->bistate = GetBulkInsertState();
	MemoryContextSwitchTo(oldcxt);
	return buf;
}

/*
 * de_insbuf_make_slot
 *		One more slot, when every slot made so far holds a row.  Kept in
 *		the EState's tuple table, which drops it with the EState.
 */
TupleTableSlot *
de_insbuf_make_slot(DeInsertBuffer *buf)
{
	MemoryContext oldcxt;
	TupleTableSlot *slot;

	Assert(buf->nrows == buf->nslots && buf->nslots < DE_INSBUF_MAX_ROWS);

	oldcxt = MemoryContextSwitchTo(buf->estate->es_query_cxt);
	if (buf->slots == NULL)
		buf->slots = palloc(sizeof(TupleTableSlot *) * DE_INSBUF_MAX_ROWS);
	slot = table_slot_create(buf->rel, &buf->estate->es_tupleTable);
	buf->slots[buf->nslots++] = slot;
	MemoryContextSwitchTo(oldcxt);
	return slot;
}

/*
 * de_insbuf_write
 *		Write and index the buffered rows, and empty the buffer.
 */
void
de_insbuf_write(DeInsertBuffer *buf, TupleTableSlot **current)
{
	EState	   *estate = buf->estate;
	ResultRelInfo *relinfo = buf->relinfo;
	int			i;

	estate->es_output_cid = GetCurrentCommandId(true);
	table_multi_insert(buf->rel, buf->slots, buf->nrows,
					   estate->es_output_cid, 0, buf->bistate);

	for (i = 0; i < buf->nrows; i++)
	{
		TupleTableSlot *slot = buf->slots[i];

		if (relinfo->ri_NumIndices > 0)
		{
			List	   *recheck;

			if (current != NULL)
				*current = slot;
			recheck = ExecInsertIndexTuples(relinfo, slot, estate,
											false, false, NULL, NIL);
			list_free(recheck);
			if (current != NULL)
				*current = NULL;
		}
		ExecClearTuple(slot);
		ResetPerTupleExprContext(estate);
	}

	buf->nrows = 0;
	buf->bytes = 0;
}

/*
 * de_insbuf_end
 *		End the bulk insert of a table being closed.
 */
void
de_insbuf_end(DeInsertBuffer *buf)
{
	Assert(buf->nrows == 0);

	if (buf->bistate != NULL)
	{
		FreeBulkInsertState(buf->bistate);
		table_finish_bulk_insert(buf->rel, 0);
		buf->bistate = NULL;
	}
}
