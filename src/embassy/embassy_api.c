/*-------------------------------------------------------------------------
 *
 * embassy_api.c
 *		  SQL functions that configure the registers an embassy replicates:
 *		  add_register, drop_register, pause_register, resume_register.
 *
 * The registers live in the table data_embassy.registers of the database
 * that holds the replica.  These functions change that table and ask the
 * launcher to read it again when the transaction commits; the launcher then
 * starts, holds or stops the apply workers.  The table is readable only by
 * its owner because conninfo may hold a password, so the functions read and
 * write it as the owner once the caller has passed de_check_admin().
 *
 * drop_register cannot be undone: it stops the worker, drops the
 * replication slot on the register (or says how to drop it by hand when the
 * register cannot be reached) and the local replication origin, so it
 * refuses to run inside a transaction block.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/origin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "data_embassy.h"
#include "embassy/guard.h"
#include "seal/keys.h"
#include "embassy/launcher.h"
#include "embassy/status.h"
#include "embassy/walconn.h"
#include "embassy/worker.h"

/* How long drop_register waits for the apply worker to exit. */
#define DROP_STOP_TIMEOUT_MS	30000

/* The slot drop_register is stopping, for the transaction callback. */
static bool drop_callback_registered = false;
static int	drop_slot_index = -1;
static uint32 drop_slot_generation = 0;

PG_FUNCTION_INFO_V1(data_embassy_add_register);
PG_FUNCTION_INFO_V1(data_embassy_drop_register);
PG_FUNCTION_INFO_V1(data_embassy_pause_register);
PG_FUNCTION_INFO_V1(data_embassy_resume_register);

/*
 * api_register_name
 *		The register name in argument argno, checked: not NULL, not empty,
 *		short enough for a slot, and made of letters, digits, '_', '-' and
 *		'.' only.
 */
static char *
api_register_name(FunctionCallInfo fcinfo, int argno)
{
	char	   *name;
	const char *p;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("register name must not be null"));

	name = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (name[0] == '\0')
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("register name must not be empty"));
	if (strlen(name) >= NAMEDATALEN)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("register name \"%s\" is too long", name),
				errdetail("Register names are at most %d bytes long.",
						  NAMEDATALEN - 1));
	for (p = name; *p != '\0'; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' ||
			  *p == '.'))
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("register name \"%s\" contains an invalid character",
						   name),
					errhint("Register names may contain only letters, digits, underscores, hyphens and periods."));
	}
	return name;
}

/*
 * api_begin
 *		Become the owner of data_embassy.registers and connect to SPI.  The
 *		caller has checked its privileges; the previous user is restored by
 *		api_end() or by transaction abort.  Memory allocated in between is
 *		freed by api_end().
 */
static void
api_begin(Oid *save_userid, int *save_sec_context)
{
	Oid			relid;
	HeapTuple	tuple;
	Oid			owner;

	relid = get_relname_relid("registers", de_schema_oid(false));
	if (!OidIsValid(relid))
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_TABLE),
				errmsg("relation \"%s.%s\" does not exist",
					   DE_SCHEMA_NAME, "registers"));

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);

	GetUserIdAndSecContext(save_userid, save_sec_context);
	SetUserIdAndSecContext(owner,
						   *save_sec_context | SECURITY_LOCAL_USERID_CHANGE);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

static void
api_end(Oid save_userid, int save_sec_context)
{
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/*
 * api_exec
 *		Run a statement on the registers table with text parameters; NULL
 *		array entries are SQL NULLs.  Returns the number of rows.
 */
static uint64
api_exec(const char *sql, int expected, int nargs, Oid *types,
		 Datum *values, const char *nulls)
{
	int			ret;

	ret = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	if (ret != expected)
		elog(ERROR, "could not run \"%s\": %s", sql,
			 SPI_result_code_string(ret));
	return SPI_processed;
}

/* Text column "col" of row "row" of the last SPI result, palloc'd. */
static char *
api_text(int row, int col)
{
	char	   *value = SPI_getvalue(SPI_tuptable->vals[row],
									 SPI_tuptable->tupdesc, col);

	return value ? value : pstrdup("");
}

static bool
api_bool(int row, int col)
{
	bool		isnull;
	Datum		value;

	value = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						  col, &isnull);
	return !isnull && DatumGetBool(value);
}

