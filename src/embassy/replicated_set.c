/*-------------------------------------------------------------------------
 *
 * replicated_set.c
 *		  What a register may write into at the embassy, as the DBA sets it:
 *		  add_register's schemas argument, and add_replicated_table().
 *
 * The initial copy makes every table it describes a guarded replica (with
 * or without rows, see apply.c).  A table the register starts sending
 * later is applied only into a table the DBA declared for the register:
 * one named with add_replicated_table(), or one in a schema named in
 * add_register(..., schemas => ...).  The schemas also limit what the
 * register sends (an output plugin option and a copy_frames() argument) and
 * what the worker applies.
 *
 * IDENTIFICATION
 *		  src/embassy/replicated_set.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "data_embassy.h"
#include "embassy/catalog.h"
#include "embassy/replicated_set.h"
#include "privilege.h"
#include "schema_list.h"

PG_FUNCTION_INFO_V1(data_embassy_add_replicated_table);

/*
 * de_register_schemas_arg
 *		add_register's schemas argument: NULL is every schema; otherwise a
 *		list of schemas that exist here (the register's tables are applied
 *		into tables of the same schema and name) and that can hold
 *		replicated tables.
 */
List *
de_register_schemas_arg(FunctionCallInfo fcinfo, int argno)
{
	List	   *schemas;
	ListCell   *lc;

	if (PG_ARGISNULL(argno))
		return NIL;
	schemas = de_schema_list_from_array(PG_GETARG_ARRAYTYPE_P(argno),
										"schemas");
	foreach(lc, schemas)
	{
		const char *name = lfirst(lc);
		Oid			nspid = get_namespace_oid(name, true);

		if (!OidIsValid(nspid))
			ereport(ERROR,
					errcode(ERRCODE_UNDEFINED_SCHEMA),
					errmsg("schema \"%s\" does not exist", name),
					errhint("Create the schema and its tables here first: the register's tables are replicated into tables of the same schema and name."));
		if (IsCatalogNamespace(nspid) || IsToastNamespace(nspid) ||
			isAnyTempNamespace(nspid) || nspid == de_schema_oid(true) ||
			strcmp(name, "information_schema") == 0)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("schema \"%s\" cannot be replicated", name),
					errdetail("System schemas, temporary schemas and the schema of data_embassy are never replicated."));
	}
	return schemas;
}

/*
 * data_embassy_add_replicated_table
 *		add_replicated_table(register text, relation regclass): the table
 *		here is the replica of the register's table of the same schema and
 *		name, which the register began to send after its initial copy.  It
 *		is guarded from the commit on; its rows, if any, are kept (the DBA
 *		vouches for them), and the worker binds it to the register's table
 *		at the first change it applies.
 */
Datum
data_embassy_add_replicated_table(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			relid;
	DeRegister *reg;
	HeapTuple	tup;
	Form_pg_class form;
	char	   *nspname;
	char	   *relname;
	char	   *owner;
	Oid			remote_relid;
	List	   *schemas;

	de_require_preloaded();
	de_check_admin_call("data_embassy.add_replicated_table()");

	name = de_name_arg(fcinfo, 0, DE_NAME_REGISTER);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("relation must not be null"));
	relid = PG_GETARG_OID(1);

	reg = de_catalog_get_register(name, DE_LOCK_NO_KEY_UPDATE, false);
	if (reg->phase == DE_PHASE_PROMOTED)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" has been promoted", name),
				errdetail("A promoted register is not replicated any more; there is nothing to declare."));

	/* the table stays as it is until commit */
	LockRelationOid(relid, AccessShareLock);
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_TABLE),
				errmsg("relation with OID %u does not exist", relid));
	form = (Form_pg_class) GETSTRUCT(tup);
	nspname = get_namespace_name(form->relnamespace);
	relname = pstrdup(NameStr(form->relname));

	if (form->relkind != RELKIND_RELATION &&
		form->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				errcode(ERRCODE_WRONG_OBJECT_TYPE),
				errmsg("\"%s.%s\" is not a table", nspname, relname),
				errdetail("Only tables and partitioned tables replicate a register's tables."));
	if (form->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				errcode(ERRCODE_WRONG_OBJECT_TYPE),
				errmsg("cannot use temporary table \"%s\" as a replication target",
					   relname));
	if (IsCatalogRelationOid(relid) ||
		form->relnamespace == de_schema_oid(true))
		ereport(ERROR,
				errcode(ERRCODE_WRONG_OBJECT_TYPE),
				errmsg("cannot use table \"%s.%s\" as a replication target",
					   nspname, relname),
				errdetail("System catalogs and the tables of data_embassy are never replicated."));
	ReleaseSysCache(tup);

	schemas = de_catalog_register_schemas(name);
	if (!de_schema_list_contains(schemas, nspname))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("schema \"%s\" is not replicated from register \"%s\"",
					   nspname, name),
				errdetail("The register replicates only schemas %s here.",
						  de_schema_list_to_option(schemas)));

	owner = de_catalog_relation_register(relid, &remote_relid);
	if (owner != NULL && strcmp(owner, name) != 0)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("table \"%s.%s\" is already replicated from register \"%s\"",
					   nspname, relname, owner),
				errdetail("A table can be the replica of one register only."));
	if (owner != NULL)
	{
		ereport(NOTICE,
				errmsg("table \"%s.%s\" is already a replica of register \"%s\"",
					   nspname, relname, name));
		PG_RETURN_VOID();
	}

	de_catalog_add_relation(name, relid, InvalidOid);
	PG_RETURN_VOID();
}
