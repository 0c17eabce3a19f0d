/*-------------------------------------------------------------------------
 *
 * embassy_api.c
 *		  SQL functions that configure the registers an embassy replicates:
 *		  add_register, alter_register, drop_register, pause_register,
 *		  resume_register, retry_register, resync_register and skip.
 *
 * The registers live in the table data_embassy.registers of the database
 * that holds the replica.  These functions change that table and ask the
 * launcher to read it again when the transaction commits; the launcher then
 * starts, holds or stops the apply workers.  The table is readable only by
 * its owner because conninfo may hold a password, so the functions read and
 * write it through catalog.c, as the owner, once the caller has passed
 * de_check_admin_call().
 *
 * drop_register cannot be undone: it stops the worker, drops the
 * replication slot on the register (or says how to drop it by hand when the
 * register cannot be reached) and the local replication origin, so it
 * refuses to run inside a transaction block.
 *
 * IDENTIFICATION
 *		  src/embassy/embassy_api.c
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
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "data_embassy.h"
#include "embassy/catalog.h"
#include "embassy/guard.h"
#include "embassy/launcher.h"
#include "embassy/replicated_set.h"
#include "embassy/status.h"
#include "embassy/walconn.h"
#include "embassy/worker.h"
#include "privilege.h"
#include "seal/keys.h"

/* How long drop_register waits for the apply worker to exit. */
#define DROP_STOP_TIMEOUT_MS	30000

/*
 * What the transaction callback must do to a register's slot at commit or
 * abort: the slot drop_register is stopping, or the one resync_register or
 * skip restarts.
 */
typedef struct PendingSlot
{
	int			index;			/* -1: none */
	uint32		generation;
} PendingSlot;

static bool xact_callback_registered = false;
static PendingSlot drop_pending = {-1, 0};
static PendingSlot restart_pending = {-1, 0};

static void api_xact_callback(XactEvent event, void *arg);
static void remember_slot(PendingSlot *pending, DeRegisterSlot *slot);

PG_FUNCTION_INFO_V1(data_embassy_add_register);
PG_FUNCTION_INFO_V1(data_embassy_alter_register);
PG_FUNCTION_INFO_V1(data_embassy_drop_register);
PG_FUNCTION_INFO_V1(data_embassy_pause_register);
PG_FUNCTION_INFO_V1(data_embassy_resume_register);
PG_FUNCTION_INFO_V1(data_embassy_retry_register);
PG_FUNCTION_INFO_V1(data_embassy_resync_register);
PG_FUNCTION_INFO_V1(data_embassy_skip);

/*
 * hide_statement_text
 *		The statement that calls add_register carries a connection string,
 *		which may hold a password: show pg_monitor (pg_stat_activity) and
 *		the server log (the STATEMENT line of an error) a fixed text that
 *		names the call without its arguments.  (log_statement, if set, has
 *		logged the real text already.)
 */
