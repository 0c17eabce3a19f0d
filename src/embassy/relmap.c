/*-------------------------------------------------------------------------
 *
 * relmap.c
 *		  The relation map of one register at the embassy: the register's
 *		  relations, by their OID there, and the local tables they map to.
 *
 * RELATION records fill a hash keyed by the register's relation OID with
 * the remote description.  The local side (table OID, column map, type
 * input and receive functions, replica identity, NOT NULL columns, how
 * rows compare and are named in messages) is resolved by schema and table
 * name at the first change of the relation in a local transaction, and
 * kept until a relcache invalidation of the local table or a new RELATION
 * record, as core's logicalrep_rel_open() does.  The contract is in
 * relmap.h.
 *
 * IDENTIFICATION
 *		  src/embassy/relmap.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/table.h"
#include "access/transam.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "mb/pg_wchar.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "data_embassy.h"
#include "embassy/relmap.h"

/* At most this many bytes of a value, and values, name a row in messages. */
#define RELMAP_DESCRIBE_VALUE_BYTES	64
#define RELMAP_DESCRIBE_MAX_COLUMNS	16

struct DeRelMap
{
	MemoryContext cxt;			/* the map and its entries */
	char	   *register_name;	/* for messages */
	HTAB	   *hash;			/* DeRelMapEntry by remote OID */
	struct DeRelMap *next;		/* all maps of this process */
};

static DeRelMap *relmaps = NULL;
static bool relmap_callback_registered = false;

static HTAB *relmap_hash_create(DeRelMap *map);
static void relmap_invalidate(Datum arg, Oid relid);
static void relmap_check_target(DeRelMapEntry *entry, Relation rel);
static void relmap_map_local(DeRelMap *map, DeRelMapEntry *entry,
							 Relation rel);

/*
 * de_relmap_create
 *		An empty map, kept up to date by the invalidation callback.
 */
DeRelMap *
de_relmap_create(MemoryContext mcxt, const char *register_name)
{
	DeRelMap   *map;

	map = MemoryContextAllocZero(mcxt, sizeof(DeRelMap));
	map->cxt = mcxt;
	map->register_name = MemoryContextStrdup(mcxt, register_name);
	map->hash = relmap_hash_create(map);

	if (!relmap_callback_registered)
	{
		CacheRegisterRelcacheCallback(relmap_invalidate, (Datum) 0);
		relmap_callback_registered = true;
	}
	map->next = relmaps;
	relmaps = map;

	return map;
}

/*
 * relmap_hash_create
 *		An empty hash of entries.
 */
static HTAB *
relmap_hash_create(DeRelMap *map)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(DeRelMapEntry);
	ctl.hcxt = map->cxt;
	return hash_create("data_embassy relation map", 128, &ctl,
					   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * relmap_invalidate
 *		A local table changed: map it again at its next use.
 */
static void
relmap_invalidate(Datum arg, Oid relid)
{
	DeRelMap   *map;

	for (map = relmaps; map != NULL; map = map->next)
	{
		HASH_SEQ_STATUS status;
		DeRelMapEntry *entry;

		if (map->hash == NULL)
			continue;
		hash_seq_init(&status, map->hash);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			if (relid == InvalidOid || entry->localrelid == relid)
				entry->local_valid = false;
		}
	}
}

/*
 * de_relmap_reset
 *		Forget every entry.
 */
void
de_relmap_reset(DeRelMap *map)
{
	HASH_SEQ_STATUS status;
	DeRelMapEntry *entry;
	HTAB	   *old = map->hash;

	/* the invalidation callback must not walk a hash being destroyed */
	map->hash = NULL;
	hash_seq_init(&status, old);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		Assert(entry->state == NULL);
		MemoryContextDelete(entry->cxt);
	}
	hash_destroy(old);
	map->hash = relmap_hash_create(map);
}

/*
 * de_relmap_find
 *		The entry of remoteid, or NULL.
 */
DeRelMapEntry *
de_relmap_find(DeRelMap *map, Oid remoteid)
{
	return hash_search(map->hash, &remoteid, HASH_FIND, NULL);
}

/*
 * de_relmap_get
 *		The entry a change record refers to.
 */
DeRelMapEntry *
de_relmap_get(DeRelMap *map, Oid remoteid)
{
	DeRelMapEntry *entry;

	entry = hash_search(map->hash, &remoteid, HASH_FIND, NULL);
	if (entry == NULL)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("change for relation %u of register \"%s\" without a preceding RELATION record",
					   remoteid, map->register_name));
	return entry;
}

/*
 * de_relmap_update
 *		Remember the register's description of a relation.
 */
