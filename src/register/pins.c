/*-------------------------------------------------------------------------
 *
 * pins.c
 *		  Embassies pinned at a register: add_embassy(), drop_embassy() and
 *		  the lookup the output plugin and copy_frames() use.
 *
 * A pin is a row of data_embassy.embassy_pins: a name chosen by the
 * register's administrator, the embassy's public key in canonical text
 * form (lower-case hex) and the name of the replication slot the embassy
 * uses, which derives from its key.
 *
 * The SQL functions are for administrators (superusers and members of
 * data_embassy_admin); the role has no write privilege on the table, so
 * once de_check_admin_call() has passed, the table is changed as its owner
 * (as referential integrity triggers do), with fully qualified names only.
 * They lock the table against concurrent additions and drops, so their
 * duplicate checks cannot race.
 *
 * de_pin_find() must work in a walsender as well as in an SQL function and
 * while decoding, so it scans the table directly instead of using SPI.
 *
 * IDENTIFICATION
 *		  src/register/pins.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "data_embassy.h"
#include "privilege.h"
#include "seal/keys.h"
#include "register/keyless.h"
#include "register/pins.h"

PG_FUNCTION_INFO_V1(data_embassy_add_embassy);
PG_FUNCTION_INFO_V1(data_embassy_drop_embassy);

#define DE_PINS_TABLE		"embassy_pins"
#define DE_PINS_QUALIFIED	DE_SCHEMA_NAME "." DE_PINS_TABLE

/* columns of embassy_pins, as the extension script creates them */
#define Anum_de_pins_name			1
#define Anum_de_pins_embassy_key	2
#define Natts_de_pins_min			2

/*
 * de_pins_relid
 *		OID of data_embassy.embassy_pins; ERROR when the extension is not
 *		installed in this database.
 */
static Oid
de_pins_relid(void)
{
	Oid			nsp = de_schema_oid(false);
	Oid			relid = get_relname_relid(DE_PINS_TABLE, nsp);

	if (!OidIsValid(relid))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("table \"%s\" does not exist", DE_PINS_QUALIFIED),
				errhint("Recreate the extension \"%s\".", DE_EXTENSION_NAME));
	return relid;
}

/*
 * de_pin_find
 *		Is this embassy key pinned in the current database?
 *
 * The table is tiny (one row per embassy), so a sequential scan of it is
 * as fast as an index lookup and needs no assumption about its indexes.
 * Passing no snapshot to systable_beginscan() makes it use the catalog
 * snapshot: the latest committed state in a normal transaction, and the
 * historic snapshot while decoding (embassy_pins is a user catalog table).
 */
static bool
de_pin_find(const DePublicKey *embassy_key)
{
	Oid			relid;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *keytext;
	bool		found = false;

	Assert(IsTransactionState());

	relid = de_pins_relid();
	keytext = de_key_to_text(embassy_key);

	rel = table_open(relid, AccessShareLock);
	if (RelationGetDescr(rel)->natts < Natts_de_pins_min)
		elog(ERROR, "table \"%s\" has an unexpected shape", DE_PINS_QUALIFIED);

	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Datum		d;
		bool		isnull;
		char	   *stored;

		d = heap_getattr(tup, Anum_de_pins_embassy_key,
						 RelationGetDescr(rel), &isnull);
		if (isnull)
			continue;
		stored = TextDatumGetCString(d);
		/* canonical text is lower case; accept a row written by hand */
		if (pg_strcasecmp(stored, keytext) == 0)
		{
			found = true;
			pfree(stored);
			break;
		}
		pfree(stored);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	pfree(keytext);
	return found;
}

/*
 * de_pin_require
 *		Refuse an embassy key that is not pinned in the current database.
 */
void
de_pin_require(const DePublicKey *embassy_key)
{
	if (!de_pin_find(embassy_key))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				errmsg("embassy key is not pinned in database \"%s\"",
					   get_database_name(MyDatabaseId)),
				errhint("Pin the embassy's public key with %s first.",
						"data_embassy.add_embassy()"));
}

/*
 * data_embassy_add_embassy
 *		SQL: add_embassy(name text, embassy_key text) -> text.  Pin an
 *		embassy's public key and return the slot name it will use.
 */
