/*-------------------------------------------------------------------------
 *
 * catalog.c
 *		  The embassy's catalog: every SQL statement on
 *		  data_embassy.registers, replicated_relations,
 *		  replicated_sequences, promotions and skipped_transactions.
 *
 * The tables are created by the extension script; their owner is the role
 * that created the extension, and only that owner may read them (conninfo
 * can hold a password).  Callers check their own caller first (SQL
 * functions: de_check_admin_call); the statements here then run as the owner,
 * restricted, with a search_path of pg_catalog (privilege.c), so an
 * operator or function of the caller's, or a search_path set on the
 * database, cannot take part.  Operators are qualified all the same.
 *
 * registers.state holds the phase as text ('init', 'streaming',
 * 'promoted'); de_register_phase_name() is the one place that spells it.
 *
 * IDENTIFICATION
 *		  src/embassy/catalog.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"

#include "data_embassy.h"
#include "embassy/catalog.h"
#include "embassy/guard.h"
#include "privilege.h"
#include "schema_list.h"

#define REGISTERS			DE_SCHEMA_NAME ".registers"
#define RELATIONS			DE_SCHEMA_NAME ".replicated_relations"
#define SEQUENCES			DE_SCHEMA_NAME ".replicated_sequences"
#define PROMOTIONS			DE_SCHEMA_NAME ".promotions"
#define SKIPPED				DE_SCHEMA_NAME ".skipped_transactions"

/* The columns of a register row, as every SELECT below lists them. */
#define REGISTER_COLUMNS \
	"name, conninfo, register_key, copy_data, slot_name::pg_catalog.text, " \
	"state, paused, register_sysid::pg_catalog.text, register_dboid, " \
	"promoted_at, promoted_lsn, skip_lsn, require_tls, history_lsn, " \
	"history_crc"
#define Anum_reg_name			1
#define Anum_reg_conninfo		2
#define Anum_reg_register_key	3
#define Anum_reg_copy_data		4
#define Anum_reg_slot_name		5
#define Anum_reg_state			6
#define Anum_reg_paused			7
#define Anum_reg_sysid			8
#define Anum_reg_dboid			9
#define Anum_reg_promoted_at	10
#define Anum_reg_promoted_lsn	11
#define Anum_reg_skip_lsn		12
#define Anum_reg_require_tls	13
#define Anum_reg_history_lsn	14
#define Anum_reg_history_crc	15
#define Natts_reg				15

static const char *const phase_names[] = {
	[DE_PHASE_INIT] = "init",
	[DE_PHASE_STREAMING] = "streaming",
	[DE_PHASE_PROMOTED] = "promoted",
};

const char *
de_register_phase_name(DeRegisterPhase phase)
{
	Assert(phase >= DE_PHASE_INIT && phase <= DE_PHASE_PROMOTED);
	return phase_names[phase];
}

static DeRegisterPhase
phase_from_name(const char *name)
{
	for (int i = 0; i < lengthof(phase_names); i++)
		if (strcmp(phase_names[i], name) == 0)
			return (DeRegisterPhase) i;
	elog(ERROR, "unknown register state \"%s\"", name);
	return DE_PHASE_INIT;		/* keep compiler quiet */
}

/*
 * catalog_begin
 *		Privileged SQL on the registers table (see privilege.c).  Returns
 *		false, doing nothing, when the extension is not installed here and
 *		missing_ok.
 */
static bool
catalog_begin(DePrivilegedSql *save, bool missing_ok)
{
	Oid			nsp = de_schema_oid(missing_ok);
	Oid			relid;

	if (!OidIsValid(nsp))
		return false;
	relid = get_relname_relid("registers", nsp);
	if (!OidIsValid(relid))
	{
		if (missing_ok)
			return false;
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_TABLE),
				errmsg("relation \"%s\" does not exist", REGISTERS));
	}
	de_privileged_sql_begin(relid, save);
	return true;
}

/* Text of column col of row row of the last result, or NULL. */
static char *
result_text(MemoryContext cxt, int row, int col)
{
	char	   *value = SPI_getvalue(SPI_tuptable->vals[row],
									 SPI_tuptable->tupdesc, col);

	return value ? MemoryContextStrdup(cxt, value) : NULL;
}

static Datum
result_datum(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						 col, isnull);
}