static void
hide_statement_text(void)
{
	static const char shown_text[] =
	"SELECT data_embassy.add_register(...) -- statement text hidden: it holds a connection string";

	debug_query_string = shown_text;
	pgstat_report_activity(STATE_RUNNING, shown_text);
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
	bool		require_tls;
	List	   *schemas;
	uint8		priv[DE_KEY_LEN];
	uint8		own_pub[DE_KEY_LEN];
	DePublicKey register_pub;

	de_require_preloaded();
	de_check_admin_call("data_embassy.add_register()");

	name = de_name_arg(fcinfo, 0, DE_NAME_REGISTER);

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("conninfo must not be null"));
	conninfo = text_to_cstring(PG_GETARG_TEXT_PP(1));
	hide_statement_text();
	de_conninfo_validate(conninfo);

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("register_key must not be null"));
	de_key_from_text(text_to_cstring(PG_GETARG_TEXT_PP(2)), "register_key",
					 &register_pub);
	key_text = de_key_to_text(&register_pub);

	if (PG_ARGISNULL(3))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("copy_data must not be null"));
	copy_data = PG_GETARG_BOOL(3);

	if (PG_ARGISNULL(4))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("require_tls must not be null"));
	require_tls = PG_GETARG_BOOL(4);

	schemas = de_register_schemas_arg(fcinfo, 5);

	/*
	 * The TLS rule, judged on what libpq would use now; the worker judges it
	 * again at every connection, as the service file or the environment may
	 * change.
	 */
	if (require_tls)
		(void) de_conninfo_require_tls(conninfo, name, ERROR,
									   ERRCODE_INVALID_PARAMETER_VALUE);

	/*
	 * The slot on the register is named after this embassy's key and the
	 * register database's OID; the worker names it at its first connection.
	 */
	de_identity_require(priv, own_pub);
	explicit_bzero(priv, sizeof(priv));
	if (memcmp(own_pub, register_pub.dh, DE_KEY_LEN) == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("register_key is this embassy's own public key"),
				errhint("Pass the key that data_embassy.public_key() returns on the register."));

	de_catalog_insert_register(name, conninfo, key_text, copy_data,
							   require_tls);
	if (schemas != NIL)
		de_catalog_set_schemas(name, schemas);

	if (de_conninfo_has_password(conninfo))
		ereport(WARNING,
				errcode(ERRCODE_WARNING),
				errmsg("the connection string of register \"%s\" holds a password",
					   name),
				errdetail("It is stored in data_embassy.registers, and so in every backup of this database."),
				errhint("Keep the password in a password file (the \"passfile\" connection option) or use certificate authentication instead."));

	warn_if_no_free_slot();
	de_launcher_rescan_at_commit();

	PG_RETURN_VOID();
}

/*
 * data_embassy_alter_register
 *		Change whether a register's connection must verify the server when
 *		it goes to another host.  At commit the worker starts again, so the
 *		new rule applies to its next connection at once.
 */
Datum
data_embassy_alter_register(PG_FUNCTION_ARGS)
{
	char	   *name;
	bool		require_tls;
	DeRegister *reg;
	DeRegisterSlot *slot;

	de_require_preloaded();
	de_check_admin_call("data_embassy.alter_register()");

	name = de_name_arg(fcinfo, 0, DE_NAME_REGISTER);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("require_tls must not be null"));
	require_tls = PG_GETARG_BOOL(1);

	/* waits for a drop_register of the same register */
	reg = de_catalog_get_register(name, DE_LOCK_NO_KEY_UPDATE, false);
	if (reg->phase == DE_PHASE_PROMOTED)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" has been promoted", name),
				errdetail("A promoted register is never connected to again."));

	if (reg->require_tls == require_tls)
	{
		ereport(NOTICE,
				errmsg("register \"%s\" already has require_tls %s",
					   name, require_tls ? "on" : "off"));
		PG_RETURN_VOID();
	}

	/* the safe direction is always allowed; say what the worker will do */
	if (require_tls)
		(void) de_conninfo_require_tls(reg->conninfo, name, WARNING,
									   ERRCODE_WARNING);

	de_catalog_set_require_tls(name, require_tls);
	ereport(LOG,
			errmsg("register \"%s\": require_tls set to %s by user \"%s\"",
				   name, require_tls ? "on" : "off",
				   GetUserNameFromId(GetUserId(), false)));

	LWLockAcquire(DeShared->lock, LW_SHARED);
	slot = de_slot_find(MyDatabaseId, name);
	if (slot != NULL)
		remember_slot(&restart_pending, slot);
	LWLockRelease(DeShared->lock);

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
	DeRegister *reg;

	de_require_preloaded();
	if (paused)
		de_check_admin_call("data_embassy.pause_register()");
	else
		de_check_admin_call("data_embassy.resume_register()");

	name = de_name_arg(fcinfo, 0, DE_NAME_REGISTER);

	/* waits for a drop_register of the same register */
	reg = de_catalog_get_register(name, DE_LOCK_NO_KEY_UPDATE, false);
	if (reg->phase == DE_PHASE_PROMOTED)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" has been promoted", name),
				paused ?
				errdetail("A promoted register has no apply worker to pause.") :
				errdetail("A promoted register has no apply worker to resume."));

	if (reg->paused == paused)
	{
		if (paused)
			ereport(NOTICE,
					errmsg("register \"%s\" is already paused", name));
		else
			ereport(NOTICE,
					errmsg("register \"%s\" is not paused", name));
		return;
	}

	de_catalog_set_paused(name, paused);
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
 * pending_slot_locked
 *		The slot a PendingSlot names, if it still holds that register.
 *		Caller holds DeShared->lock.
 */
