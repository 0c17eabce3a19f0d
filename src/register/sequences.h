/*-------------------------------------------------------------------------
 *
 * sequences.h
 *		  The register's sequences, reported in the stream.
 *
 * IDENTIFICATION
 *		  src/register/sequences.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_SEQUENCES_H
#define DE_SEQUENCES_H

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

/* Per-stream state: the sequences and the values last reported. */
typedef struct DeSeqReporter DeSeqReporter;

/* Sequences in skip_namespace (the extension's own) are never reported. */
extern DeSeqReporter *de_seqreport_create(MemoryContext mcxt,
										  Oid skip_namespace);

/* Only the sequences of these schemas (NIL: every schema); see schema_list.h. */
extern void de_seqreport_set_schemas(DeSeqReporter *reporter,
									 List *schemas);

/*
 * Append a SEQUENCES record with every permanent user sequence whose last
 * value moved since this stream last reported it (sequences that never
 * handed out a value are left out).  Must run in a transaction (a decoding
 * callback's).  Returns the number of sequences written; writes nothing
 * when none moved.
 */
extern int	de_seqreport_write(DeSeqReporter *reporter, StringInfo out);

#endif							/* DE_SEQUENCES_H */