/* Row row of the last result as a register, in cxt. */
static DeRegister *
result_register(MemoryContext cxt, int row)
{
	DeRegister *reg = MemoryContextAllocZero(cxt, sizeof(DeRegister));
	char	   *sysid;
	char	   *state;
	bool		isnull;
	Datum		d;

	StaticAssertStmt(Natts_reg == Anum_reg_history_crc,
					 "REGISTER_COLUMNS and its column numbers disagree");

	reg->name = result_text(cxt, row, Anum_reg_name);
	reg->conninfo = result_text(cxt, row, Anum_reg_conninfo);
	reg->register_key = result_text(cxt, row, Anum_reg_register_key);
	d = result_datum(row, Anum_reg_copy_data, &isnull);
	reg->copy_data = !isnull && DatumGetBool(d);
	reg->slot_name = result_text(cxt, row, Anum_reg_slot_name);
	state = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						 Anum_reg_state);
	reg->phase = phase_from_name(state ? state : "");
	d = result_datum(row, Anum_reg_paused, &isnull);
	reg->paused = !isnull && DatumGetBool(d);
	sysid = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						 Anum_reg_sysid);
	reg->sysid = sysid ? strtou64(sysid, NULL, 10) : 0;
	d = result_datum(row, Anum_reg_dboid, &isnull);
	reg->dboid = isnull ? InvalidOid : DatumGetObjectId(d);
	reg->pinned = sysid != NULL && OidIsValid(reg->dboid);
	d = result_datum(row, Anum_reg_promoted_at, &isnull);
	reg->promoted_at = isnull ? 0 : DatumGetTimestampTz(d);
	d = result_datum(row, Anum_reg_promoted_lsn, &isnull);
	reg->promoted_lsn = isnull ? InvalidXLogRecPtr : DatumGetLSN(d);
	d = result_datum(row, Anum_reg_skip_lsn, &isnull);
	reg->skip_lsn = isnull ? InvalidXLogRecPtr : DatumGetLSN(d);
	d = result_datum(row, Anum_reg_require_tls, &isnull);
	reg->require_tls = isnull || DatumGetBool(d);
	d = result_datum(row, Anum_reg_history_lsn, &isnull);
	reg->history_lsn = isnull ? InvalidXLogRecPtr : DatumGetLSN(d);
	d = result_datum(row, Anum_reg_history_crc, &isnull);
	reg->history_crc = isnull ? 0 : (uint32) DatumGetInt64(d);
	return reg;
}

/*
 * catalog_exec_named
 *		Run one statement whose only parameter ($1) is a register's name.
 *		Returns the number of rows.
 */
static uint64
catalog_exec_named(const char *sql, int expected, const char *name)
{
	DePrivilegedSql save;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	uint64		n;

	(void) catalog_begin(&save, false);
	values[0] = CStringGetTextDatum(name);
	n = de_privileged_sql_exec(sql, expected, 1, types, values, NULL);
	de_privileged_sql_end(&save);
	return n;
}

/* A row that was there a moment ago is gone (dropped meanwhile). */
static void
catalog_register_gone(const char *name)
{
	ereport(ERROR,
			errcode(ERRCODE_UNDEFINED_OBJECT),
			errmsg("register \"%s\" does not exist any more", name));
}

DeRegister *
de_catalog_get_register(const char *name, DeRowLock lock, bool missing_ok)
{
	MemoryContext cxt = CurrentMemoryContext;
	DePrivilegedSql save;
	DeRegister *reg = NULL;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	const char *sql;

	if (!catalog_begin(&save, missing_ok))
		return NULL;

	switch (lock)
	{
		case DE_LOCK_NONE:
			sql = "SELECT " REGISTER_COLUMNS " FROM " REGISTERS
				" WHERE name OPERATOR(pg_catalog.=) $1";
			break;
		case DE_LOCK_KEY_SHARE:
			sql = "SELECT " REGISTER_COLUMNS " FROM " REGISTERS
				" WHERE name OPERATOR(pg_catalog.=) $1 FOR KEY SHARE";
			break;
		case DE_LOCK_NO_KEY_UPDATE:
			sql = "SELECT " REGISTER_COLUMNS " FROM " REGISTERS
				" WHERE name OPERATOR(pg_catalog.=) $1 FOR NO KEY UPDATE";
			break;
		case DE_LOCK_UPDATE:
		default:
			sql = "SELECT " REGISTER_COLUMNS " FROM " REGISTERS
				" WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE";
			break;
	}

	values[0] = CStringGetTextDatum(name);
	if (de_privileged_sql_exec(sql, SPI_OK_SELECT, 1, types, values, NULL) > 0)
		reg = result_register(cxt, 0);
	de_privileged_sql_end(&save);

	if (reg == NULL && !missing_ok)
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("register \"%s\" does not exist", name),
				errhint("The registers of this database are listed in data_embassy.lag."));
	return reg;
}

List *
de_catalog_list_registers(bool only_active)
{
	MemoryContext cxt = CurrentMemoryContext;
	DePrivilegedSql save;
	List	   *result = NIL;
	uint64		n;

	if (!catalog_begin(&save, true))
		return NIL;

	if (only_active)
		n = de_privileged_sql_exec("SELECT " REGISTER_COLUMNS " FROM " REGISTERS
								   " WHERE state OPERATOR(pg_catalog.<>) 'promoted'"
								   " ORDER BY name",
								   SPI_OK_SELECT, 0, NULL, NULL, NULL);
	else
		n = de_privileged_sql_exec("SELECT " REGISTER_COLUMNS " FROM " REGISTERS
								   " ORDER BY name",
								   SPI_OK_SELECT, 0, NULL, NULL, NULL);

	for (uint64 i = 0; i < n; i++)
	{
		DeRegister *reg = result_register(cxt, (int) i);
		MemoryContext old = MemoryContextSwitchTo(cxt);

		result = lappend(result, reg);
		MemoryContextSwitchTo(old);
	}
	de_privileged_sql_end(&save);
	return result;
}