DeRelMapEntry *
de_relmap_update(DeRelMap *map, DeRecord *rec)
{
	DeRelMapEntry *entry;
	bool		found;
	MemoryContext oldcxt;
	int			i;

	entry = hash_search(map->hash, &rec->relid, HASH_ENTER, &found);
	if (found)
	{
		/* The description changes: rows from now on follow the new one. */
		Assert(entry->state == NULL);
		MemoryContextReset(entry->cxt);
	}
	else
	{
		entry->cxt = AllocSetContextCreate(map->cxt,
										   "data_embassy apply relation",
										   ALLOCSET_SMALL_SIZES);
		entry->state = NULL;
	}

	oldcxt = MemoryContextSwitchTo(entry->cxt);
	entry->nspname = pstrdup(rec->nspname);
	entry->relname = pstrdup(rec->relname);
	entry->replident = rec->replident;
	entry->natts = rec->natts;
	entry->atts = palloc0(sizeof(DeAttribute) * Max(rec->natts, 1));
	for (i = 0; i < rec->natts; i++)
	{
		entry->atts[i] = rec->atts[i];
		entry->atts[i].name = pstrdup(rec->atts[i].name);
		entry->atts[i].typname = pstrdup(rec->atts[i].typname);
	}
	MemoryContextSwitchTo(oldcxt);

	entry->local_valid = false;
	entry->localrelid = InvalidOid;
	entry->map_cxt = NULL;		/* deleted with entry->cxt's children */
	entry->cols = NULL;
	entry->attrmap = NULL;
	entry->local_natts = 0;
	entry->updatable = false;
	entry->nnotnull = 0;
	entry->notnull = NULL;
	entry->nkeyatts = 0;
	entry->keyatts = NULL;
	entry->keyout = NULL;
	entry->rowcmp = NULL;

	return entry;
}

/*
 * de_relmap_open_local
 *		Open, check and map the local table of an entry.
 */
Relation
de_relmap_open_local(DeRelMap *map, DeRelMapEntry *entry, Oid relid)
{
	Relation	rel = table_open(relid, NoLock);

	relmap_check_target(entry, rel);
	if (!entry->local_valid)
		relmap_map_local(map, entry, rel);
	return rel;
}

/*
 * de_relmap_forget_states
 *		The local transaction is over: no entry has a state any more.
 */
void
de_relmap_forget_states(DeRelMap *map)
{
	HASH_SEQ_STATUS status;
	DeRelMapEntry *entry;

	hash_seq_init(&status, map->hash);
	while ((entry = hash_seq_search(&status)) != NULL)
		entry->state = NULL;
}

/*
 * de_relmap_identity_index
 *		The index UPDATE and DELETE search by: the replica identity index,
 *		else the primary key, else none (sequential scan).
 */
Oid
de_relmap_identity_index(Relation rel)
{
	Oid			idxoid = RelationGetReplicaIndex(rel);

	if (!OidIsValid(idxoid))
		idxoid = RelationGetPrimaryKeyIndex(rel);
	return idxoid;
}

/*
 * de_relmap_not_updatable
 *		Rows of this table cannot be found for UPDATE and DELETE: the same
 *		errors as core's check_relation_updatable().
 */
void
de_relmap_not_updatable(DeRelMapEntry *entry, Relation rel)
{
	if (OidIsValid(de_relmap_identity_index(rel)))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register did not send replica identity column expected by replication target table \"%s.%s\"",
					   entry->nspname, entry->relname));
	ereport(ERROR,
			errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			errmsg("replication target table \"%s.%s\" has neither REPLICA IDENTITY index nor PRIMARY KEY and the register's table does not have REPLICA IDENTITY FULL",
				   entry->nspname, entry->relname));
}

/*
 * de_relmap_rowcmp
 *		How rows of the table compare, made at the first use.
 */
DeRowCompare *
de_relmap_rowcmp(DeRelMapEntry *entry, Relation rel)
{
	/* the comparison is made when the table is mapped without index */
	if (entry->rowcmp == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(entry->map_cxt);

		entry->rowcmp = de_rowcmp_create(RelationGetDescr(rel));
		MemoryContextSwitchTo(oldcxt);
	}
	return entry->rowcmp;
}

/*
 * de_relmap_lock_local
 *		Find and lock the local table of the same schema and name.
 */
Oid
de_relmap_lock_local(DeRelMapEntry *entry, LOCKMODE lockmode)
{
	Oid			relid;

	relid = RangeVarGetRelid(makeRangeVar(entry->nspname, entry->relname, -1),
							 lockmode, true);
	if (!OidIsValid(relid))
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_TABLE),
				errmsg("replication target table \"%s.%s\" does not exist",
					   entry->nspname, entry->relname),
				errhint("Create the table at the embassy with the same schema, name and columns as at the register."));
	if (relid != entry->localrelid)
		entry->local_valid = false;
	return relid;
}

