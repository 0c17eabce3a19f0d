/*-------------------------------------------------------------------------
 *
 * keyless.h
 *		  Replicated tables whose UPDATE and DELETE the embassy could not
 *		  locate: the refusal at the register, the list, and the automatic
 *		  REPLICA IDENTITY FULL.
 *
 * IDENTIFICATION
 *		  src/register/keyless.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_KEYLESS_H
#define DE_KEYLESS_H

#include "utils/relcache.h"

/*
 * Can an UPDATE or DELETE of this relation's rows be located remotely?
 * True with REPLICA IDENTITY FULL or a usable replica identity index.
 */
extern bool de_rel_has_identity(Relation rel);

/*
 * Install the executor hook that refuses UPDATE and DELETE of replicated
 * tables without a replica identity while embassies are pinned.
 */
extern void de_keyless_install(void);

/*
 * Raise one WARNING naming the replicated tables without a replica
 * identity in the current database, if there are any (add_embassy()).
 */
extern void de_keyless_warn(void);

#endif							/* DE_KEYLESS_H */