List *
de_catalog_lock_registers(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	DePrivilegedSql save;
	List	   *result = NIL;
	uint64		n;

	if (!catalog_begin(&save, true))
		return NIL;

	/*
	 * drop_register locks its row FOR UPDATE before it stops the worker, and
	 * nothing else locks rows that strongly.
	 */
	n = de_privileged_sql_exec("SELECT name FROM " REGISTERS
							   " FOR KEY SHARE SKIP LOCKED",
							   SPI_OK_SELECT, 0, NULL, NULL, NULL);
	for (uint64 i = 0; i < n; i++)
	{
		char	   *name = result_text(cxt, (int) i, 1);
		MemoryContext old = MemoryContextSwitchTo(cxt);

		result = lappend(result, name);
		MemoryContextSwitchTo(old);
	}
	de_privileged_sql_end(&save);
	return result;
}

void
de_catalog_insert_register(const char *name, const char *conninfo,
						   const char *register_key, bool copy_data,
						   bool require_tls)
{
	DePrivilegedSql save;
	Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, BOOLOID, BOOLOID};
	Datum		values[5];

	(void) catalog_begin(&save, false);

	/*
	 * One add_register at a time, so that the loser of two adding the same
	 * name or key waits for the winner and then sees its row.  The mode lets
	 * readers and the launcher's key-share locks through.
	 */
	(void) de_privileged_sql_exec("LOCK TABLE " REGISTERS
								  " IN SHARE ROW EXCLUSIVE MODE",
								  SPI_OK_UTILITY, 0, NULL, NULL, NULL);

	values[0] = CStringGetTextDatum(name);
	if (de_privileged_sql_exec("SELECT 1 FROM " REGISTERS
							   " WHERE name OPERATOR(pg_catalog.=) $1",
							   SPI_OK_SELECT, 1, types, values, NULL) > 0)
		ereport(ERROR,
				errcode(ERRCODE_DUPLICATE_OBJECT),
				errmsg("register \"%s\" already exists", name));

	values[0] = CStringGetTextDatum(register_key);
	if (de_privileged_sql_exec("SELECT name FROM " REGISTERS
							   " WHERE register_key OPERATOR(pg_catalog.=) $1",
							   SPI_OK_SELECT, 1, types, values, NULL) > 0)
		ereport(ERROR,
				errcode(ERRCODE_DUPLICATE_OBJECT),
				errmsg("register key is already used by register \"%s\"",
					   SPI_getvalue(SPI_tuptable->vals[0],
									SPI_tuptable->tupdesc, 1)));

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(conninfo);
	values[2] = CStringGetTextDatum(register_key);
	values[3] = BoolGetDatum(copy_data);
	values[4] = BoolGetDatum(require_tls);
	(void) de_privileged_sql_exec("INSERT INTO " REGISTERS
								  " (name, conninfo, register_key, copy_data,"
								  " require_tls, state)"
								  " VALUES ($1, $2, $3, $4, $5, 'init')",
								  SPI_OK_INSERT, 5, types, values, NULL);
	de_privileged_sql_end(&save);
}

void
de_catalog_set_schemas(const char *name, List *schemas)
{
	DePrivilegedSql save;
	Oid			types[2] = {TEXTOID, TEXTARRAYOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	uint64		n;

	(void) catalog_begin(&save, false);
	values[0] = CStringGetTextDatum(name);
	if (schemas == NIL)
	{
		values[1] = (Datum) 0;
		nulls[1] = 'n';
	}
	else
		values[1] = PointerGetDatum(de_schema_list_to_array(schemas));
	n = de_privileged_sql_exec("UPDATE " REGISTERS " SET schemas = $2"
							   " WHERE name OPERATOR(pg_catalog.=) $1",
							   SPI_OK_UPDATE, 2, types, values, nulls);
	de_privileged_sql_end(&save);
	if (n != 1)
		catalog_register_gone(name);
}

List *
de_catalog_register_schemas(const char *name)
{
	MemoryContext cxt = CurrentMemoryContext;
	DePrivilegedSql save;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	List	   *result = NIL;

	(void) catalog_begin(&save, false);
	values[0] = CStringGetTextDatum(name);
	if (de_privileged_sql_exec("SELECT schemas FROM " REGISTERS
							   " WHERE name OPERATOR(pg_catalog.=) $1",
							   SPI_OK_SELECT, 1, types, values, NULL) > 0)
	{
		bool		isnull;
		Datum		d = result_datum(0, 1, &isnull);

		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			/* written by de_catalog_set_schemas(), checked again */
			result = de_schema_list_from_array(DatumGetArrayTypePCopy(d),
											   "registers.schemas");
			MemoryContextSwitchTo(old);
		}
	}
	de_privileged_sql_end(&save);
	return result;
}

void
de_catalog_delete_register(const char *name)
{
	(void) catalog_exec_named("DELETE FROM " REGISTERS
							  " WHERE name OPERATOR(pg_catalog.=) $1",
							  SPI_OK_DELETE, name);
}

void
de_catalog_set_paused(const char *name, bool paused)
{
	DePrivilegedSql save;
	Oid			types[2] = {TEXTOID, BOOLOID};
	Datum		values[2];

	(void) catalog_begin(&save, false);
	values[0] = CStringGetTextDatum(name);
	values[1] = BoolGetDatum(paused);
	(void) de_privileged_sql_exec("UPDATE " REGISTERS " SET paused = $2"
								  " WHERE name OPERATOR(pg_catalog.=) $1",
								  SPI_OK_UPDATE, 2, types, values, NULL);
	de_privileged_sql_end(&save);
}

