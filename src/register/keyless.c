/*-------------------------------------------------------------------------
 *
 * keyless.c
 *		  Replicated tables without a replica identity, at the register.
 *
 * An UPDATE or DELETE of a replicated table is applied at the embassy by
 * locating the old row through the table's replica identity: its primary
 * key by default, another unique index, or the whole row with REPLICA
 * IDENTITY FULL.  A table with none of them (REPLICA IDENTITY DEFAULT
 * without a primary key, NOTHING, or an identity index that is gone) sends
 * changes the embassy cannot locate.  This file
 *
 *	- refuses such UPDATEs and DELETEs at the register, the way core refuses
 *	  them for a table in a publication (CheckCmdReplicaIdentity), from an
 *	  executor hook installed whenever the library is loaded in a backend
 *	  (shared_preload_libraries or session_preload_libraries);
 *	- lists such tables (view data_embassy.keyless_tables) and warns about
 *	  them when an embassy is pinned;
 *	- on request, gives new tables without a primary key REPLICA IDENTITY
 *	  FULL from an event trigger (set_keyless_identity_full()).
 *
 * Which tables are replicated is decided by de_class_is_replicated()
 * (plugin.c), and which can be located by de_rel_has_identity(), here;
 * the plugin uses both too.
 *
 * Cost of the hook: a statement that modifies nothing returns after one
 * comparison.  A modifying statement reads a per-backend flag "embassies
 * are pinned in this database".  The flag is computed once (a scan of the
 * tiny embassy_pins table) and forgotten on a relcache invalidation of
 * that table, which a statement trigger on it sends for every write
 * (data_embassy_pins_changed), or on a change of any schema (the extension
 * created or dropped).
 *
 * IDENTIFICATION
 *		  src/register/keyless.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/pg_class.h"
#include "catalog/pg_event_trigger.h"
#include "catalog/pg_inherits.h"
#include "commands/event_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "nodes/plannodes.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "data_embassy.h"
#include "privilege.h"
#include "register/keyless.h"
#include "register/plugin.h"

PG_FUNCTION_INFO_V1(data_embassy_keyless_tables);
PG_FUNCTION_INFO_V1(data_embassy_pins_changed);
PG_FUNCTION_INFO_V1(data_embassy_keyless_identity_full);
PG_FUNCTION_INFO_V1(data_embassy_set_keyless_identity_full);

#define DE_PINS_TABLE			"embassy_pins"
#define DE_KEYLESS_EVTNAME		"data_embassy_keyless_identity_full"

/* Tables the add_embassy() warning names before "and N more". */
#define DE_KEYLESS_WARN_NAMES	5

/* What the per-backend flag knows about the current database. */
typedef enum DePinsState
{
	DE_PINS_UNKNOWN,			/* look again */
	DE_PINS_NONE,				/* no extension, or no embassy pinned */
	DE_PINS_SOME				/* at least one embassy pinned */
} DePinsState;

/* One replicated table whose rows cannot be located remotely. */
typedef struct DeKeyless
{
	char	   *schema;
	char	   *table;
	const char *identity;		/* "default", "nothing" or "index" */
	const char *reason;
} DeKeyless;

static DePinsState de_pins_state = DE_PINS_UNKNOWN;
static Oid	de_pins_relid = InvalidOid; /* embassy_pins, when known */
static Oid	de_pins_nsp = InvalidOid;	/* the extension's schema */
static bool de_keyless_installed = false;

static ExecutorStart_hook_type prev_ExecutorStart = NULL;

/*
 * de_rel_has_identity
 *		UPDATE and DELETE of this relation can be located remotely.
 */
bool
de_rel_has_identity(Relation rel)
{
	return rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL ||
		OidIsValid(RelationGetReplicaIndex(rel));
}

/*
 * de_rel_identity_problem
 *		Why rows of a relation without an identity cannot be located, or
 *		NULL when they can.  *identity names its REPLICA IDENTITY setting.
 */