static DeRegisterSlot *
pending_slot_locked(const PendingSlot *pending)
{
	DeRegisterSlot *slot;

	Assert(LWLockHeldByMe(DeShared->lock));
	if (pending->index < 0)
		return NULL;
	slot = &DeShared->slots[pending->index];
	if (!slot->in_use || slot->generation != pending->generation)
		return NULL;
	return slot;
}

/*
 * remember_slot
 *		Note a slot for the transaction callback.
 */
static void
remember_slot(PendingSlot *pending, DeRegisterSlot *slot)
{
	pending->index = slot - DeShared->slots;
	pending->generation = slot->generation;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(api_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * api_xact_callback
 *		drop_register: at abort the slot it was stopping goes back to work;
 *		at commit it stays marked (the lag view no longer shows it) until
 *		the launcher's next scan, which no longer finds the row, frees it.
 *		resync_register and skip: at commit the worker starts over at once
 *		(it then finds the register back in phase init, or the skip asked
 *		for).  Nothing here can fail.
 */
static void
api_xact_callback(XactEvent event, void *arg)
{
	DeRegisterSlot *slot;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT)
		return;
	if (drop_pending.index < 0 && restart_pending.index < 0)
		return;

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	if (event == XACT_EVENT_ABORT &&
		(slot = pending_slot_locked(&drop_pending)) != NULL)
		slot->drop_requested = false;
	if (event == XACT_EVENT_COMMIT &&
		(slot = pending_slot_locked(&restart_pending)) != NULL)
	{
		slot->failures = 0;
		slot->next_start = 0;
		if (slot->worker_pid != 0)
		{
			slot->restart_requested = true;
			if (slot->worker_latch != NULL)
				SetLatch(slot->worker_latch);
		}
	}
	if (DeShared->launcher_latch != NULL)
		SetLatch(DeShared->launcher_latch);
	LWLockRelease(DeShared->lock);

	drop_pending.index = -1;
	restart_pending.index = -1;
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
	remember_slot(&drop_pending, slot);
	pid = slot->worker_pid;
	if (pid != 0)
		kill(pid, SIGTERM);
	LWLockRelease(DeShared->lock);

	de_slot_wait_stopped(slot, drop_pending.generation, DROP_STOP_TIMEOUT_MS,
						 name);
}

/*
 * drop_remote_slot
 *		Drop the register's replication slot for this embassy.  A register
 *		that cannot be reached gets a WARNING that names the slot and says
 *		how to drop it by hand; the rest of drop_register goes on.
 */
static void
drop_slot_on(DeWalConn *conn, void *arg)
{
	de_walconn_drop_slot(conn, (const char *) arg, true);
}

static void
drop_remote_slot(const char *name, const char *conninfo, bool require_tls,
				 const char *slot_name)
{
	ErrorData  *edata;

	/* the TLS rule holds for this short connection too (warned, not sent) */
	if (require_tls &&
		!de_conninfo_require_tls(conninfo, name, WARNING,
								 ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION))
	{
		ereport(WARNING,
				errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				errmsg("replication slot of register \"%s\" was not dropped",
					   name),
				errhint("Replication slot \"%s\" keeps WAL on the register until it is dropped there: run \"SELECT pg_catalog.pg_drop_replication_slot('%s')\" on the register.",
						slot_name, slot_name));
		return;
	}

	edata = de_walconn_try(conninfo, "data_embassy drop_register",
						   drop_slot_on, (void *) slot_name);
	if (edata == NULL)
		return;

	ereport(WARNING,
			errcode(edata->sqlerrcode),
			errmsg("could not drop replication slot of register \"%s\"",
				   name),
			errdetail("%s", edata->message),
			errhint("Replication slot \"%s\" keeps WAL on the register until it is dropped there: run \"SELECT pg_catalog.pg_drop_replication_slot('%s')\" on the register (%s).",
					slot_name, slot_name, de_conninfo_redact(conninfo)));
	FreeErrorData(edata);
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
	char	   *origin;
	DeRegister *reg;

	de_require_preloaded();
	de_check_admin_call("data_embassy.drop_register()");

	name = de_name_arg(fcinfo, 0, DE_NAME_REGISTER);

	PreventInTransactionBlock(true, "data_embassy.drop_register()");

	/*
	 * Lock the row FOR UPDATE: pause and resume wait for us, and the
	 * launcher's scans see that the register is being dropped.
	 */
	reg = de_catalog_get_register(name, DE_LOCK_UPDATE, false);

	stop_worker(name);

	/* a register never connected to has no slot */
	if (reg->slot_name != NULL && reg->slot_name[0] != '\0')
		drop_remote_slot(name, reg->conninfo, reg->require_tls,
						 reg->slot_name);

	origin = de_origin_name(MyDatabaseId, name);
	replorigin_drop_by_name(origin, true, false);

	de_catalog_delete_register(name);

	/* the register's tables are no longer guarded */
	de_guard_invalidate();
	de_launcher_rescan_at_commit();

	PG_RETURN_VOID();
}

/*
 * active_register
 *		The register called name, locked FOR NO KEY UPDATE (so that a
 *		concurrent drop_register waits or wins), which must not be promoted;
 *		"action" completes "cannot ... a promoted register".
 */
static DeRegister *
active_register(const char *name, const char *action)
{
	DeRegister *reg = de_catalog_get_register(name, DE_LOCK_NO_KEY_UPDATE,
											  false);

	if (reg->phase == DE_PHASE_PROMOTED)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" has been promoted", name),
				errdetail("A promoted register is not replicated any more; there is nothing to %s.",
						  action));
	return reg;
}