void
de_catalog_set_require_tls(const char *name, bool require_tls)
{
	DePrivilegedSql save;
	Oid			types[2] = {TEXTOID, BOOLOID};
	Datum		values[2];
	uint64		n;

	(void) catalog_begin(&save, false);
	values[0] = CStringGetTextDatum(name);
	values[1] = BoolGetDatum(require_tls);
	n = de_privileged_sql_exec("UPDATE " REGISTERS " SET require_tls = $2"
							   " WHERE name OPERATOR(pg_catalog.=) $1",
							   SPI_OK_UPDATE, 2, types, values, NULL);
	de_privileged_sql_end(&save);
	if (n != 1)
		catalog_register_gone(name);
}

void
de_catalog_set_identity(const char *name, uint64 sysid, Oid dboid,
						const char *slot_name)
{
	DePrivilegedSql save;
	Oid			types[4] = {TEXTOID, TEXTOID, OIDOID, TEXTOID};
	Datum		values[4];
	char		sysid_text[32];

	snprintf(sysid_text, sizeof(sysid_text), UINT64_FORMAT, sysid);

	(void) catalog_begin(&save, false);
	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(sysid_text);
	values[2] = ObjectIdGetDatum(dboid);
	values[3] = CStringGetTextDatum(slot_name);
	(void) de_privileged_sql_exec("UPDATE " REGISTERS
								  " SET register_sysid = $2::pg_catalog.numeric,"
								  " register_dboid = $3,"
								  " slot_name = $4::pg_catalog.name"
								  " WHERE name OPERATOR(pg_catalog.=) $1",
								  SPI_OK_UPDATE, 4, types, values, NULL);
	de_privileged_sql_end(&save);
}

void
de_catalog_set_streaming(const char *name)
{
	if (catalog_exec_named("UPDATE " REGISTERS " SET state = 'streaming'"
						   " WHERE name OPERATOR(pg_catalog.=) $1",
						   SPI_OK_UPDATE, name) != 1)
		catalog_register_gone(name);
}

void
de_catalog_set_resync(const char *name)
{
	if (catalog_exec_named("UPDATE " REGISTERS
						   " SET state = 'init', copy_data = true,"
						   " history_lsn = NULL, history_crc = NULL"
						   " WHERE name OPERATOR(pg_catalog.=) $1",
						   SPI_OK_UPDATE, name) != 1)
		catalog_register_gone(name);
}