static const char *
de_rel_identity_problem(Relation rel, const char **identity)
{
	if (de_rel_has_identity(rel))
		return NULL;

	switch (rel->rd_rel->relreplident)
	{
		case REPLICA_IDENTITY_NOTHING:
			*identity = "nothing";
			return "replica identity is NOTHING";
		case REPLICA_IDENTITY_INDEX:
			*identity = "index";
			return "replica identity index is missing or not usable";
		default:
			*identity = "default";
			return "no usable primary key";
	}
}

/* ---------- are embassies pinned here? ---------- */

static void
de_pins_relcache_callback(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == de_pins_relid)
		de_pins_state = DE_PINS_UNKNOWN;
}

static void
de_pins_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	de_pins_state = DE_PINS_UNKNOWN;
}

/*
 * de_pins_exist
 *		Are embassies pinned in the current database?  Cached, see the
 *		file header; the caller is in a transaction.
 */
static bool
de_pins_exist(void)
{
	if (de_pins_state == DE_PINS_UNKNOWN)
	{
		Oid			nsp = de_schema_oid(true);
		Oid			relid = InvalidOid;
		DePinsState state = DE_PINS_NONE;

		if (OidIsValid(nsp))
			relid = get_relname_relid(DE_PINS_TABLE, nsp);
		if (OidIsValid(relid))
		{
			Relation	rel = table_open(relid, AccessShareLock);
			SysScanDesc scan;

			/* the catalog snapshot of a user table is always fresh */
			scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
			if (HeapTupleIsValid(systable_getnext(scan)))
				state = DE_PINS_SOME;
			systable_endscan(scan);
			table_close(rel, AccessShareLock);
		}

		/*
		 * Invalidations processed while opening the table came from
		 * transactions the scan's fresh snapshot sees; later ones reset the
		 * flag.
		 */
		de_pins_relid = relid;
		de_pins_nsp = nsp;
		de_pins_state = state;
	}
	return de_pins_state == DE_PINS_SOME;
}

/*
 * data_embassy_pins_changed
 *		Statement trigger on embassy_pins: every backend forgets whether
 *		embassies are pinned when the writing transaction commits.
 */
Datum
data_embassy_pins_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				errmsg("function \"%s\" was not called by the trigger manager",
					   "data_embassy.pins_changed"));

	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/* ---------- the executor hook ---------- */

/* Refuse the command unless the relation's rows can be located remotely. */
static void
de_keyless_check_rel(Relation rel, bool updates, bool deletes)
{
	if (!de_class_is_replicated(RelationGetRelid(rel), rel->rd_rel,
								de_pins_nsp))
		return;
	if (de_rel_has_identity(rel))
		return;

	/* as core's CheckCmdReplicaIdentity() for a published table */
	if (updates)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("cannot update table \"%s\" because it does not have a replica identity and publishes updates",
					   RelationGetRelationName(rel)),
				errdetail("The table is replicated to the data embassies pinned in this database, which could not locate the row."),
				errhint("To enable updating the table, set REPLICA IDENTITY using ALTER TABLE."));
	if (deletes)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("cannot delete from table \"%s\" because it does not have a replica identity and publishes deletes",
					   RelationGetRelationName(rel)),
				errdetail("The table is replicated to the data embassies pinned in this database, which could not locate the row."),
				errhint("To enable deleting from the table, set REPLICA IDENTITY using ALTER TABLE."));
}

/*
 * de_keyless_check_modify
 *		Check the target relations of one ModifyTable node: UPDATE, DELETE,
 *		MERGE with an UPDATE or DELETE action, and INSERT ... ON CONFLICT
 *		DO UPDATE.
 */
