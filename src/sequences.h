/*-------------------------------------------------------------------------
 *
 * sequences.h
 *		  The register's sequences, reported in the stream.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_SEQUENCES_H
#define DE_SEQUENCES_H

#include "lib/stringinfo.h"

/*
 * Append a SEQUENCES record with the last value every permanent user
 * sequence of this database has handed out (those that never handed one
 * out, and those in skip_namespace, are left out).  Returns the number of
 * sequences written; writes nothing when there are none.
 */
extern int	de_sequences_write(StringInfo out, Oid skip_namespace);

#endif							/* DE_SEQUENCES_H */