void
de_catalog_set_promoted(const char *name, TimestampTz at, XLogRecPtr lsn,
						XLogRecPtr source_lsn)
{
	DePrivilegedSql save;
	Oid			types[5] = {TEXTOID, TIMESTAMPTZOID, LSNOID, LSNOID, NAMEOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	uint64		n;

	values[0] = CStringGetTextDatum(name);
	values[1] = TimestampTzGetDatum(at);
	values[2] = LSNGetDatum(lsn);
	nulls[2] = XLogRecPtrIsInvalid(lsn) ? 'n' : ' ';
	values[3] = LSNGetDatum(source_lsn);
	nulls[3] = XLogRecPtrIsInvalid(source_lsn) ? 'n' : ' ';
	/* the user who called promote(), not the owner it runs as */
	values[4] = DirectFunctionCall1(namein,
									CStringGetDatum(GetUserNameFromId(GetUserId(),
																	  false)));

	(void) catalog_begin(&save, false);
	n = de_privileged_sql_exec("UPDATE " REGISTERS
							   " SET state = 'promoted', paused = false,"
							   " promoted_at = $2, promoted_lsn = $3"
							   " WHERE name OPERATOR(pg_catalog.=) $1",
							   SPI_OK_UPDATE, 3, types, values, nulls);
	if (n != 1)
		catalog_register_gone(name);

	(void) de_privileged_sql_exec("INSERT INTO " PROMOTIONS
								  " (register, promoted_at, promoted_lsn, source_lsn,"
								  " unreplicated_bytes, promoted_by)"
								  " VALUES ($1, $2, $3, $4,"
								  " CASE WHEN $3 IS NULL OR $4 IS NULL THEN NULL"
								  " WHEN $4 OPERATOR(pg_catalog.>) $3"
								  " THEN ($4 OPERATOR(pg_catalog.-) $3)::pg_catalog.int8"
								  " ELSE 0 END, $5)",
								  SPI_OK_INSERT, 5, types, values, nulls);
	de_privileged_sql_end(&save);
}

void
de_catalog_set_skip(const char *name, XLogRecPtr lsn)
{
	DePrivilegedSql save;
	Oid			types[3] = {TEXTOID, LSNOID, NAMEOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	values[0] = CStringGetTextDatum(name);
	values[1] = LSNGetDatum(lsn);
	/* the user who called skip(), not the owner it runs as */
	values[2] = DirectFunctionCall1(namein,
									CStringGetDatum(GetUserNameFromId(GetUserId(),
																	  false)));
	if (XLogRecPtrIsInvalid(lsn))
		nulls[1] = nulls[2] = 'n';

	(void) catalog_begin(&save, false);
	(void) de_privileged_sql_exec("UPDATE " REGISTERS
								  " SET skip_lsn = $2, skip_requested_by = $3"
								  " WHERE name OPERATOR(pg_catalog.=) $1",
								  SPI_OK_UPDATE, 3, types, values, nulls);
	de_privileged_sql_end(&save);
}

bool
de_catalog_set_history(const char *name, XLogRecPtr lsn, uint32 crc)
{
	DePrivilegedSql save;
	Oid			types[3] = {TEXTOID, LSNOID, INT8OID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	uint64		n;

	values[0] = CStringGetTextDatum(name);
	values[1] = LSNGetDatum(lsn);
	values[2] = Int64GetDatum((int64) crc);

	/* never wait for promote() or drop_register(), which wait for us */
	(void) catalog_begin(&save, false);
	n = de_privileged_sql_exec("UPDATE " REGISTERS
							   " SET history_lsn = $2, history_crc = $3"
							   " WHERE name OPERATOR(pg_catalog.=)"
							   " (SELECT name FROM " REGISTERS
							   "  WHERE name OPERATOR(pg_catalog.=) $1"
							   "  FOR NO KEY UPDATE SKIP LOCKED)",
							   SPI_OK_UPDATE, 3, types, values, nulls);
	de_privileged_sql_end(&save);
	return n == 1;
}

bool
de_catalog_record_skip(const char *name, XLogRecPtr lsn, TransactionId xid,
					   TimestampTz commit_time)
{
	DePrivilegedSql save;
	Oid			types[4] = {TEXTOID, LSNOID, XIDOID, TIMESTAMPTZOID};
	Datum		values[4];
	uint64		n;

	values[0] = CStringGetTextDatum(name);
	values[1] = LSNGetDatum(lsn);
	values[2] = TransactionIdGetDatum(xid);
	values[3] = TimestampTzGetDatum(commit_time);

	(void) catalog_begin(&save, false);

	/* only a skip still asked for: skip(name, '0/0') may have withdrawn it */
	n = de_privileged_sql_exec("INSERT INTO " SKIPPED
							   " (register, commit_lsn, xid, commit_time,"
							   " skipped_at, requested_by)"
							   " SELECT name, skip_lsn, $3, $4,"
							   " pg_catalog.clock_timestamp(), skip_requested_by"
							   " FROM " REGISTERS
							   " WHERE name OPERATOR(pg_catalog.=) $1"
							   " AND skip_lsn OPERATOR(pg_catalog.=) $2"
							   " ON CONFLICT (register, commit_lsn) DO NOTHING",
							   SPI_OK_INSERT, 4, types, values, NULL);
	(void) de_privileged_sql_exec("UPDATE " REGISTERS
								  " SET skip_lsn = NULL, skip_requested_by = NULL"
								  " WHERE name OPERATOR(pg_catalog.=) $1"
								  " AND skip_lsn OPERATOR(pg_catalog.=) $2",
								  SPI_OK_UPDATE, 2, types, values, NULL);
	de_privileged_sql_end(&save);

	return n == 1;
}

char *
de_catalog_relation_register(Oid relid, Oid *remote_relid)
{
	MemoryContext cxt = CurrentMemoryContext;
	DePrivilegedSql save;
	Oid			types[1] = {OIDOID};
	Datum		values[1];
	char	   *result = NULL;

	*remote_relid = InvalidOid;
	(void) catalog_begin(&save, false);
	values[0] = ObjectIdGetDatum(relid);
	if (de_privileged_sql_exec("SELECT register, remote_relid FROM " RELATIONS
							   " WHERE relid OPERATOR(pg_catalog.=) $1",
							   SPI_OK_SELECT, 1, types, values, NULL) > 0)
	{
		bool		isnull;
		Datum		d = result_datum(0, 2, &isnull);

		result = result_text(cxt, 0, 1);
		if (!isnull)
			*remote_relid = DatumGetObjectId(d);
	}
	de_privileged_sql_end(&save);
	return result;
}

void
de_catalog_add_relation(const char *register_name, Oid relid,
						Oid remote_relid)
{
	DePrivilegedSql save;
	Oid			types[3] = {TEXTOID, OIDOID, OIDOID};
	Datum		values[3];

	(void) catalog_begin(&save, false);
	values[0] = CStringGetTextDatum(register_name);
	values[1] = ObjectIdGetDatum(relid);
	values[2] = ObjectIdGetDatum(remote_relid);
	(void) de_privileged_sql_exec("INSERT INTO " RELATIONS
								  " (register, relid, remote_relid)"
								  " VALUES ($1, $2, $3)",
								  SPI_OK_INSERT, 3, types, values, NULL);
	de_privileged_sql_end(&save);

	de_guard_invalidate();
}

void
de_catalog_set_relation_remote(Oid relid, Oid remote_relid)
{
	DePrivilegedSql save;
	Oid			types[2] = {OIDOID, OIDOID};
	Datum		values[2];

	(void) catalog_begin(&save, false);
	values[0] = ObjectIdGetDatum(relid);
	values[1] = ObjectIdGetDatum(remote_relid);
	(void) de_privileged_sql_exec("UPDATE " RELATIONS " SET remote_relid = $2"
								  " WHERE relid OPERATOR(pg_catalog.=) $1",
								  SPI_OK_UPDATE, 2, types, values, NULL);
	de_privileged_sql_end(&save);
}



List *
de_catalog_register_relations(const char *register_name)
{
	MemoryContext cxt = CurrentMemoryContext;
	DePrivilegedSql save;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	List	   *result = NIL;
	uint64		n;

	(void) catalog_begin(&save, false);
	values[0] = CStringGetTextDatum(register_name);
	n = de_privileged_sql_exec("SELECT relid FROM " RELATIONS
							   " WHERE register OPERATOR(pg_catalog.=) $1"
							   " ORDER BY relid",
							   SPI_OK_SELECT, 1, types, values, NULL);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(result_datum((int) i, 1, &isnull));
		MemoryContext old = MemoryContextSwitchTo(cxt);

		result = lappend_oid(result, relid);
		MemoryContextSwitchTo(old);
	}
	de_privileged_sql_end(&save);
	return result;
}

void
de_catalog_clear_relations(const char *register_name)
{
	(void) catalog_exec_named("DELETE FROM " RELATIONS
							  " WHERE register OPERATOR(pg_catalog.=) $1",
							  SPI_OK_DELETE, register_name);
	(void) catalog_exec_named("DELETE FROM " SEQUENCES
							  " WHERE register OPERATOR(pg_catalog.=) $1",
							  SPI_OK_DELETE, register_name);
	de_guard_invalidate();
}

void
de_catalog_report_sequence(const char *register_name, Oid relid,
						   int64 last_value)
{
	DePrivilegedSql save;
	Oid			types[3] = {TEXTOID, OIDOID, INT8OID};
	Datum		values[3];

	(void) catalog_begin(&save, false);
	values[0] = CStringGetTextDatum(register_name);
	values[1] = ObjectIdGetDatum(relid);
	values[2] = Int64GetDatum(last_value);
	(void) de_privileged_sql_exec("INSERT INTO " SEQUENCES " AS s"
								  " (register, relid, last_value)"
								  " VALUES ($1, $2, $3) ON CONFLICT (relid) DO UPDATE"
								  " SET register = excluded.register,"
								  " last_value = pg_catalog.int8larger(s.last_value,"
								  " excluded.last_value)"
								  " RETURNING s.xmax::pg_catalog.text"
								  " OPERATOR(pg_catalog.=) '0'",
								  SPI_OK_INSERT_RETURNING, 3, types, values, NULL);
	/* a sequence new to the guard (xmax 0: inserted, not updated) */
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		inserted = result_datum(0, 1, &isnull);

		if (!isnull && DatumGetBool(inserted))
			de_guard_invalidate();
	}

	/* never backwards: setval semantics would allow it */
	(void) de_privileged_sql_exec("SELECT pg_catalog.setval($2, $3, true)"
								  " WHERE pg_catalog.pg_sequence_last_value($2) IS NULL"
								  " OR pg_catalog.pg_sequence_last_value($2)"
								  " OPERATOR(pg_catalog.<) $3",
								  SPI_OK_SELECT, 3, types, values, NULL);
	de_privileged_sql_end(&save);
}

uint64
de_catalog_advance_sequences(const char *register_name, int64 margin)
{
	DePrivilegedSql save;
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	uint64		n;

	(void) catalog_begin(&save, false);
	values[0] = CStringGetTextDatum(register_name);
	values[1] = Int64GetDatum(margin);

	/*
	 * The target is the larger of the local and the reported value plus the
	 * margin, but never past the sequence's maximum (computed so that it
	 * cannot overflow).
	 */
	n = de_privileged_sql_exec("SELECT s.relid::pg_catalog.regclass::pg_catalog.text,"
							   " pg_catalog.setval(s.relid::pg_catalog.regclass, t.target),"
							   " t.clamped, q.seqmax"
							   " FROM " SEQUENCES " s"
							   " JOIN pg_catalog.pg_sequence q"
							   "   ON q.seqrelid OPERATOR(pg_catalog.=) s.relid"
							   " CROSS JOIN LATERAL (SELECT pg_catalog.int8larger(COALESCE("
							   "   pg_catalog.pg_sequence_last_value(s.relid::pg_catalog.regclass), 0),"
							   "   s.last_value) AS base) b"
							   " CROSS JOIN LATERAL (SELECT"
							   "   b.base OPERATOR(pg_catalog.>) (q.seqmax OPERATOR(pg_catalog.-) $2)"
							   "     AS clamped,"
							   "   CASE WHEN b.base OPERATOR(pg_catalog.>) (q.seqmax OPERATOR(pg_catalog.-) $2)"
							   "        THEN q.seqmax ELSE b.base OPERATOR(pg_catalog.+) $2 END"
							   "     AS target) t"
							   " WHERE s.register OPERATOR(pg_catalog.=) $1"
							   " ORDER BY 1",
							   SPI_OK_SELECT, 2, types, values, NULL);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		if (DatumGetBool(result_datum((int) i, 3, &isnull)))
			ereport(WARNING,
					errcode(ERRCODE_SEQUENCE_GENERATOR_LIMIT_EXCEEDED),
					errmsg("sequence \"%s\" of register \"%s\" was set to its maximum value",
						   SPI_getvalue(SPI_tuptable->vals[i],
										SPI_tuptable->tupdesc, 1),
						   register_name),
					errdetail("Its last value plus \"%s\" would pass the maximum %s.",
							  "data_embassy.promote_sequence_margin",
							  SPI_getvalue(SPI_tuptable->vals[i],
										   SPI_tuptable->tupdesc, 4)),
					errhint("nextval() fails until the sequence is altered, for example with ALTER SEQUENCE ... MAXVALUE."));
	}
	de_privileged_sql_end(&save);
	return n;
}

