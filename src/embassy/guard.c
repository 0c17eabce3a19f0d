/*-------------------------------------------------------------------------
 *
 * guard.c
 *		  The write guard at the embassy.
 *
 * Tables listed in data_embassy.replicated_relations, and sequences listed
 * in data_embassy.replicated_sequences, belong to a register that has not
 * been promoted: they change only through that register's apply worker.
 * Every other session, superusers included, gets an error on INSERT,
 * UPDATE, DELETE, MERGE, COPY FROM, on TRUNCATE (also when it reaches the
 * table through an inheritance parent or CASCADE), on ALTER TABLE ...
 * ALTER COLUMN ... TYPE ... USING (which rewrites every row with an
 * expression of its own), and on ALTER SEQUENCE of a replicated sequence.
 * Reads are never blocked.  nextval() and setval() of a replicated
 * sequence are not refused: promote() moves every such sequence past both
 * its own value and the register's, so they cannot make promote() hand out
 * a value the register used.
 *
 * Cost: a query that modifies nothing returns from the hook after one
 * comparison.  A modifying query looks its target up in a per-backend hash
 * of guarded tables, loaded on first use and reloaded after a relcache
 * invalidation of the replicated_relations table, which every writer of that
 * table sends (de_guard_invalidate) so all backends see the change at
 * commit.
 *
 * IDENTIFICATION
 *		  src/embassy/guard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/heap.h"
#include "catalog/namespace.h"
#include "catalog/pg_inherits.h"
#include "commands/copy.h"
#include "executor/executor.h"
#include "nodes/parsenodes.h"
#include "parser/parsetree.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "data_embassy.h"
#include "embassy/guard.h"

#define GUARD_TABLE		"replicated_relations"
#define GUARD_SEQUENCES	"replicated_sequences"

/* What a refused command would have done, for the message. */
typedef enum GuardAction
{
	GUARD_INSERT,
	GUARD_UPDATE,
	GUARD_DELETE,
	GUARD_MERGE,
	GUARD_MODIFY,
	GUARD_TRUNCATE,
	GUARD_COPY,
	GUARD_REWRITE,
	GUARD_ALTER_SEQUENCE
} GuardAction;

bool		de_guard_exempt = false;

typedef struct GuardEntry
{
	Oid			relid;			/* hash key */
	char		register_name[NAMEDATALEN];
} GuardEntry;

static HTAB *guard_hash = NULL;
static bool guard_valid = false;
static Oid	guard_table_oid = InvalidOid;

static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

static void guard_ExecutorStart(QueryDesc *queryDesc, int eflags);
static void guard_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
								 bool readOnlyTree,
								 ProcessUtilityContext context,
								 ParamListInfo params,
								 QueryEnvironment *queryEnv,
								 DestReceiver *dest, QueryCompletion *qc);

/*
 * guard_relcache_callback
 *		Forget the guarded set when our table is invalidated (or everything
 *		is, or we do not know our table yet: the extension may just have
 *		been created).
 */
static void
guard_relcache_callback(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || !OidIsValid(guard_table_oid) ||
		relid == guard_table_oid)
		guard_valid = false;
}

/*
 * guard_load_table
 *		Add the rows of one of our tables, whose first two columns are the
 *		register (text) and the relation (oid), to the guarded set.
 */
