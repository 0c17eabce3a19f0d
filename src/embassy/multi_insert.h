/*-------------------------------------------------------------------------
 *
 * multi_insert.h
 *		  Runs of INSERTs into one table, gathered and written with
 *		  table_multi_insert(), as COPY FROM does.
 *
 * A buffer belongs to one table opened by the apply (its EState and
 * ResultRelInfo) and lives in the EState's query context, as long as the
 * table stays open in the local transaction.  The caller fills the slots
 * the buffer hands out (de_insbuf_next_slot(), de_insbuf_add()), checks
 * the buffered rows as it checks single rows (constraints, generated
 * columns; de_insbuf_count() and de_insbuf_slot()), and writes them with
 * de_insbuf_write().  The values of buffered rows are the caller's: they
 * must stay valid until the write, and may go right after it.  Only
 * tables where no row trigger fires on INSERT may be buffered
 * (de_insbuf_usable()): no trigger is called on this path.
 *
 * Errors are those of the table access method and of index insertion
 * (unique violations and the like), raised with the row at hand in
 * *current for the caller's error context.
 *
 * IDENTIFICATION
 *		  src/embassy/multi_insert.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_MULTI_INSERT_H
#define DE_MULTI_INSERT_H

#include "access/heapam.h"
#include "executor/tuptable.h"
#include "nodes/execnodes.h"

/* Rows gathered before one table_multi_insert() (as COPY FROM does). */
#define DE_INSBUF_MAX_ROWS		1000
#define DE_INSBUF_MAX_BYTES		65535

typedef struct DeInsertBuffer
{
	Relation	rel;
	ResultRelInfo *relinfo;
	EState	   *estate;
	TupleTableSlot **slots;		/* DE_INSBUF_MAX_ROWS, made as needed */
	int			nslots;			/* slots made so far */
	int			nrows;			/* of which holding rows */
	Size		bytes;			/* bytes of values buffered */
	BulkInsertState bistate;	/* bulk insert (initial copy), or NULL */
} DeInsertBuffer;

/* May rows of rel be buffered: does no row trigger on INSERT fire? */
extern bool de_insbuf_usable(Relation rel);

/*
 * An empty buffer for the table of relinfo, in estate's query context.
 * With bulk, writes use a BulkInsertState (a ring of buffers), as the
 * initial copy wants.
 */
extern DeInsertBuffer *de_insbuf_create(ResultRelInfo *relinfo,
										EState *estate, bool bulk);

extern TupleTableSlot *de_insbuf_make_slot(DeInsertBuffer *buf);

/*
 * The slot the next row goes into (empty); the row counts once
 * de_insbuf_add() is called.
 */
static inline TupleTableSlot *
de_insbuf_next_slot(DeInsertBuffer *buf)
{
	if (buf->nrows < buf->nslots)
		return buf->slots[buf->nrows];
	return de_insbuf_make_slot(buf);
}

/*
 * The row in the next slot is buffered, with "bytes" bytes of values.
 * Returns true when the buffer is full and must be written.
 */
static inline bool
de_insbuf_add(DeInsertBuffer *buf, Size bytes)
{
	buf->nrows++;
	buf->bytes += bytes;
	return buf->nrows >= DE_INSBUF_MAX_ROWS ||
		buf->bytes >= DE_INSBUF_MAX_BYTES;
}

/* Rows buffered, and the i-th of them. */
static inline int
de_insbuf_count(const DeInsertBuffer *buf)
{
	return buf->nrows;
}

static inline TupleTableSlot *
de_insbuf_slot(const DeInsertBuffer *buf, int i)
{
	Assert(i >= 0 && i < buf->nrows);
	return buf->slots[i];
}

/*
 * Write the buffered rows with table_multi_insert() under the current
 * command ID, then insert their index entries row by row, pointing
 * *current (when not NULL) at the row being indexed; empty the buffer.
 * The caller makes the next command (CommandCounterIncrement()).
 * Allocations go to the current memory context.
 */
extern void de_insbuf_write(DeInsertBuffer *buf, TupleTableSlot **current);

/*
 * The table is closed: end the bulk insert.  The buffer must be empty;
 * its memory goes with the EState.
 */
extern void de_insbuf_end(DeInsertBuffer *buf);

#endif							/* DE_MULTI_INSERT_H */