/*
 * Per-table resync (resync_table, table_sync.c): sync_state, sync_lsn and
 * sync_attempt of replicated_relations.
 */

bool
de_catalog_request_table_sync(Oid relid)
{
	DePrivilegedSql save;
	Oid			types[1] = {OIDOID};
	Datum		values[1];
	uint64		n;

	(void) catalog_begin(&save, false);
	values[0] = ObjectIdGetDatum(relid);
	n = de_privileged_sql_exec("UPDATE " RELATIONS
							   " SET sync_state = 'i', sync_attempt = NULL"
							   " WHERE relid OPERATOR(pg_catalog.=) $1"
							   " AND sync_state OPERATOR(pg_catalog.=) 'r'",
							   SPI_OK_UPDATE, 1, types, values, NULL);
	de_privileged_sql_end(&save);
	return n == 1;
}

List *
de_catalog_table_syncs(const char *register_name, bool reset_attempts)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *result = NIL;
	uint64		n;

	if (reset_attempts)
		(void) catalog_exec_named("UPDATE " RELATIONS
								  " SET sync_state = 'i', sync_attempt = NULL"
								  " WHERE register OPERATOR(pg_catalog.=) $1"
								  " AND sync_state OPERATOR(pg_catalog.<>) 'r'",
								  SPI_OK_UPDATE, register_name);
	{
		DePrivilegedSql save;
		Oid			types[1] = {TEXTOID};
		Datum		values[1];

		(void) catalog_begin(&save, false);
		values[0] = CStringGetTextDatum(register_name);
		n = de_privileged_sql_exec("SELECT relid, sync_state, sync_lsn, sync_attempt"
								   " FROM " RELATIONS
								   " WHERE register OPERATOR(pg_catalog.=) $1"
								   " AND (sync_state OPERATOR(pg_catalog.<>) 'r'"
								   " OR sync_lsn IS NOT NULL)"
								   " ORDER BY relid",
								   SPI_OK_SELECT, 1, types, values, NULL);
		for (uint64 i = 0; i < n; i++)
		{
			DeTableSyncRow *row;
			bool		isnull;
			Datum		d;

			row = MemoryContextAllocZero(cxt, sizeof(DeTableSyncRow));
			row->relid = DatumGetObjectId(result_datum((int) i, 1, &isnull));
			row->state = DatumGetChar(result_datum((int) i, 2, &isnull));
			d = result_datum((int) i, 3, &isnull);
			row->lsn = isnull ? InvalidXLogRecPtr : DatumGetLSN(d);
			d = result_datum((int) i, 4, &isnull);
			row->attempt = isnull ? 0 : DatumGetInt64(d);
			{
				MemoryContext old = MemoryContextSwitchTo(cxt);

				result = lappend(result, row);
				MemoryContextSwitchTo(old);
			}
		}
		de_privileged_sql_end(&save);
	}
	return result;
}