/*
 * data_embassy_retry_register
 *		Start the register's worker now instead of waiting out the backoff
 *		after failures (for example after fixing a table at the embassy),
 *		and copy the tables whose copy failed now, without their backoff.
 *		Returns whether anything was brought forward: false when the worker
 *		is running and no table waits for a copy after a failure.
 */
Datum
data_embassy_retry_register(PG_FUNCTION_ARGS)
{
	char	   *name;
	DeRegister *reg;
	DeRegisterSlot *slot;
	bool		waiting = false;
	int64		tables;

	de_require_preloaded();
	de_check_admin_call("data_embassy.retry_register()");

	name = de_name_arg(fcinfo, 0, DE_NAME_REGISTER);
	reg = active_register(name, "retry");
	if (reg->paused)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" is paused", name),
				errhint("Resume it with data_embassy.resume_register('%s').",
						name));

	/* tables whose copy failed wait out a backoff of their own */
	tables = de_catalog_failed_table_syncs(name);

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	slot = de_slot_find(MyDatabaseId, name);
	if (slot != NULL && slot->worker_pid == 0 && !slot->drop_requested)
	{
		slot->failures = 0;
		slot->next_start = 0;
		waiting = true;
		if (DeShared->launcher_latch != NULL)
			SetLatch(DeShared->launcher_latch);
	}
	else if (slot != NULL && tables > 0 && !slot->drop_requested)
	{
		slot->retry_tables = true;
		waiting = true;
		if (slot->worker_latch != NULL)
			SetLatch(slot->worker_latch);
	}
	LWLockRelease(DeShared->lock);

	if (waiting && tables > 0)
		ereport(LOG,
				errmsg_plural("register \"%s\": retry requested by user \"%s\", with %lld table whose copy failed",
							  "register \"%s\": retry requested by user \"%s\", with %lld tables whose copy failed",
							  tables, name,
							  GetUserNameFromId(GetUserId(), false),
							  (long long) tables));
	else if (waiting)
		ereport(LOG,
				errmsg("register \"%s\": retry requested by user \"%s\"",
					   name, GetUserNameFromId(GetUserId(), false)));
	else
		ereport(NOTICE,
				errmsg("the worker of register \"%s\" is running; there is nothing to retry",
					   name));
	PG_RETURN_BOOL(waiting);
}

/*
 * data_embassy_resync_register
 *		Copy the register again: a new slot on the register, a new sealed
 *		initial copy, and the tables here emptied and refilled in the copy's
 *		own transaction.  Until that transaction commits the replica keeps
 *		what it had, readable and promotable.  The way back after the
 *		register lost the WAL this embassy needed, or after a drift.
 */
