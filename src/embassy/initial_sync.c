/*-------------------------------------------------------------------------
 *
 * initial_sync.c
 *		  The first run of a register at the embassy: create its replication
 *		  slot and apply the initial copy (without copy_data, the tables'
 *		  descriptions only).
 *
 * The apply worker calls de_initial_sync() while its register is in its
 * first run (registers.state = 'init').  The slot is created over the
 * worker's replication connection, exporting a snapshot; a second, ordinary
 * connection imports that snapshot and reads data_embassy.copy_frames(),
 * sealed frames of kind 'C', which the worker opens and applies.  Without
 * copy_data the copy carries no rows: it describes every table the
 * register replicates here, so that each becomes a guarded replica at its
 * commit (see apply.c), and seals where the slot starts.  The copy,
 * the replication origin set to the slot's consistent point and
 * registers.state = 'streaming' commit in one local transaction, so a crash
 * before that commit starts the first run over, and a crash after it
 * streams from the consistent point.
 *
 * Nothing of this that travels in the clear is trusted.  Every attempt at a
 * copy gets a fresh session key pair; the register seals the public half
 * into every frame and MACs every frame under a key only it and this
 * process can derive (frame.h), so a copy recorded from an earlier attempt,
 * or sealed by anyone else, is refused.  The register refuses to seal a
 * copy outside the snapshot exported with the slot's creation, and seals the slot's name and
 * consistent point into the copy's HELLO; the origin starts from that
 * sealed point, and a reply to CREATE_REPLICATION_SLOT that says otherwise
 * was rewritten on the way and fails the copy.
 *
 * A copy again (resync_register) empties the tables that replicate the
 * register in the same transaction, so that the copy either replaces their
 * rows or, if it fails, leaves them as they were.
 *
 * One table's trouble neither stops nor repeats the others.  Each table's
 * rows are applied in a subtransaction of their own; a row this embassy's
 * table cannot take (a NOT NULL, unique index, type, trigger or domain
 * only the embassy has: apply.c's apply_table_trouble()) rolls back that
 * table's rows only, and the copy commits without them, the table recorded
 * in replicated_relations with sync_state 'i' and the error (the table,
 * the row's key, the constraint).  From then on the apply worker copies
 * that table on its own, as resync_table() does (table_sync.c), until its
 * rows apply.  Everything else (the seal, the stream, a shutdown, a table
 * that cannot be made a replica at all) still fails the whole copy, which
 * then starts over.
 *
 * IDENTIFICATION
 *		  src/embassy/initial_sync.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "embassy/initial_sync.h"

/* application_name of the copy's connection on the register */
#define INITIAL_SYNC_APPNAME		"data_embassy copy"

/* the copy's connection, while one is open */
static DeWalConn *copy_conn = NULL;

static void initial_sync_empty_replica(const char *register_name);
static void initial_sync_set_streaming(const char *register_name);
static void initial_sync_reset_tables(const char *register_name);

/*
 * de_initial_sync_close
 *		Close the copy's connection, if one is open.
 */
void
de_initial_sync_close(void)
{
	if (copy_conn != NULL)
	{
		de_walconn_close(copy_conn);
		copy_conn = NULL;
	}
}

/*
 * initial_sync_set_streaming
 *		registers.state = 'streaming', in the current transaction.
 */
static void
initial_sync_set_streaming(const char *register_name)
{
	PushActiveSnapshot(GetTransactionSnapshot());
	de_catalog_set_streaming(register_name);
	PopActiveSnapshot();
}

/*
 * initial_sync_reset_tables
 *		A new copy starts every table of the register over: no table waits
 *		for a copy of its own any more (one that failed in an earlier copy
 *		is recorded as failed again if it fails in this one).
 */
static void
initial_sync_reset_tables(const char *register_name)
{
	PushActiveSnapshot(GetTransactionSnapshot());
	de_catalog_reset_table_syncs(register_name);
	PopActiveSnapshot();
	CommandCounterIncrement();
}

/*
 * initial_sync_empty_replica
 *		A copy again (resync_register): empty the tables that replicate
 *		this register, in the copy's transaction, so that the copy either
 *		replaces their rows or, if it fails, leaves them as they were.
 *		A first copy finds no table recorded yet.
 */
static void
initial_sync_empty_replica(const char *register_name)
{
	List	   *relids;
	StringInfoData sql;
	ListCell   *lc;
	int			ret;

	PushActiveSnapshot(GetTransactionSnapshot());
	relids = de_catalog_register_relations(register_name);

	initStringInfo(&sql);
	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);
		char	   *nspname;
		char	   *relname;

		/* dropped here meanwhile */
		relname = get_rel_name(relid);
		nspname = get_namespace_name(get_rel_namespace(relid));
		if (relname == NULL || nspname == NULL)
			continue;

		appendStringInfo(&sql, "%s%s", sql.len == 0 ? "TRUNCATE ONLY " : ", ",
						 quote_qualified_identifier(nspname, relname));
	}

	if (sql.len > 0)
	{
		ereport(LOG,
				errmsg("register \"%s\": emptying %d tables for a new copy",
					   register_name, list_length(relids)));
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		ret = SPI_execute(sql.data, false, 0);
		if (ret != SPI_OK_UTILITY)
			elog(ERROR, "could not empty the tables of register \"%s\": %s",
				 register_name, SPI_result_code_string(ret));
		SPI_finish();
	}
	PopActiveSnapshot();
	pfree(sql.data);
}

/*
 * de_initial_sync
 *		First run of a register: make the slot and apply the initial copy
 *		(without copy_data, the tables' descriptions only).  Ends with the
 *		origin at the slot's consistent point and registers.state =
 *		'streaming', committed together.
 */