/*
 * de_catalog_tables_not_ready
 *		The qualified names of the register's tables whose sync_state is not
 *		'r' (a copy of them is wanted or has not caught up), sorted.
 */
List *
de_catalog_tables_not_ready(const char *register_name)
{
	MemoryContext cxt = CurrentMemoryContext;
	DePrivilegedSql save;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	List	   *result = NIL;
	uint64		n;

	(void) catalog_begin(&save, false);
	values[0] = CStringGetTextDatum(register_name);
	n = de_privileged_sql_exec("SELECT COALESCE(pg_catalog.format('%I.%I',"
							   " s.nspname, c.relname),"
							   " r.relid::pg_catalog.text) AS name"
							   " FROM " RELATIONS " r"
							   " LEFT JOIN pg_catalog.pg_class c"
							   "   ON c.oid OPERATOR(pg_catalog.=) r.relid"
							   " LEFT JOIN pg_catalog.pg_namespace s"
							   "   ON s.oid OPERATOR(pg_catalog.=) c.relnamespace"
							   " WHERE r.register OPERATOR(pg_catalog.=) $1"
							   " AND r.sync_state OPERATOR(pg_catalog.<>) 'r'"
							   " ORDER BY 1",
							   SPI_OK_SELECT, 1, types, values, NULL);
	for (uint64 i = 0; i < n; i++)
	{
		char	   *name = result_text(cxt, (int) i, 1);
		MemoryContext old = MemoryContextSwitchTo(cxt);

		result = lappend(result, name);
		MemoryContextSwitchTo(old);
	}
	de_privileged_sql_end(&save);
	return result;
}

char
de_catalog_table_sync_state(Oid relid, XLogRecPtr *lsn, int64 *attempt)
{
	DePrivilegedSql save;
	Oid			types[1] = {OIDOID};
	Datum		values[1];
	char		state = '\0';

	*lsn = InvalidXLogRecPtr;
	*attempt = 0;
	(void) catalog_begin(&save, false);
	values[0] = ObjectIdGetDatum(relid);
	if (de_privileged_sql_exec("SELECT sync_state, sync_lsn, sync_attempt FROM "
							   RELATIONS " WHERE relid OPERATOR(pg_catalog.=) $1",
							   SPI_OK_SELECT, 1, types, values, NULL) > 0)
	{
		bool		isnull;
		Datum		d;

		state = DatumGetChar(result_datum(0, 1, &isnull));
		d = result_datum(0, 2, &isnull);
		if (!isnull)
			*lsn = DatumGetLSN(d);
		d = result_datum(0, 3, &isnull);
		if (!isnull)
			*attempt = DatumGetInt64(d);
	}
	de_privileged_sql_end(&save);
	return state;
}