static void
raise_unknown_register(const char *name)
{
	ereport(ERROR,
			errcode(ERRCODE_UNDEFINED_OBJECT),
			errmsg("register \"%s\" does not exist", name),
			errhint("The registers of this database are listed in data_embassy.lag."));
}

/*
 * warn_if_no_free_slot
 *		A register that gets no slot is not replicated; say so now rather
 *		than only in the server log.
 */
static void
warn_if_no_free_slot(void)
{
	int			nfree = 0;
	int			i;

	LWLockAcquire(DeShared->lock, LW_SHARED);
	for (i = 0; i < DeShared->nslots; i++)
		if (!DeShared->slots[i].in_use)
			nfree++;
	LWLockRelease(DeShared->lock);

	if (nfree == 0)
		ereport(WARNING,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("all %d register slots are in use", DeShared->nslots),
				errdetail("The register will not be replicated until a slot is free."),
				errhint("Increase \"data_embassy.max_registers\" and restart the server."));
}

/*
 * data_embassy_add_register
 *		Start replicating a register into the current database.
 */
Datum
data_embassy_add_register(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *conninfo;
	char	   *key_text;
	bool		copy_data;
	uint8		priv[DE_KEY_LEN];
	uint8		own_pub[DE_KEY_LEN];
	uint8		register_pub[DE_KEY_LEN];
	Oid			save_userid;
	int			save_sec_context;
	Oid			types[4] = {TEXTOID, TEXTOID, TEXTOID, BOOLOID};
	Datum		values[4];

	de_require_preloaded();
	de_check_admin("add a register");

	name = api_register_name(fcinfo, 0);

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("conninfo must not be null"));
	conninfo = text_to_cstring(PG_GETARG_TEXT_PP(1));
	de_conninfo_validate(conninfo);

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("register_key must not be null"));
	de_key_from_text(text_to_cstring(PG_GETARG_TEXT_PP(2)), "register_key",
					 register_pub);
	key_text = de_key_to_text(register_pub);

	if (PG_ARGISNULL(3))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("copy_data must not be null"));
	copy_data = PG_GETARG_BOOL(3);

	/*
	 * The slot on the register is named after this embassy's key and the
	 * register database's OID; the worker names it at its first connection.
	 */
	de_identity_require(priv, own_pub);
	explicit_bzero(priv, sizeof(priv));
	if (memcmp(own_pub, register_pub, DE_KEY_LEN) == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("register_key is this embassy's own public key"),
				errhint("Pass the key that data_embassy.public_key() returns on the register."));

	api_begin(&save_userid, &save_sec_context);

	values[0] = CStringGetTextDatum(name);
	if (api_exec("SELECT 1 FROM " DE_SCHEMA_NAME ".registers WHERE name = $1 "
				 "FOR UPDATE",
				 SPI_OK_SELECT, 1, types, values, NULL) > 0)
		ereport(ERROR,
				errcode(ERRCODE_DUPLICATE_OBJECT),
				errmsg("register \"%s\" already exists", name));

	values[0] = CStringGetTextDatum(key_text);
	if (api_exec("SELECT name FROM " DE_SCHEMA_NAME ".registers "
				 "WHERE register_key = $1",
				 SPI_OK_SELECT, 1, types, values, NULL) > 0)
		ereport(ERROR,
				errcode(ERRCODE_DUPLICATE_OBJECT),
				errmsg("register key is already used by register \"%s\"",
					   api_text(0, 1)));

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(conninfo);
	values[2] = CStringGetTextDatum(key_text);
	values[3] = BoolGetDatum(copy_data);
	api_exec("INSERT INTO " DE_SCHEMA_NAME ".registers "
			 "(name, conninfo, register_key, copy_data, state) "
			 "VALUES ($1, $2, $3, $4, 'init')",
			 SPI_OK_INSERT, 4, types, values, NULL);

	api_end(save_userid, save_sec_context);

	warn_if_no_free_slot();
	de_launcher_rescan_at_commit();

	PG_RETURN_VOID();
}