static void
de_keyless_check_modify(ModifyTableState *mtstate)
{
	ModifyTable *node = (ModifyTable *) mtstate->ps.plan;
	bool		updates = false;
	bool		deletes = false;
	int			i;

	switch (mtstate->operation)
	{
		case CMD_UPDATE:
			updates = true;
			break;
		case CMD_DELETE:
			deletes = true;
			break;
		case CMD_INSERT:
			updates = node->onConflictAction == ONCONFLICT_UPDATE;
			break;
		case CMD_MERGE:
			{
				ListCell   *lc1;

				foreach(lc1, node->mergeActionLists)
				{
					ListCell   *lc2;

					foreach(lc2, (List *) lfirst(lc1))
					{
						MergeAction *action = lfirst(lc2);

						if (action->commandType == CMD_UPDATE)
							updates = true;
						else if (action->commandType == CMD_DELETE)
							deletes = true;
					}
				}
			}
			break;
		default:
			break;
	}
	if (!updates && !deletes)
		return;

	for (i = 0; i < mtstate->mt_nrels; i++)
	{
		Relation	rel = mtstate->resultRelInfo[i].ri_RelationDesc;

		if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		{
			/*
			 * Tuple routing reaches partitions that are not result relations
			 * yet (INSERT ... ON CONFLICT DO UPDATE): check every partition,
			 * locked as routing would lock it.
			 */
			List	   *children;
			ListCell   *lc;

			children = find_all_inheritors(RelationGetRelid(rel),
										   RowExclusiveLock, NULL);
			foreach(lc, children)
			{
				Relation	child = relation_open(lfirst_oid(lc), NoLock);

				de_keyless_check_rel(child, updates, deletes);
				relation_close(child, NoLock);
			}
		}
		else
			de_keyless_check_rel(rel, updates, deletes);
	}
}

/*
 * de_keyless_ExecutorStart
 *		After the executor has opened the target relations of a modifying
 *		statement (triggers' and foreign keys' statements included), refuse
 *		it when it would send changes no embassy could locate.
 */
static void
de_keyless_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);

	if (queryDesc->plannedstmt->resultRelations != NIL &&
		!(eflags & EXEC_FLAG_EXPLAIN_ONLY) &&
		de_pins_exist())
	{
		ListCell   *lc;

		if (queryDesc->planstate != NULL &&
			IsA(queryDesc->planstate, ModifyTableState))
			de_keyless_check_modify((ModifyTableState *) queryDesc->planstate);

		/* data-modifying WITH queries */
		foreach(lc, queryDesc->estate->es_auxmodifytables)
			de_keyless_check_modify((ModifyTableState *) lfirst(lc));
	}
}

/*
 * de_keyless_install
 *		Install the hook and the invalidation callbacks, once per process.
 */
void
de_keyless_install(void)
{
	if (de_keyless_installed)
		return;
	de_keyless_installed = true;

	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = de_keyless_ExecutorStart;
	CacheRegisterRelcacheCallback(de_pins_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, de_pins_syscache_callback,
								  (Datum) 0);
}

/* ---------- the list ---------- */

static int
de_keyless_cmp(const ListCell *a, const ListCell *b)
{
	const DeKeyless *ka = lfirst(a);
	const DeKeyless *kb = lfirst(b);
	int			c = strcmp(ka->schema, kb->schema);

	return c != 0 ? c : strcmp(ka->table, kb->table);
}

/*
 * de_keyless_collect
 *		The replicated tables of the current database whose rows cannot be
 *		located remotely, sorted by schema and name.
 *
 * Each candidate is opened (the replica identity index is the relcache's
 * answer) and its lock released at once, so a database with many tables
 * does not fill the lock table.
 */