/*
 * relmap_check_target
 *		A replication target must be a user table (or partitioned table),
 *		never a system catalog or one of data_embassy's own tables.
 */
static void
relmap_check_target(DeRelMapEntry *entry, Relation rel)
{
	CheckSubscriptionRelkind(rel->rd_rel->relkind,
							 entry->nspname, entry->relname);
	if (IsCatalogRelation(rel) ||
		RelationGetNamespace(rel) == de_schema_oid(true))
		ereport(ERROR,
				errcode(ERRCODE_WRONG_OBJECT_TYPE),
				errmsg("cannot use table \"%s.%s\" as a replication target",
					   entry->nspname, entry->relname),
				errdetail("System catalogs and the tables of data_embassy are never replicated."));
}

/*
 * relmap_map_local
 *		Map the remote columns onto the local table's by name.
 */
static void
relmap_map_local(DeRelMap *map, DeRelMapEntry *entry, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext oldcxt;
	Bitmapset  *idkey;
	int			i;

	/* An invalidation arriving while we map makes us map again. */
	entry->local_valid = true;
	entry->localrelid = RelationGetRelid(rel);

	if (entry->map_cxt == NULL)
		entry->map_cxt = AllocSetContextCreate(entry->cxt,
											   "data_embassy apply column map",
											   ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(entry->map_cxt);
	entry->nkeyatts = 0;
	entry->nnotnull = 0;
	oldcxt = MemoryContextSwitchTo(entry->map_cxt);

	entry->local_natts = desc->natts;
	entry->attrmap = palloc(sizeof(int) * Max(desc->natts, 1));
	for (i = 0; i < desc->natts; i++)
		entry->attrmap[i] = -1;
	entry->cols = palloc0(sizeof(DeRelMapColumn) * Max(entry->natts, 1));

	for (i = 0; i < entry->natts; i++)
	{
		DeAttribute *ratt = &entry->atts[i];
		DeRelMapColumn *col = &entry->cols[i];
		Form_pg_attribute att = NULL;
		int			j;
		int16		typlen;
		bool		typbyval;
		char		typalign;
		char		typdelim;
		Oid			ioparam;
		Oid			func;

		for (j = 0; j < desc->natts; j++)
		{
			Form_pg_attribute a = TupleDescAttr(desc, j);

			if (!a->attisdropped && strcmp(NameStr(a->attname), ratt->name) == 0)
			{
				att = a;
				break;
			}
		}
		if (att == NULL)
			ereport(ERROR,
					errcode(ERRCODE_UNDEFINED_COLUMN),
					errmsg("replication target table \"%s.%s\" has no column \"%s\"",
						   entry->nspname, entry->relname, ratt->name),
					errhint("The register's table has this column; add it at the embassy."));

		/*
		 * A generated column here takes the value the register sent, which is
		 * what the register stored (see apply.c's apply_insert_row()).
		 */
		if (entry->attrmap[j] >= 0)
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("register \"%s\" sent column \"%s\" of table \"%s.%s\" twice",
						   map->register_name, ratt->name,
						   entry->nspname, entry->relname));

		/*
		 * A built-in type means the same on both sides; a different one here
		 * would read the bytes wrongly.  A local domain over the register's
		 * type accepts its values (and checks its constraints).  Types made
		 * by users have OIDs that differ between clusters and are matched by
		 * the column name alone.
		 */
		if (ratt->typoid < FirstNormalObjectId &&
			ratt->typoid != att->atttypid &&
			ratt->typoid != getBaseType(att->atttypid))
			ereport(ERROR,
					errcode(ERRCODE_DATATYPE_MISMATCH),
					errmsg("column \"%s\" of replication target table \"%s.%s\" has type %s, but the register sends type %s",
						   ratt->name, entry->nspname, entry->relname,
						   format_type_be(att->atttypid), ratt->typname));

		entry->attrmap[j] = i;
		col->localatt = j;
		col->typid = att->atttypid;
		col->typmod = att->atttypmod;

		get_type_io_data(att->atttypid, IOFunc_input, &typlen, &typbyval,
						 &typalign, &typdelim, &ioparam, &func);
		col->typioparam = ioparam;
		fmgr_info_cxt(func, &col->infunc, entry->map_cxt);

		get_type_io_data(att->atttypid, IOFunc_receive, &typlen, &typbyval,
						 &typalign, &typdelim, &ioparam, &func);
		if (OidIsValid(func))
			fmgr_info_cxt(func, &col->recvfunc, entry->map_cxt);
		else
			col->recvfunc.fn_oid = InvalidOid;
	}

	/*
	 * UPDATE and DELETE find rows by the local replica identity index or
	 * primary key, whose columns the register must send as key columns, or by
	 * the whole row when the register sends it (REPLICA IDENTITY FULL). Like
	 * core, a table without either only refuses UPDATE and DELETE.
	 */
	entry->updatable = true;
	idkey = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);
	if (idkey == NULL)
	{
		idkey = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
		if (idkey == NULL && entry->replident != REPLICA_IDENTITY_FULL)
			entry->updatable = false;
	}
	entry->keyatts = palloc(sizeof(int) * Max(desc->natts, 1));
	entry->nkeyatts = 0;
	i = -1;
	while ((i = bms_next_member(idkey, i)) >= 0)
	{
		int			attnum = i + FirstLowInvalidHeapAttributeNumber;
		int			remote;

		if (!AttrNumberIsForUserDefinedAttr(attnum))
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("replication target table \"%s.%s\" uses system columns in its REPLICA IDENTITY index",
						   entry->nspname, entry->relname));
		entry->keyatts[entry->nkeyatts++] = AttrNumberGetAttrOffset(attnum);
		remote = entry->attrmap[AttrNumberGetAttrOffset(attnum)];
		if (remote < 0 || !entry->atts[remote].is_key)
			entry->updatable = false;
	}

	/*
	 * Without an identity index here, rows are found by comparing the columns
	 * the register sent (REPLICA IDENTITY FULL), which then also name a row
	 * in messages.
	 */
	entry->rowcmp = NULL;
	if (idkey == NULL)
	{
		entry->rowcmp = de_rowcmp_create(desc);
		for (i = 0; i < desc->natts; i++)
			if (entry->attrmap[i] >= 0)
				entry->keyatts[entry->nkeyatts++] = i;
	}
	entry->keyout = palloc(sizeof(FmgrInfo) * Max(entry->nkeyatts, 1));
	for (i = 0; i < entry->nkeyatts; i++)
	{
		Oid			outfn;
		bool		isvarlena;

		getTypeOutputInfo(TupleDescAttr(desc, entry->keyatts[i])->atttypid,
						  &outfn, &isvarlena);
		fmgr_info_cxt(outfn, &entry->keyout[i], entry->map_cxt);
	}

	/* NOT NULL is checked on applied rows (CHECK constraints are not). */
	entry->notnull = palloc(sizeof(int) * Max(desc->natts, 1));
	entry->nnotnull = 0;
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attnotnull && !att->attisdropped)
			entry->notnull[entry->nnotnull++] = i;
	}

	MemoryContextSwitchTo(oldcxt);
}

