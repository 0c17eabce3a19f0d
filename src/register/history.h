/*-------------------------------------------------------------------------
 *
 * history.h
 *		  Does this register's WAL still hold a record the embassy saw?
 *
 * IDENTIFICATION
 *		  src/register/history.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_HISTORY_H
#define DE_HISTORY_H

#include "access/xlogdefs.h"

#include "seal/codec.h"			/* DE_HISTORY_* */

extern char de_history_lookup(XLogRecPtr lsn, uint32 *crc);

#endif							/* DE_HISTORY_H */