Datum
data_embassy_resync_register(PG_FUNCTION_ARGS)
{
	char	   *name;
	DeRegisterSlot *slot;

	de_require_preloaded();
	de_check_admin_call("data_embassy.resync_register()");

	name = de_name_arg(fcinfo, 0, DE_NAME_REGISTER);
	(void) active_register(name, "copy again");
	de_catalog_set_resync(name);

	LWLockAcquire(DeShared->lock, LW_SHARED);
	slot = de_slot_find(MyDatabaseId, name);
	if (slot != NULL)
		remember_slot(&restart_pending, slot);
	LWLockRelease(DeShared->lock);

	ereport(LOG,
			errmsg("register \"%s\": a new initial copy was requested by user \"%s\"",
				   name, GetUserNameFromId(GetUserId(), false)));
	de_launcher_rescan_at_commit();
	PG_RETURN_VOID();
}

/*
 * data_embassy_skip
 *		Skip one register transaction, named by the LSN of its commit record
 *		(the lag view's failed_commit_lsn, the "finished at" of the error
 *		context), as ALTER SUBSCRIPTION ... SKIP does: when the worker meets
 *		it, it applies nothing of it, records it in
 *		data_embassy.skipped_transactions and moves past it.  '0/0'
 *		withdraws a skip not done yet.  At commit the worker starts again at
 *		once (a running worker too), without waiting out its backoff.
 */
Datum
data_embassy_skip(PG_FUNCTION_ARGS)
{
	char	   *name;
	XLogRecPtr	lsn;
	DeRegister *reg;
	DeRegisterSlot *slot;
	RepOriginId originid;
	XLogRecPtr	progress = InvalidXLogRecPtr;

	de_require_preloaded();
	de_check_admin_call("data_embassy.skip()");

	name = de_name_arg(fcinfo, 0, DE_NAME_REGISTER);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("commit_lsn must not be null"),
				errhint("Pass the commit LSN of the transaction to skip, as the column failed_commit_lsn of data_embassy.lag shows it, or '0/0' to withdraw a skip."));
	lsn = PG_GETARG_LSN(1);

	reg = active_register(name, "skip");

	if (XLogRecPtrIsInvalid(lsn))
	{
		if (XLogRecPtrIsInvalid(reg->skip_lsn))
		{
			ereport(NOTICE,
					errmsg("register \"%s\" has no skip to withdraw", name));
			PG_RETURN_VOID();
		}
		de_catalog_set_skip(name, InvalidXLogRecPtr);
		ereport(LOG,
				errmsg("register \"%s\": skip of the transaction at %X/%X withdrawn by user \"%s\"",
					   name, LSN_FORMAT_ARGS(reg->skip_lsn),
					   GetUserNameFromId(GetUserId(), false)));
	}
	else
	{
		/* a transaction the replica has passed cannot be skipped any more */
		originid = replorigin_by_name(de_origin_name(MyDatabaseId, name),
									  true);
		if (originid != InvalidRepOriginId)
			progress = replorigin_get_progress(originid, false);
		if (!XLogRecPtrIsInvalid(progress) && lsn < progress)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("transaction at %X/%X of register \"%s\" is already behind the replica",
						   LSN_FORMAT_ARGS(lsn), name),
					errdetail("Everything up to register LSN %X/%X is applied.",
							  LSN_FORMAT_ARGS(progress)),
					errhint("Pass the commit LSN of a transaction not applied yet, as the column failed_commit_lsn of data_embassy.lag shows it."));

		de_catalog_set_skip(name, lsn);
		ereport(LOG,
				errmsg("register \"%s\": user \"%s\" asked to skip the transaction at %X/%X",
					   name, GetUserNameFromId(GetUserId(), false),
					   LSN_FORMAT_ARGS(lsn)));
	}

	/*
	 * The worker reads the skip when it starts: start it now (a paused one
	 * too, which then holds again with the skip in hand).
	 */
	LWLockAcquire(DeShared->lock, LW_SHARED);
	slot = de_slot_find(MyDatabaseId, name);
	if (slot != NULL)
		remember_slot(&restart_pending, slot);
	LWLockRelease(DeShared->lock);

	PG_RETURN_VOID();
}
