/*-------------------------------------------------------------------------
 *
 * schema_list.h
 *		  The schemas a register replicates to one embassy
 *		  (add_register(..., schemas => ...)): checking the list, carrying it
 *		  to the register as an output plugin option or a copy_frames()
 *		  argument, and matching schemas against it; and the sealed marker
 *		  of a copy without rows.
 *
 * A list is a List of schema names (char *); NIL stands for "every
 * schema".  The filter is applied on both sides: the register leaves the
 * other schemas out of the stream and the copy, and the embassy, which
 * cannot trust an option that travels unsealed, ignores them itself.
 *
 * IDENTIFICATION
 *		  src/schema_list.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_SCHEMA_LIST_H
#define DE_SCHEMA_LIST_H

#include "nodes/pg_list.h"
#include "utils/array.h"

/*
 * The names of a text[] argument called argname: one dimension, at least
 * one element, no NULL, no empty or over-long name, no name twice.  Errors
 * with ERRCODE_INVALID_PARAMETER_VALUE or ERRCODE_NULL_VALUE_NOT_ALLOWED.
 */
extern List *de_schema_list_from_array(ArrayType *arr, const char *argname);

/* The list as a text[] (NULL for NIL). */
extern ArrayType *de_schema_list_to_array(List *schemas);

/* The plugin option's value: the names quoted as identifiers, comma-separated. */
extern char *de_schema_list_to_option(List *schemas);

/* And back: ERRCODE_INVALID_PARAMETER_VALUE for a malformed value. */
extern List *de_schema_list_from_option(const char *optname, const char *value);

/* Does the list (NIL: every schema) hold this schema? */
extern bool de_schema_list_contains(List *schemas, const char *nspname);
extern bool de_schema_list_contains_oid(List *schemas, Oid nspid);

/*
 * A copy without rows (add_register(..., copy_data => false): the copy
 * describes the replicated tables only) carries, sealed right after its
 * HELLO, a non-transactional MESSAGE record with this prefix and content;
 * a copy with rows never does.  copy_frames()'s with_rows argument
 * travels unsealed, so the embassy checks the sealed marker against what
 * it asked for.
 */
#define DE_COPY_MODE_PREFIX		"data_embassy.copy"
#define DE_COPY_MODE_NO_ROWS	"relations only"

/*
 * Every copy carries, sealed before its first table, a non-transactional
 * MESSAGE record with this prefix whose content is the number of tables
 * that follow, in decimal: the embassy's progress view shows it as
 * copy_tables_total.  An embassy that does not know it ignores it, as any
 * logical decoding message.
 */
#define DE_COPY_TABLES_PREFIX	"data_embassy.copy_tables"

#endif							/* DE_SCHEMA_LIST_H */