/*
 * de_relmap_describe_row
 *		Append "(a, b)=(1, x)": the identity columns of the row in slot (the
 *		local layout of entry's table), or nothing when that is not known.
 *		Values are cut at RELMAP_DESCRIBE_VALUE_BYTES bytes (on a character
 *		boundary).  The slot holds values already converted, so only output
 *		functions run, as for PostgreSQL's own key descriptions.
 */
void
de_relmap_describe_row(DeRelMapEntry *entry, TupleTableSlot *slot, StringInfo buf)
{
	TupleDesc	desc;
	int			n;
	int			i;

	if (slot == NULL || TTS_EMPTY(slot) || !entry->local_valid ||
		entry->nkeyatts == 0 || entry->keyatts == NULL ||
		slot->tts_tupleDescriptor->natts != entry->local_natts)
		return;

	desc = slot->tts_tupleDescriptor;
	n = Min(entry->nkeyatts, RELMAP_DESCRIBE_MAX_COLUMNS);
	slot_getallattrs(slot);

	appendStringInfoChar(buf, '(');
	for (i = 0; i < n; i++)
		appendStringInfo(buf, "%s%s", i > 0 ? ", " : "",
						 quote_identifier(NameStr(TupleDescAttr(desc, entry->keyatts[i])->attname)));
	if (n < entry->nkeyatts)
		appendStringInfoString(buf, ", ...");
	appendStringInfoString(buf, ")=(");
	for (i = 0; i < n; i++)
	{
		int			att = entry->keyatts[i];

		if (i > 0)
			appendStringInfoString(buf, ", ");
		if (slot->tts_isnull[att])
			appendStringInfoString(buf, "null");
		else
		{
			char	   *v = OutputFunctionCall(&entry->keyout[i],
											   slot->tts_values[att]);
			int			len = strlen(v);
			int			cut = pg_mbcliplen(v, len, RELMAP_DESCRIBE_VALUE_BYTES);

			appendBinaryStringInfo(buf, v, cut);
			if (cut < len)
				appendStringInfoString(buf, "...");
			pfree(v);
		}
	}
	if (n < entry->nkeyatts)
		appendStringInfoString(buf, ", ...");
	appendStringInfoChar(buf, ')');
}