static void
guard_load_table(Oid tableoid)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;

	rel = table_open(tableoid, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		reg_isnull;
		bool		relid_isnull;
		Datum		reg = heap_getattr(tup, 1, RelationGetDescr(rel),
									   &reg_isnull);
		Datum		relid_datum = heap_getattr(tup, 2, RelationGetDescr(rel),
											   &relid_isnull);
		Oid			relid;
		GuardEntry *entry;
		bool		found;

		/*
		 * Both columns are NOT NULL; should a superuser have changed that, a
		 * row without a register or a relation names nothing to guard.
		 */
		if (reg_isnull || relid_isnull)
			continue;
		relid = DatumGetObjectId(relid_datum);
		entry = hash_search(guard_hash, &relid, HASH_ENTER, &found);
		strlcpy(entry->register_name, TextDatumGetCString(reg), NAMEDATALEN);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

/*
 * guard_load
 *		Read data_embassy.replicated_relations and replicated_sequences into
 *		the backend-local hash.  A database without the extension guards
 *		nothing.
 */
static void
guard_load(void)
{
	HASHCTL		ctl;
	Oid			nsp;
	Oid			seq_table;

	if (guard_hash != NULL)
		hash_destroy(guard_hash);
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(GuardEntry);
	ctl.hcxt = TopMemoryContext;
	guard_hash = hash_create("data_embassy guarded tables", 64, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	guard_table_oid = InvalidOid;

	/* Mark valid first: an invalidation arriving while we read wins. */
	guard_valid = true;

	nsp = de_schema_oid(true);
	if (!OidIsValid(nsp))
		return;
	guard_table_oid = get_relname_relid(GUARD_TABLE, nsp);
	if (!OidIsValid(guard_table_oid))
		return;
	guard_load_table(guard_table_oid);

	seq_table = get_relname_relid(GUARD_SEQUENCES, nsp);
	if (OidIsValid(seq_table))
		guard_load_table(seq_table);
}

/*
 * guard_lookup
 *		The register a table replicates, or NULL.  A partitioned table is
 *		guarded when any of its partitions is.
 */
static const char *
guard_lookup(Oid relid)
{
	GuardEntry *entry;

	if (!guard_valid)
		guard_load();
	if (hash_get_num_entries(guard_hash) == 0)
		return NULL;

	entry = hash_search(guard_hash, &relid, HASH_FIND, NULL);
	if (entry)
		return entry->register_name;

	if (get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE)
	{
		List	   *children = find_all_inheritors(relid, NoLock, NULL);
		ListCell   *lc;

		foreach(lc, children)
		{
			entry = hash_search(guard_hash, &lfirst_oid(lc), HASH_FIND, NULL);
			if (entry)
				return entry->register_name;
		}
	}
	return NULL;
}

/*
 * guard_check
 *		Refuse action on relid if it is a replica.
 */
static void
guard_check(Oid relid, GuardAction action)
{
	const char *reg;
	char	   *name;

	if (!OidIsValid(relid))
		return;
	reg = guard_lookup(relid);
	if (reg == NULL)
		return;

	name = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
	ereport(ERROR,
			errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
			action == GUARD_INSERT ?
			errmsg("cannot insert into table \"%s\"", name) :
			action == GUARD_UPDATE ?
			errmsg("cannot update table \"%s\"", name) :
			action == GUARD_DELETE ?
			errmsg("cannot delete from table \"%s\"", name) :
			action == GUARD_MERGE ?
			errmsg("cannot merge into table \"%s\"", name) :
			action == GUARD_TRUNCATE ?
			errmsg("cannot truncate table \"%s\"", name) :
			action == GUARD_COPY ?
			errmsg("cannot copy into table \"%s\"", name) :
			action == GUARD_REWRITE ?
			errmsg("cannot rewrite the rows of table \"%s\"", name) :
			action == GUARD_ALTER_SEQUENCE ?
			errmsg("cannot alter sequence \"%s\"", name) :
			errmsg("cannot modify table \"%s\"", name),
			action == GUARD_ALTER_SEQUENCE ?
			errdetail("The sequence is a replica of register \"%s\" and changes only through its apply worker.",
					  reg) :
			errdetail("The table is a replica of register \"%s\" and changes only through its apply worker.",
					  reg),
			errhint("To make the embassy's copy writable, promote the register: SELECT data_embassy.promote('%s');",
					reg));
}

static GuardAction
guard_action(CmdType op)
{
	switch (op)
	{
		case CMD_INSERT:
			return GUARD_INSERT;
		case CMD_UPDATE:
			return GUARD_UPDATE;
		case CMD_DELETE:
			return GUARD_DELETE;
		case CMD_MERGE:
			return GUARD_MERGE;
		default:
			return GUARD_MODIFY;
	}
}

/*
 * guard_check_truncate
 *		TRUNCATE empties more than it names: the children of a table named
 *		without ONLY, and with CASCADE every table that references one
 *		emptied, transitively (as ExecuteTruncate expands it).
 */
static void
guard_check_truncate(TruncateStmt *stmt)
{
	List	   *relids = NIL;
	ListCell   *lc;

	foreach(lc, stmt->relations)
	{
		RangeVar   *rv = lfirst_node(RangeVar, lc);
		Oid			relid = RangeVarGetRelid(rv, NoLock, true);

		if (!OidIsValid(relid))
			continue;
		if (rv->inh && has_subclass(relid))
			relids = list_concat_unique_oid(relids,
											find_all_inheritors(relid, NoLock,
																NULL));
		else
			relids = list_append_unique_oid(relids, relid);
	}

	if (stmt->behavior == DROP_CASCADE)
	{
		for (;;)
		{
			List	   *more = heap_truncate_find_FKs(relids);
			int			before = list_length(relids);

			relids = list_concat_unique_oid(relids, more);
			if (list_length(relids) == before)
				break;
		}
	}

	foreach(lc, relids)
		guard_check(lfirst_oid(lc), GUARD_TRUNCATE);
}

/*
 * guard_check_alter_table
 *		ALTER COLUMN ... TYPE ... USING rewrites every row with an expression
 *		of its own; without USING the conversion is the type's cast, as it is
 *		at the register when its schema changes, and is allowed.
 */
static void
guard_check_alter_table(AlterTableStmt *stmt)
{
	Oid			relid;
	ListCell   *lc;
	bool		rewrites = false;

	relid = RangeVarGetRelid(stmt->relation, NoLock, true);
	if (!OidIsValid(relid))
		return;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		if (cmd->subtype == AT_AlterColumnType &&
			((ColumnDef *) cmd->def)->raw_default != NULL)
			rewrites = true;
	}
	if (!rewrites)
		return;

	if (stmt->relation->inh && has_subclass(relid))
	{
		foreach(lc, find_all_inheritors(relid, NoLock, NULL))
			guard_check(lfirst_oid(lc), GUARD_REWRITE);
	}
	else
		guard_check(relid, GUARD_REWRITE);
}

static void
guard_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	PlannedStmt *stmt = queryDesc->plannedstmt;

	if (stmt->resultRelations != NIL && !de_guard_exempt &&
		!(eflags & EXEC_FLAG_EXPLAIN_ONLY))
	{
		ListCell   *lc;

		foreach(lc, stmt->resultRelations)
		{
			RangeTblEntry *rte = rt_fetch(lfirst_int(lc), stmt->rtable);

			guard_check(rte->relid, guard_action(queryDesc->operation));
		}
	}

	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

static void
guard_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					 bool readOnlyTree, ProcessUtilityContext context,
					 ParamListInfo params, QueryEnvironment *queryEnv,
					 DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	if (!de_guard_exempt)
	{
		if (IsA(parsetree, TruncateStmt))
			guard_check_truncate((TruncateStmt *) parsetree);
		else if (IsA(parsetree, CopyStmt))
		{
			CopyStmt   *copy = (CopyStmt *) parsetree;

			if (copy->is_from && copy->relation)
				guard_check(RangeVarGetRelid(copy->relation, NoLock, true),
							GUARD_COPY);
		}
		else if (IsA(parsetree, AlterTableStmt))
			guard_check_alter_table((AlterTableStmt *) parsetree);
		else if (IsA(parsetree, AlterSeqStmt))
			guard_check(RangeVarGetRelid(((AlterSeqStmt *) parsetree)->sequence,
										 NoLock, true),
						GUARD_ALTER_SEQUENCE);
	}

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

void
de_guard_install(void)
{
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = guard_ExecutorStart;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = guard_ProcessUtility;
	CacheRegisterRelcacheCallback(guard_relcache_callback, (Datum) 0);
}

void
de_guard_invalidate(void)
{
	Oid			nsp = de_schema_oid(false);
	Oid			relid = get_relname_relid(GUARD_TABLE, nsp);

	if (OidIsValid(relid))
		CacheInvalidateRelcacheByRelid(relid);
}
