/*-------------------------------------------------------------------------
 *
 * plugin.h
 *		  The output plugin's relation filter, shared with the initial copy.
 *
 * IDENTIFICATION
 *		  src/register/plugin.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_PLUGIN_H
#define DE_PLUGIN_H

#include "catalog/pg_class.h"

/*
 * Does data_embassy replicate this relation?  Every permanent user table
 * (relkind 'r') except system relations and those in the extension's own
 * schema (its OID, from de_schema_oid(), in de_nsp).
 */
extern bool de_class_is_replicated(Oid relid, Form_pg_class classform,
								   Oid de_nsp);

#endif							/* DE_PLUGIN_H */
