/*-------------------------------------------------------------------------
 *
 * stream.h
 *		  Transactions the register streams before they commit, at the
 *		  embassy: applied as they arrive when they have the worker to
 *		  themselves, spooled to a temporary file and applied at their
 *		  commit when not.
 *
 * IDENTIFICATION
 *		  src/embassy/stream.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_STREAM_H
#define DE_STREAM_H

#include "embassy/apply.h"
#include "seal/codec.h"

typedef struct DeStream DeStream;

/* Called now and then during a long replay, to keep the connection alive. */
typedef void (*DeStreamPing) (void);

extern DeStream *de_stream_create(MemoryContext mcxt, DeApply *apply,
								  const char *register_name,
								  DeStreamPing ping);

/*
 * Look at one record of the stream before the apply does.  "raw" and
 * "rawlen" are the record's bytes in the frame body.  Returns true when the
 * record is taken care of (a streaming record, or a change of a spooled
 * transaction); false when the caller must pass it to de_apply_record()
 * (records outside streamed transactions, changes of the transaction
 * being applied as it arrives, and RELATION records, which describe tables
 * for everybody).
 */
extern bool de_stream_record(DeStream *stream, DeRecord *rec,
							 const char *raw, size_t rawlen);

/*
 * A new stream: forget every streamed transaction and remove their spool
 * files.  The caller resets the apply state (and its local transaction).
 */
extern void de_stream_reset(DeStream *stream);

/*
 * Whether streamed transactions may be applied as they arrive (the
 * default), or must be spooled and applied at their commit, when their
 * commit LSN is known (what skip() needs); spool_xid, if valid, is one
 * that must be spooled even when the others may not.
 */
extern void de_stream_set_direct(DeStream *stream, bool allowed,
								 TransactionId spool_xid);

/*
 * hold: spool every streamed transaction, whatever de_stream_set_direct()
 * allows, while a table is copied again (table_sync.c needs each
 * transaction's commit LSN before applying its changes to the table).
 */
extern void de_stream_hold_direct(DeStream *stream, bool hold);

#endif							/* DE_STREAM_H */