/*
 * set_paused
 *		Common part of pause_register and resume_register.
 */
static void
set_paused(FunctionCallInfo fcinfo, bool paused)
{
	char	   *name;
	Oid			save_userid;
	int			save_sec_context;
	Oid			types[2] = {TEXTOID, BOOLOID};
	Datum		values[2];
	bool		was_paused;
	bool		promoted;

	de_require_preloaded();
	de_check_admin(paused ? "pause a register" : "resume a register");

	name = api_register_name(fcinfo, 0);

	api_begin(&save_userid, &save_sec_context);

	values[0] = CStringGetTextDatum(name);
	if (api_exec("SELECT paused, state = 'promoted' FROM " DE_SCHEMA_NAME
				 ".registers WHERE name = $1 FOR NO KEY UPDATE",
				 SPI_OK_SELECT, 1, types, values, NULL) == 0)
		raise_unknown_register(name);
	was_paused = api_bool(0, 1);
	promoted = api_bool(0, 2);

	if (promoted)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" has been promoted", name),
				errdetail("A promoted register has no apply worker to %s.",
						  paused ? "pause" : "resume"));

	if (was_paused == paused)
	{
		api_end(save_userid, save_sec_context);
		ereport(NOTICE,
				errmsg(paused ? "register \"%s\" is already paused" :
					   "register \"%s\" is not paused", name));
		return;
	}

	values[1] = BoolGetDatum(paused);
	api_exec("UPDATE " DE_SCHEMA_NAME ".registers SET paused = $2 "
			 "WHERE name = $1",
			 SPI_OK_UPDATE, 2, types, values, NULL);

	api_end(save_userid, save_sec_context);

	de_launcher_rescan_at_commit();
}

/*
 * data_embassy_pause_register
 *		Hold a register's apply worker; pausing a paused register does
 *		nothing but say so.
 */
Datum
data_embassy_pause_register(PG_FUNCTION_ARGS)
{
	set_paused(fcinfo, true);
	PG_RETURN_VOID();
}

/*
 * data_embassy_resume_register
 *		Release a paused register; resuming a running one does nothing but
 *		say so.
 */
Datum
data_embassy_resume_register(PG_FUNCTION_ARGS)
{
	set_paused(fcinfo, false);
	PG_RETURN_VOID();
}

/*
 * drop_xact_callback
 *		At abort the slot drop_register was stopping goes back to work.  At
 *		commit it stays marked (the lag view no longer shows it) until the
 *		launcher's next scan, which no longer finds the row, frees it.
 *		Nothing here can fail.
 */
static void
drop_xact_callback(XactEvent event, void *arg)
{
	DeRegisterSlot *slot;

	if (drop_slot_index < 0)
		return;
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT)
		return;

	if (event == XACT_EVENT_ABORT)
	{
		LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
		slot = &DeShared->slots[drop_slot_index];
		if (slot->in_use && slot->generation == drop_slot_generation)
			slot->drop_requested = false;
		if (DeShared->launcher_latch != NULL)
			SetLatch(DeShared->launcher_latch);
		LWLockRelease(DeShared->lock);
	}

	drop_slot_index = -1;
}

/*
 * stop_worker
 *		Mark the register's slot as being dropped and wait until its worker
 *		has exited.  The launcher starts no worker for it any more, and a
 *		worker it started just now finds the slot taken away when it
 *		attaches.
 */