void
de_initial_sync(const DeInitialSync *sync)
{
	DeRegister *reg = sync->reg;
	const char *register_name = sync->register_name;
	XLogRecPtr	consistent;
	char	   *snapshot = NULL;
	int			failed;

	/* an earlier run that failed before its commit left its slot */
	if (de_walconn_slot_status(sync->stream_conn, reg->slot_name) !=
		DE_REMOTE_SLOT_MISSING)
	{
		ereport(LOG,
				errmsg("dropping replication slot \"%s\" of an unfinished first run of register \"%s\"",
					   reg->slot_name, register_name));
		de_walconn_drop_slot(sync->stream_conn, reg->slot_name, true);
	}

	consistent = de_walconn_create_slot(sync->stream_conn, reg->slot_name,
										&snapshot);

	/* with or without rows, a sealed copy */
	{
		MemoryContext copycxt;
		DeOpener   *opener;
		char	   *frame;
		int			len;
		uint8		session_priv[DE_KEY_LEN];
		uint8		session[DE_SESSION_LEN];
		XLogRecPtr	sealed = InvalidXLogRecPtr;

		de_slot_set_state(sync->slot, DE_STATE_COPYING, NULL);
		de_slot_copy_begin(sync->slot);
		if (reg->copy_data)
			ereport(LOG,
					errmsg("register \"%s\": initial copy started at register LSN %X/%X",
						   register_name, LSN_FORMAT_ARGS(consistent)));
		else
			ereport(LOG,
					errmsg("register \"%s\": initial copy of table descriptions only started at register LSN %X/%X",
						   register_name, LSN_FORMAT_ARGS(consistent)),
					errdetail("copy_data is off: the tables keep their rows."));

		/*
		 * The snapshot lives until the next command on the replication
		 * connection, so import it before anything else happens there.
		 */
		de_x25519_generate(session_priv, session);
		copy_conn = de_walconn_connect(reg->conninfo, false,
									   INITIAL_SYNC_APPNAME);
		de_walconn_copy_start(copy_conn, snapshot, sync->own_key_text,
							  session, reg->slot_name, sync->schemas,
							  reg->copy_data);

		copycxt = AllocSetContextCreate(sync->cxt,
										"data_embassy initial copy",
										ALLOCSET_DEFAULT_SIZES);
		opener = de_opener_create(copycxt, sync->own_priv,
								  sync->register_pub->dh,
								  sync->register_pub->sign, session_priv,
								  DE_FRAME_KIND_COPY, true,
								  reg->sysid, reg->dboid);
		de_secure_zero(session_priv, sizeof(session_priv));

		de_apply_copy_begin(sync->apply, true);
		/* without rows, the tables keep theirs */
		if (reg->copy_data)
			initial_sync_empty_replica(register_name);
		initial_sync_reset_tables(register_name);
		while ((frame = de_walconn_copy_next(copy_conn, &len)) != NULL)
		{
			CHECK_FOR_INTERRUPTS();
			sync->check_stop();

			sync->apply_frame(opener, frame, len);

			/* frame 1 held the sealed HELLO: the point to start from */
			if (XLogRecPtrIsInvalid(sealed))
			{
				sealed = sync->copy_start_lsn();
				if (sealed != consistent)
					ereport(ERROR,
							errcode(ERRCODE_PROTOCOL_VIOLATION),
							errmsg("reply of register \"%s\" to CREATE_REPLICATION_SLOT was rewritten",
								   register_name),
							errdetail("The reply gave consistent point %X/%X; the register sealed %X/%X into the initial copy.",
									  LSN_FORMAT_ARGS(consistent),
									  LSN_FORMAT_ARGS(sealed)),
							errhint("Something on the path between the sites altered the replication connection.  The copy starts over at the next attempt."));
			}
		}
		if (XLogRecPtrIsInvalid(sealed))
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("initial copy of register \"%s\" is incomplete",
						   register_name),
					errdetail("The register sent no frame."));
		consistent = sealed;

		if (!de_apply_copy_done(sync->apply))
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("initial copy of register \"%s\" is incomplete",
						   register_name),
					errdetail("The register ended the copy without its COPY_END record."));

		de_initial_sync_close();
		MemoryContextDelete(copycxt);
		MemoryContextSwitchTo(sync->cxt);
	}

	/* The state, the copy and the origin at the sealed consistent point. */
	initial_sync_set_streaming(register_name);
	de_apply_commit(sync->apply, consistent, GetCurrentTimestamp());
	MemoryContextSwitchTo(sync->cxt);

	reg->phase = DE_PHASE_STREAMING;

	(void) de_apply_copy_rows(sync->apply, &failed);
	if (failed > 0)
		ereport(WARNING,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg_plural("register \"%s\" is ready to stream from %X/%X after its initial copy, which left out the rows of %d table",
							  "register \"%s\" is ready to stream from %X/%X after its initial copy, which left out the rows of %d tables",
							  failed, register_name, LSN_FORMAT_ARGS(consistent),
							  failed),
				errdetail("Every other table is copied and streams.  The tables left out are copied on their own now, and again after each failure, until their rows apply; their changes meanwhile are held by the next copy."),
				errhint("See SELECT * FROM data_embassy.table_resyncs WHERE state <> 'ready'; for why each failed."));
	else if (reg->copy_data)
		ereport(LOG,
				errmsg("register \"%s\" is ready to stream from %X/%X after its initial copy",
					   register_name, LSN_FORMAT_ARGS(consistent)));
	else
		ereport(LOG,
				errmsg("register \"%s\" is ready to stream from %X/%X after its copy of table descriptions",
					   register_name, LSN_FORMAT_ARGS(consistent)));
}
