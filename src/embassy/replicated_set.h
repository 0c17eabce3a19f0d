/*-------------------------------------------------------------------------
 *
 * replicated_set.h
 *		  What a register may write into at the embassy: add_register's
 *		  schemas argument and add_replicated_table().
 *
 * IDENTIFICATION
 *		  src/embassy/replicated_set.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_REPLICATED_SET_H
#define DE_REPLICATED_SET_H

#include "fmgr.h"
#include "nodes/pg_list.h"

/*
 * The schemas argument argno of add_register: NIL when NULL (every
 * schema), else the checked names, each an existing schema here that can
 * hold replicated tables.  Errors with an errcode for an empty array, NULL
 * elements, unknown or system schemas.
 */
extern List *de_register_schemas_arg(FunctionCallInfo fcinfo, int argno);

#endif							/* DE_REPLICATED_SET_H */