static void
stop_worker(const char *name)
{
	DeRegisterSlot *slot;
	pid_t		pid;

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	slot = de_slot_find(MyDatabaseId, name);
	if (slot == NULL)
	{
		LWLockRelease(DeShared->lock);
		return;
	}
	slot->drop_requested = true;
	drop_slot_index = slot - DeShared->slots;
	drop_slot_generation = slot->generation;
	pid = slot->worker_pid;
	if (pid != 0)
		kill(pid, SIGTERM);
	LWLockRelease(DeShared->lock);

	if (!drop_callback_registered)
	{
		RegisterXactCallback(drop_xact_callback, NULL);
		drop_callback_registered = true;
	}

	de_slot_wait_stopped(slot, drop_slot_generation, DROP_STOP_TIMEOUT_MS, name);
}

/*
 * drop_remote_slot
 *		Drop the register's replication slot for this embassy.  A register
 *		that cannot be reached gets a WARNING that names the slot and says
 *		how to drop it by hand; the rest of drop_register goes on.
 */
static void
drop_remote_slot(const char *name, const char *conninfo, const char *slot_name)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	DeWalConn  *volatile conn = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);

	PG_TRY();
	{
		conn = de_walconn_connect(conninfo, true, "data_embassy drop_register");
		de_walconn_drop_slot(conn, slot_name, true);
		de_walconn_close(conn);
		conn = NULL;

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();

		if (conn != NULL)
			de_walconn_close(conn);

		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		ereport(WARNING,
				errcode(edata->sqlerrcode),
				errmsg("could not drop replication slot of register \"%s\"",
					   name),
				errdetail("%s", edata->message),
				errhint("Replication slot \"%s\" keeps WAL on the register until it is dropped there: run \"SELECT pg_catalog.pg_drop_replication_slot('%s')\" on the register (%s).",
						slot_name, slot_name, de_conninfo_redact(conninfo)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/*
 * data_embassy_drop_register
 *		Stop replicating a register and forget it: the worker, the slot on
 *		the register, the replication origin and the row go.  The replica's
 *		tables stay, writable.
 */
Datum
data_embassy_drop_register(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *conninfo;
	char	   *slot_name;
	char	   *origin;
	Oid			save_userid;
	int			save_sec_context;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	de_require_preloaded();
	de_check_admin("drop a register");

	name = api_register_name(fcinfo, 0);

	PreventInTransactionBlock(true, "data_embassy.drop_register()");

	/*
	 * Lock the row FOR UPDATE: pause and resume wait for us, and the
	 * launcher's scans see that the register is being dropped.
	 */
	api_begin(&save_userid, &save_sec_context);
	values[0] = CStringGetTextDatum(name);
	if (api_exec("SELECT conninfo, slot_name FROM " DE_SCHEMA_NAME
				 ".registers WHERE name = $1 FOR UPDATE",
				 SPI_OK_SELECT, 1, types, values, NULL) == 0)
		raise_unknown_register(name);
	conninfo = MemoryContextStrdup(TopTransactionContext, api_text(0, 1));
	slot_name = MemoryContextStrdup(TopTransactionContext, api_text(0, 2));
	api_end(save_userid, save_sec_context);

	stop_worker(name);

	/* a register never connected to has no slot */
	if (slot_name[0] != '\0')
		drop_remote_slot(name, conninfo, slot_name);

	origin = de_origin_name(MyDatabaseId, name);
	replorigin_drop_by_name(origin, true, false);

	api_begin(&save_userid, &save_sec_context);
	values[0] = CStringGetTextDatum(name);
	api_exec("DELETE FROM " DE_SCHEMA_NAME ".registers WHERE name = $1",
			 SPI_OK_DELETE, 1, types, values, NULL);
	api_end(save_userid, save_sec_context);

	/* the register's tables are no longer guarded */
	de_guard_invalidate();
	de_launcher_rescan_at_commit();

	PG_RETURN_VOID();
}