static List *
de_keyless_collect(void)
{
	Oid			nsp = de_schema_oid(true);
	Relation	classrel;
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *candidates = NIL;
	List	   *result = NIL;
	ListCell   *lc;

	classrel = table_open(RelationRelationId, AccessShareLock);
	scan = systable_beginscan(classrel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_class form = (Form_pg_class) GETSTRUCT(tup);

		if (form->relreplident == REPLICA_IDENTITY_FULL)
			continue;
		if (!de_class_is_replicated(form->oid, form, nsp))
			continue;
		candidates = lappend_oid(candidates, form->oid);
	}
	systable_endscan(scan);
	table_close(classrel, AccessShareLock);

	foreach(lc, candidates)
	{
		Relation	rel = try_relation_open(lfirst_oid(lc), AccessShareLock);
		const char *identity = NULL;
		const char *reason;

		if (rel == NULL)
			continue;			/* dropped meanwhile */
		reason = de_rel_identity_problem(rel, &identity);
		if (reason != NULL)
		{
			DeKeyless  *k = palloc(sizeof(DeKeyless));

			k->schema = get_namespace_name(RelationGetNamespace(rel));
			k->table = pstrdup(RelationGetRelationName(rel));
			k->identity = identity;
			k->reason = reason;
			result = lappend(result, k);
		}
		relation_close(rel, AccessShareLock);
	}
	list_free(candidates);

	list_sort(result, de_keyless_cmp);
	return result;
}

/*
 * data_embassy_keyless_tables
 *		SQL: keyless_tables_list() -> (schema, table, replica_identity,
 *		reason), behind the view data_embassy.keyless_tables.
 */
Datum
data_embassy_keyless_tables(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *tables;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);

	tables = de_keyless_collect();
	foreach(lc, tables)
	{
		DeKeyless  *k = lfirst(lc);
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = DirectFunctionCall1(namein, CStringGetDatum(k->schema));
		values[1] = DirectFunctionCall1(namein, CStringGetDatum(k->table));
		values[2] = CStringGetTextDatum(k->identity);
		values[3] = CStringGetTextDatum(k->reason);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
							 values, nulls);
	}
	return (Datum) 0;
}

/*
 * de_keyless_warn
 *		One WARNING naming the replicated tables without a replica identity:
 *		how many, and the first few.
 */
void
de_keyless_warn(void)
{
	List	   *tables = de_keyless_collect();
	StringInfoData names;
	int			n = list_length(tables);
	int			i = 0;
	ListCell   *lc;

	if (n == 0)
		return;

	/* the first few names, comma-separated; the count of the rest apart */
	initStringInfo(&names);
	foreach(lc, tables)
	{
		DeKeyless  *k = lfirst(lc);

		if (i == DE_KEYLESS_WARN_NAMES)
			break;
		if (i > 0)
			appendStringInfoString(&names, ", ");
		appendStringInfoString(&names,
							   quote_qualified_identifier(k->schema, k->table));
		i++;
	}

	ereport(WARNING,
			errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			errmsg_plural("%d replicated table has no replica identity",
						  "%d replicated tables have no replica identity",
						  n, n),
			(i == n) ?
			errdetail("An embassy could not locate their rows to apply an UPDATE or DELETE: %s.",
					  names.data) :
			errdetail_plural("An embassy could not locate their rows to apply an UPDATE or DELETE: %s and %d more.",
							 "An embassy could not locate their rows to apply an UPDATE or DELETE: %s and %d more.",
							 n - i, names.data, n - i),
			errhint("Add a primary key or set REPLICA IDENTITY FULL with ALTER TABLE; the view %s lists them all.",
					"data_embassy.keyless_tables"));
}

/* ---------- automatic REPLICA IDENTITY FULL ---------- */

/*
 * data_embassy_keyless_identity_full
 *		Event trigger at ddl_command_end of CREATE TABLE, CREATE TABLE AS,
 *		SELECT INTO and ALTER TABLE: a replicated table left with REPLICA
 *		IDENTITY DEFAULT and no usable primary key gets REPLICA IDENTITY
 *		FULL.
 *
 * It runs as the user whose command fired it, who owns the table (both
 * commands require it), and every name in the SQL it runs is qualified,
 * since that user may be a superuser with any search_path.  Its own ALTER
 * TABLE fires it again, and then finds nothing to do.
 */