bool
de_catalog_claim_table_sync(Oid relid, int64 copied_attempt, int64 attempt)
{
	DePrivilegedSql save;
	Oid			types[3] = {OIDOID, INT8OID, INT8OID};
	Datum		values[3];
	uint64		n;

	(void) catalog_begin(&save, false);
	values[0] = ObjectIdGetDatum(relid);
	values[1] = Int64GetDatum(attempt);
	values[2] = Int64GetDatum(copied_attempt);
	n = de_privileged_sql_exec("UPDATE " RELATIONS
							   " SET sync_state = 'i', sync_attempt = $2"
							   " WHERE relid OPERATOR(pg_catalog.=) $1"
							   " AND (sync_state OPERATOR(pg_catalog.=) 'i'"
							   " OR (sync_state OPERATOR(pg_catalog.=) 'd'"
							   " AND sync_attempt OPERATOR(pg_catalog.=) $3))",
							   SPI_OK_UPDATE, 3, types, values, NULL);
	de_privileged_sql_end(&save);
	return n == 1;
}

bool
de_catalog_finish_table_sync(Oid relid, int64 attempt, XLogRecPtr lsn)
{
	DePrivilegedSql save;
	Oid			types[3] = {OIDOID, INT8OID, LSNOID};
	Datum		values[3];
	uint64		n;

	(void) catalog_begin(&save, false);
	values[0] = ObjectIdGetDatum(relid);
	values[1] = Int64GetDatum(attempt);
	values[2] = LSNGetDatum(lsn);
	n = de_privileged_sql_exec("UPDATE " RELATIONS
							   " SET sync_state = 'd', sync_lsn = $3,"
							   " sync_error = NULL, sync_failed_at = NULL"
							   " WHERE relid OPERATOR(pg_catalog.=) $1"
							   " AND sync_state OPERATOR(pg_catalog.=) 'i'"
							   " AND sync_attempt OPERATOR(pg_catalog.=) $2",
							   SPI_OK_UPDATE, 3, types, values, NULL);
	de_privileged_sql_end(&save);
	return n == 1;
}

bool
de_catalog_ready_table_sync(Oid relid, int64 attempt)
{
	DePrivilegedSql save;
	Oid			types[2] = {OIDOID, INT8OID};
	Datum		values[2];
	uint64		n;

	(void) catalog_begin(&save, false);
	values[0] = ObjectIdGetDatum(relid);
	values[1] = Int64GetDatum(attempt);
	n = de_privileged_sql_exec("UPDATE " RELATIONS
							   " SET sync_state = 'r', sync_attempt = NULL"
							   " WHERE relid OPERATOR(pg_catalog.=) $1"
							   " AND sync_state OPERATOR(pg_catalog.=) 'd'"
							   " AND sync_attempt OPERATOR(pg_catalog.=) $2",
							   SPI_OK_UPDATE, 2, types, values, NULL);
	de_privileged_sql_end(&save);
	return n == 1;
}

bool
de_catalog_fail_table_sync(Oid relid, int64 attempt, const char *error)
{
	DePrivilegedSql save;
	Oid			types[3] = {OIDOID, INT8OID, TEXTOID};
	Datum		values[3];
	uint64		n;

	(void) catalog_begin(&save, false);
	values[0] = ObjectIdGetDatum(relid);
	values[1] = Int64GetDatum(attempt);
	values[2] = CStringGetTextDatum(error);
	n = de_privileged_sql_exec("UPDATE " RELATIONS
							   " SET sync_state = 'i', sync_error = $3,"
							   " sync_failed_at = pg_catalog.clock_timestamp()"
							   " WHERE relid OPERATOR(pg_catalog.=) $1"
							   " AND ($2 OPERATOR(pg_catalog.=) 0"
							   " OR (sync_state OPERATOR(pg_catalog.=) 'i'"
							   " AND sync_attempt OPERATOR(pg_catalog.=) $2))",
							   SPI_OK_UPDATE, 3, types, values, NULL);
	de_privileged_sql_end(&save);
	return n == 1;
}

void
de_catalog_reset_table_syncs(const char *register_name)
{
	(void) catalog_exec_named("UPDATE " RELATIONS
							  " SET sync_state = 'r', sync_lsn = NULL,"
							  " sync_attempt = NULL, sync_error = NULL,"
							  " sync_failed_at = NULL"
							  " WHERE register OPERATOR(pg_catalog.=) $1"
							  " AND (sync_state OPERATOR(pg_catalog.<>) 'r'"
							  " OR sync_lsn IS NOT NULL"
							  " OR sync_error IS NOT NULL)",
							  SPI_OK_UPDATE, register_name);
}

int64
de_catalog_failed_table_syncs(const char *register_name)
{
	return (int64) catalog_exec_named("SELECT FROM " RELATIONS
									  " WHERE register OPERATOR(pg_catalog.=) $1"
									  " AND sync_state OPERATOR(pg_catalog.=) 'i'"
									  " AND sync_error IS NOT NULL",
									  SPI_OK_SELECT, register_name);
}