Datum
data_embassy_add_embassy(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *keytext;
	DePublicKey pub;
	char	   *canonical;
	char	   *slot_name;
	DePrivilegedSql saved;
	Oid			argtypes[3] = {TEXTOID, TEXTOID, NAMEOID};
	Datum		values[3];

	de_check_admin_call("data_embassy.add_embassy()");

	name = de_name_arg(fcinfo, 0, DE_NAME_EMBASSY);

	keytext = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	de_key_from_text(keytext, "embassy_key", &pub);
	canonical = de_key_to_text(&pub);
	slot_name = de_slot_name_for_key(pub.dh, MyDatabaseId);

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(canonical);
	values[2] = DirectFunctionCall1(namein, CStringGetDatum(slot_name));

	de_privileged_sql_begin(de_pins_relid(), &saved);

	/* serialises add_embassy and drop_embassy; readers are not blocked */
	(void) de_privileged_sql_exec("LOCK TABLE " DE_PINS_QUALIFIED
								  " IN SHARE ROW EXCLUSIVE MODE",
								  SPI_OK_UTILITY, 0, NULL, NULL, NULL);

	(void) de_privileged_sql_exec("SELECT name FROM " DE_PINS_QUALIFIED
								  " WHERE name OPERATOR(pg_catalog.=) $1",
								  SPI_OK_SELECT, 1, argtypes, values, NULL);
	if (SPI_processed > 0)
		ereport(ERROR,
				errcode(ERRCODE_DUPLICATE_OBJECT),
				errmsg("embassy \"%s\" already exists", name));

	(void) de_privileged_sql_exec("SELECT name FROM " DE_PINS_QUALIFIED
								  " WHERE pg_catalog.lower(embassy_key)"
								  " OPERATOR(pg_catalog.=) $2"
								  " OR slot_name OPERATOR(pg_catalog.=) $3",
								  SPI_OK_SELECT, 3, argtypes, values, NULL);
	if (SPI_processed > 0)
		ereport(ERROR,
				errcode(ERRCODE_DUPLICATE_OBJECT),
				errmsg("embassy key is already pinned"),
				errdetail("Embassy \"%s\" has this key.",
						  SPI_getvalue(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1)),
				errhint("An embassy is pinned once; drop it with data_embassy.drop_embassy() to pin its key under another name."));

	(void) de_privileged_sql_exec("INSERT INTO " DE_PINS_QUALIFIED
								  " (name, embassy_key, slot_name)"
								  " VALUES ($1, $2, $3)",
								  SPI_OK_INSERT, 3, argtypes, values, NULL);

	de_privileged_sql_end(&saved);

	/* tables whose UPDATE and DELETE this embassy could not apply */
	de_keyless_warn();

	PG_RETURN_TEXT_P(cstring_to_text(slot_name));
}

/*
 * de_pins_drop_slot
 *		Drop the logical slot of a dropped embassy if it exists in this
 *		database.  A slot of that name in another database is left alone.
 */
static void
de_pins_drop_slot(const char *slot_name, const char *name)
{
	ReplicationSlot *slot;
	bool		found = false;
	Oid			database = InvalidOid;
	pid_t		active_pid = 0;

	/* without slots, there is no slot array to search */
	if (max_replication_slots <= 0)
		return;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(slot_name, false);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		found = true;
		database = slot->data.database;
		active_pid = slot->active_pid;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);

	if (!found || database != MyDatabaseId)
		return;

	if (active_pid != 0)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_IN_USE),
				errmsg("replication slot \"%s\" of embassy \"%s\" is active",
					   slot_name, name),
				errdetail("Process %d is streaming from it.", (int) active_pid),
				errhint("Stop the embassy's stream first (pause or drop the register at the embassy, or end the process with pg_terminate_backend()), then try again."));

	/* still errors out if the slot became active meanwhile */
	ReplicationSlotDrop(slot_name, true);
}

/*
 * data_embassy_drop_embassy
 *		SQL: drop_embassy(name text).  Remove a pin and the embassy's slot.
 *
 * The pin is deleted first: if the slot cannot be dropped, the ERROR rolls
 * the deletion back and nothing has changed.
 */
Datum
data_embassy_drop_embassy(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *slot_name;
	DePrivilegedSql saved;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	MemoryContext caller_cxt = CurrentMemoryContext;

	de_check_admin_call("data_embassy.drop_embassy()");

	name = de_name_arg(fcinfo, 0, DE_NAME_EMBASSY);
	values[0] = CStringGetTextDatum(name);

	de_privileged_sql_begin(de_pins_relid(), &saved);

	(void) de_privileged_sql_exec("LOCK TABLE " DE_PINS_QUALIFIED
								  " IN SHARE ROW EXCLUSIVE MODE",
								  SPI_OK_UTILITY, 0, NULL, NULL, NULL);
	(void) de_privileged_sql_exec("DELETE FROM " DE_PINS_QUALIFIED
								  " WHERE name OPERATOR(pg_catalog.=) $1"
								  " RETURNING slot_name",
								  SPI_OK_DELETE_RETURNING, 1, argtypes, values,
								  NULL);
	if (SPI_processed == 0)
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("embassy \"%s\" does not exist", name));
	slot_name = MemoryContextStrdup(caller_cxt,
									SPI_getvalue(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1));

	de_privileged_sql_end(&saved);

	de_pins_drop_slot(slot_name, name);

	PG_RETURN_VOID();
}