Datum
data_embassy_keyless_identity_full(PG_FUNCTION_ARGS)
{
	Oid			nsp;
	List	   *relids = NIL;
	ListCell   *lc;
	uint64		i;
	int			ret;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				errcode(ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED),
				errmsg("function \"%s\" was not called by the event trigger manager",
					   "data_embassy.keyless_identity_full"));

	nsp = de_schema_oid(true);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	ret = SPI_execute("SELECT DISTINCT objid"
					  " FROM pg_catalog.pg_event_trigger_ddl_commands()"
					  " WHERE classid OPERATOR(pg_catalog.=)"
					  " 'pg_catalog.pg_class'::pg_catalog.regclass"
					  " AND objsubid OPERATOR(pg_catalog.=) 0",
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i],
									  SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			relids = lappend_oid(relids, DatumGetObjectId(d));
	}

	foreach(lc, relids)
	{
		Relation	rel = try_relation_open(lfirst_oid(lc), AccessShareLock);
		char	   *qualified;
		char	   *sql;

		if (rel == NULL)
			continue;
		if (!de_class_is_replicated(RelationGetRelid(rel), rel->rd_rel, nsp) ||
			rel->rd_rel->relreplident != REPLICA_IDENTITY_DEFAULT ||
			de_rel_has_identity(rel))
		{
			relation_close(rel, AccessShareLock);
			continue;
		}

		qualified = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
											   RelationGetRelationName(rel));
		relation_close(rel, NoLock);

		sql = psprintf("ALTER TABLE %s REPLICA IDENTITY FULL", qualified);
		ret = SPI_execute(sql, false, 0);
		if (ret != SPI_OK_UTILITY)
			elog(ERROR, "SPI_execute failed for \"%s\": %s",
				 sql, SPI_result_code_string(ret));
		ereport(NOTICE,
				errmsg("table %s has no primary key: its replica identity is now FULL",
					   qualified),
				errdetail("Automatic REPLICA IDENTITY FULL was turned on with %s.",
						  "data_embassy.set_keyless_identity_full()"));
	}

	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * data_embassy_set_keyless_identity_full
 *		SQL: set_keyless_identity_full(enable boolean).  Enable or disable
 *		the event trigger, which the extension script creates disabled.
 *
 * Only the owner of an event trigger (a superuser) may alter it, so once
 * de_check_admin_call() has passed the statement runs as that owner, as pins.c
 * writes embassy_pins as its owner.
 */
Datum
data_embassy_set_keyless_identity_full(PG_FUNCTION_ARGS)
{
	bool		enable;
	Oid			evtoid;
	HeapTuple	tup;
	Oid			owner;
	Oid			save_userid;
	int			save_sec_context;
	int			ret;

	de_check_admin_call("data_embassy.set_keyless_identity_full()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("argument \"%s\" must not be null", "enable"));
	enable = PG_GETARG_BOOL(0);

	(void) de_schema_oid(false);
	evtoid = get_event_trigger_oid(DE_KEYLESS_EVTNAME, true);
	if (!OidIsValid(evtoid))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("event trigger \"%s\" does not exist", DE_KEYLESS_EVTNAME),
				errhint("Recreate the extension \"%s\".", DE_EXTENSION_NAME));

	tup = SearchSysCache1(EVENTTRIGGEROID, ObjectIdGetDatum(evtoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for event trigger %u", evtoid);
	owner = ((Form_pg_event_trigger) GETSTRUCT(tup))->evtowner;
	ReleaseSysCache(tup);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner,
						   save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute(enable ?
					  "ALTER EVENT TRIGGER " DE_KEYLESS_EVTNAME " ENABLE" :
					  "ALTER EVENT TRIGGER " DE_KEYLESS_EVTNAME " DISABLE",
					  false, 0);
	if (ret != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	SPI_finish();

	SetUserIdAndSecContext(save_userid, save_sec_context);
	PG_RETURN_VOID();
}
