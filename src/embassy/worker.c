/*-------------------------------------------------------------------------
 *
 * worker.c
 *		  The apply worker: one background worker per register, started by
 *		  the launcher, that keeps the embassy's copy of the register.
 *
 * A run of the worker:
 *	1. attaches to its shared-memory slot (generation checked), connects to
 *	   its database and reads the register's row of data_embassy.registers;
 *	2. sets up the register's replication origin, which holds the register
 *	   LSN up to which everything is applied;
 *	3. while the register is paused, only asks the register for its WAL
 *	   position now and then, so the lag view shows the lag growing;
 *	4. connects in replication mode; the first successful connection pins
 *	   the register's system identifier and database OID, later ones must
 *	   match;
 *	5. for a new register, runs the initial sync (initial_sync.c): creates
 *	   the replication slot and, with copy_data, applies the initial copy;
 *	   the copy, the origin set to the slot's consistent point and
 *	   registers.state = 'streaming' commit in one local transaction, so a
 *	   crash before it starts over;
 *	6. streams: every XLogData message (parsed by walconn.c) holds one
 *	   sealed frame, which is opened, checked and applied record by record
 *	   (apply.c), and progress is reported to the register.
 *
 * NOTES
 *	  Exactly once.  Progress lives only in the replication origin, which
 *	  apply.c advances in the same local transaction as the changes.  The
 *	  register is told only positions that are flushed here
 *	  (de_apply_flushed()), so its slot never moves past what a crash here
 *	  would keep.  Position frames (stretches of register WAL without
 *	  anything to apply) are noted as "pending" and made durable by an empty
 *	  local commit that advances the origin, at most once per status
 *	  interval, before they are confirmed; so the slot's confirmed position
 *	  never passes the origin, and a stream that starts past the origin is a
 *	  real gap, which the frame opener refuses (de_opener_limit_start()).
 *
 *	  Exit codes.  The launcher restarts a worker that exits, after a
 *	  backoff, unless its register is paused, promoted or being dropped.
 *	  Failures (a register that cannot be reached, a frame or change that
 *	  cannot be applied) are recorded in the slot's state and last_error and
 *	  end the process with exit code 1.
 *
 *	  Memory.  Each frame is opened and applied in a context reset after the
 *	  frame, so memory is bounded by the frame, not the transaction.
 *
 * IDENTIFICATION
 *		  src/embassy/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_replication_origin.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/origin.h"
#include "replication/walreceiver.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "data_embassy.h"
#include "embassy/apply.h"
#include "embassy/catalog.h"
#include "embassy/guard.h"
#include "embassy/initial_sync.h"
#include "embassy/status.h"
#include "embassy/stream.h"
#include "embassy/table_sync.h"
#include "embassy/walconn.h"
#include "embassy/worker.h"
#include "privilege.h"
#include "seal/codec.h"
#include "seal/frame.h"
#include "seal/keys.h"

/* How often a paused worker asks the register for its WAL position. */
#define WORKER_PAUSED_IDENTIFY_MS	5000

/* Longest sleep of the streaming loop. */
#define WORKER_NAPTIME_MS			1000

/*
 * application_name of our connections on the register: the replication
 * connection goes by our slot's name once it is known (see
 * worker_appname()), so that synchronous_standby_names can name each
 * embassy of each register database; this until then.
 */
#define WORKER_APPNAME				"data_embassy"
#define WORKER_HEARTBEAT_APPNAME	"data_embassy heartbeat"

/* heartbeat nonces remembered until their proof comes back */
#define WORKER_HEARTBEATS			8

/* What a worker must do about the control flags of its slot. */
typedef enum WorkerControl
{
	WORKER_RUN,
	WORKER_PAUSE,
	WORKER_STOP					/* dropped, promoted or to start over: exit 0 */
} WorkerControl;

static DeRegisterSlot *MySlot = NULL;
static char register_name[NAMEDATALEN];

/* the register's row of data_embassy.registers, in WorkerContext */
static DeRegister reg;
static List *reg_schemas = NIL; /* registers.schemas; NIL: every schema */

static MemoryContext WorkerContext = NULL;
static MemoryContext FrameContext = NULL;

static uint8 own_priv[DE_KEY_LEN];
static uint8 own_pub[DE_KEY_LEN];
static DePublicKey register_pub;
static char *own_key_text = NULL;

static RepOriginId origin_id = InvalidRepOriginId;
static DeApply *apply = NULL;
static DeStream *streamed = NULL;

static DeWalConn *stream_conn = NULL;

/*
 * The sealed session: the public key this connection was given (its
 * private half lives only in the opener, as the session's MAC key), whether
 * the stream's HELLO has arrived, and the heartbeats asked for over hb_conn.
 */
static uint8 session[DE_SESSION_LEN];
static TimestampTz last_recv = 0;	/* the last message of the stream */
static bool ping_sent = false;	/* a reply was asked for since */
static XLogRecPtr stream_start = InvalidXLogRecPtr;
static bool hello_seen = false;
static XLogRecPtr history_lsn = InvalidXLogRecPtr;	/* asked in this stream */
static uint32 history_crc = 0;
static TimestampTz session_started_at = 0;
static bool history_unsaved = false;	/* a proof not in the catalog yet */

typedef struct WorkerHeartbeat
{
	uint8		nonce[DE_HEARTBEAT_NONCE_LEN];
	TimestampTz issued_at;		/* 0: free */
} WorkerHeartbeat;

static DeWalConn *hb_conn = NULL;
static WorkerHeartbeat heartbeats[WORKER_HEARTBEATS];
static int	hb_next = 0;
static bool hb_outstanding = false; /* a heartbeat() call is running */
static TimestampTz hb_sent_at = 0;
static TimestampTz proof_at = 0;	/* issue time of the newest proven
									 * heartbeat (sealed freshness) */

/* stream progress, mirrored into the slot once per frame */
static XLogRecPtr source_lsn = InvalidXLogRecPtr;
static XLogRecPtr received_lsn = InvalidXLogRecPtr;
static XLogRecPtr pending_position = InvalidXLogRecPtr;
static bool catching_up = false;
static bool failures_reset = false;
static bool logged_caught_up = false;	/* "caught up" logged on this
										 * connection */
static TimestampTz last_commit_time = 0;
static TimestampTz open_xact_commit_time = 0;

/* feedback */
static XLogRecPtr last_sent_flush = InvalidXLogRecPtr;
static TimestampTz last_feedback_at = 0;
static TimestampTz last_persist_at = 0;

/* the initial copy under way: counted per frame for the lag view */
static uint64 copy_relations_seen = 0;
static bool copy_end_seen = false;
static uint64 copy_rows_counted = 0;	/* added to rows_applied, not
										 * committed yet */

/* the slot's consistent point, sealed in the copy's HELLO */
static XLogRecPtr copy_hello_lsn = InvalidXLogRecPtr;

/* the frame being applied, for the error context */
static bool frame_valid = false;
static DeFrameHeader frame_hdr;

/* what the records of a frame held, for the lag view */
typedef struct FrameCounts
{
	uint64		relations;		/* RELATION records (initial copy) */
	uint64		rows;			/* INSERT records (initial copy) */
	bool		copy_end;
} FrameCounts;

static void worker_run(void);
static void worker_on_error(void) pg_attribute_noreturn();
static bool worker_is_connection_error(int sqlerrcode);
static char *worker_error_text(ErrorData *edata, bool with_detail);
static void worker_exit_stopped(void) pg_attribute_noreturn();
static WorkerControl worker_control(void);
static void worker_reload_config(void);
static bool worker_load_register(void);
static void worker_setup_origin(bool reset);
static const char *worker_appname(void);
static void worker_connect(void);
static void worker_check_identity(uint64 sysid, Oid dboid, bool pin);
static void worker_heartbeat(void);
static void worker_check_history(const DeRecord *rec);
static void worker_check_hello(const DeFrameHeader *hdr, const DeRecord *rec,
							   bool stream);
static void worker_heartbeat_proof(const DeFrameHeader *hdr,
								   const DeRecord *rec);
static void worker_initial_sync(void);
static XLogRecPtr worker_copy_start_lsn(void);
static void worker_apply_copy_frame(DeOpener *opener, const char *frame,
									size_t len);
static void worker_check_stop(void);
static void worker_paused_loop(void);
static void worker_stream(void);
static void worker_check_remote_slot(void);
static void worker_apply_frame(DeOpener *opener, const char *frame,
							   size_t len, bool stream);
static void worker_apply_records(DeReader *reader, const DeFrameHeader *hdr,
								 bool stream, const char *base,
								 FrameCounts *counts,
								 volatile size_t *resume);
static bool worker_apply_copy_records(DeReader *reader,
									  const DeFrameHeader *hdr,
									  const char *base, FrameCounts *counts);
static void worker_handle_message(DeOpener *opener, const DeWalMessage *msg);
static void worker_persist_position(bool force);
static void worker_persist_history(void);
static void worker_send_feedback(bool force, bool request_reply);
static void worker_publish(DeState state, bool contact, uint64 frames,
						   uint64 wire, uint64 plain);
static void worker_note_source(XLogRecPtr lsn);
static void worker_frame_error_callback(void *arg);
static void worker_close_connections(void);
static void worker_replay_ping(void);
static void worker_setup_skip(void);
static void worker_note_failure(void);
static void worker_uncount_copy(void);
static void worker_table_sync_poll(void);
static void worker_publish_copy(uint64 relations, uint64 rows,
								int64 applied, bool end, uint64 wire);

/*
 * de_origin_name
 *		Name of the replication origin of a register: unique in the cluster
 *		because it names the database.
 */
char *
de_origin_name(Oid dboid, const char *register_name)
{
	return psprintf("data_embassy_%u_%s", dboid, register_name);
}

/*
 * de_apply_worker_main
 *		Entry point of an apply worker.
 */
void
de_apply_worker_main(Datum main_arg)
{
	int			index = DatumGetInt32(main_arg);
	uint32		generation;
	Oid			dboid;

	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(uint32));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* a worker for a slot reused or dropped meanwhile is not wanted */
	MySlot = de_slot_attach(index, generation);
	if (MySlot == NULL)
		proc_exit(0);

	LWLockAcquire(DeShared->lock, LW_SHARED);
	dboid = MySlot->dboid;
	strlcpy(register_name, MySlot->name, NAMEDATALEN);
	LWLockRelease(DeShared->lock);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	WorkerContext = AllocSetContextCreate(TopMemoryContext,
										  "data_embassy worker",
										  ALLOCSET_DEFAULT_SIZES);
	FrameContext = AllocSetContextCreate(WorkerContext,
										 "data_embassy frame",
										 ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(WorkerContext);

	/*
	 * Apply as a replica (only replica and always triggers fire), and commit
	 * asynchronously: durability comes from confirming only flushed positions
	 * to the register, as core's apply worker does.
	 */
	SetConfigOption("session_replication_role", "replica",
					PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	de_background_session_settings();
	de_guard_exempt = true;

	PG_TRY();
	{
		worker_run();
	}
	PG_CATCH();
	{
		worker_on_error();
	}
	PG_END_TRY();

	proc_exit(0);
}

/*
 * worker_is_connection_error
 *		Does an error mean that the register could not be reached (state
 *		disconnected) rather than that something could not be applied
 *		(state error)?
 */
static bool
worker_is_connection_error(int sqlerrcode)
{
	/* class 08, except a protocol violation (08P01: a bad frame or reply) */
	if (ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_CONNECTION_EXCEPTION &&
		sqlerrcode != ERRCODE_PROTOCOL_VIOLATION)
		return true;

	switch (sqlerrcode)
	{
		case ERRCODE_ADMIN_SHUTDOWN:
		case ERRCODE_CRASH_SHUTDOWN:
		case ERRCODE_CANNOT_CONNECT_NOW:
		case ERRCODE_TOO_MANY_CONNECTIONS:
		case ERRCODE_OBJECT_IN_USE: /* the slot is still held by an old
									 * walsender */
			return true;
	}
	return false;
}

/*
 * worker_error_text
 *		What last_error shows of an error.  with_detail: the error is about
 *		reaching the register, whose detail holds libpq's or the register's
 *		own words on why; other details (a failing row, say) stay in the log.
 */
static char *
worker_error_text(ErrorData *edata, bool with_detail)
{
	if (with_detail && edata->detail != NULL)
		return psprintf("%s: %s", edata->message, edata->detail);
	return edata->message;
}

/*
 * worker_on_error
 *		Record why the run failed in the slot, log it, and exit with code 1
 *		so that the launcher starts the worker again after a backoff.
 */
static void
worker_on_error(void)
{
	ErrorData  *edata;
	DeState		state;

	HOLD_INTERRUPTS();

	MemoryContextSwitchTo(TopMemoryContext);
	edata = CopyErrorData();

	state = worker_is_connection_error(edata->sqlerrcode) ?
		DE_STATE_DISCONNECTED : DE_STATE_ERROR;
	if (MySlot != NULL)
	{
		TimestampTz now = GetCurrentTimestamp();

		/* with its detail: a register's refusal often says why only there */
		de_slot_set_state(MySlot, state, worker_error_text(edata, true));

		/* the first failure of a series: the lag view's failing_since */
		SpinLockAcquire(&MySlot->mutex);
		if (MySlot->failing_since == 0)
			MySlot->failing_since = now;
		SpinLockRelease(&MySlot->mutex);
	}

	EmitErrorReport();
	AbortOutOfAnyTransaction();
	LWLockReleaseAll();
	FlushErrorState();

	/* with no lock held any more: they take DeShared->lock */
	if (MySlot != NULL)
	{
		worker_note_failure();
		worker_uncount_copy();
	}

	if (state == DE_STATE_DISCONNECTED)
		ereport(LOG,
				errmsg("register \"%s\": disconnected from the register; the worker will try again",
					   register_name));
	else
		ereport(LOG,
				errmsg("register \"%s\": the worker stopped on an error; it will try again",
					   register_name));

	worker_close_connections();

	proc_exit(1);
}

/*
 * worker_close_connections
 *		Close what is open towards the register.
 */
static void
worker_close_connections(void)
{
	de_initial_sync_close();
	if (stream_conn != NULL)
	{
		de_walconn_close(stream_conn);
		stream_conn = NULL;
	}
	if (hb_conn != NULL)
	{
		de_walconn_close(hb_conn);
		hb_conn = NULL;
	}
	hb_outstanding = false;
}

/*
 * worker_exit_stopped
 *		The register is being dropped or was promoted: leave for good.
 */
static void
worker_exit_stopped(void)
{
	/* what promote() reads from the origin includes the last positions */
	if (apply != NULL)
		worker_persist_position(true);
	worker_close_connections();
	AbortOutOfAnyTransaction();
	worker_uncount_copy();

	LWLockAcquire(DeShared->lock, LW_SHARED);
	if (MySlot->drop_requested)
		ereport(LOG,
				errmsg("register \"%s\": worker stopped, the register is being dropped",
					   register_name));
	else if (MySlot->promoted)
		ereport(LOG,
				errmsg("register \"%s\": worker stopped for promotion",
					   register_name));
	else
		ereport(LOG,
				errmsg("register \"%s\": worker stopped to start over",
					   register_name));
	LWLockRelease(DeShared->lock);
	proc_exit(0);
}

/*
 * worker_control
 *		Read the control flags of the slot.
 */
static WorkerControl
worker_control(void)
{
	WorkerControl result = WORKER_RUN;

	LWLockAcquire(DeShared->lock, LW_SHARED);
	if (MySlot->drop_requested || MySlot->promoted ||
		MySlot->restart_requested)
		result = WORKER_STOP;
	else if (MySlot->paused)
		result = WORKER_PAUSE;
	LWLockRelease(DeShared->lock);

	return result;
}

static void
worker_reload_config(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/*
 * worker_run
 *		One run of the worker, until it is stopped or fails.
 */
static void
worker_run(void)
{
	if (!worker_load_register())
	{
		/* dropped meanwhile: the launcher frees the slot */
		proc_exit(0);
	}

	/* a promoted register is never connected to again */
	if (reg.phase == DE_PHASE_PROMOTED || worker_control() == WORKER_STOP)
	{
		if (reg.phase == DE_PHASE_PROMOTED)
			de_slot_set_state(MySlot, DE_STATE_PROMOTED, NULL);
		proc_exit(0);
	}

	de_slot_set_state(MySlot, DE_STATE_INITIALIZING, NULL);

	de_identity_require(own_priv, own_pub);
	{
		DePublicKey own_key;

		de_identity_public(&own_key);
		own_key_text = MemoryContextStrdup(WorkerContext,
										   de_key_to_text(&own_key));
	}
	de_key_from_text(reg.register_key, "register_key", &register_pub);

	worker_setup_origin(reg.phase == DE_PHASE_INIT);

	/*
	 * The views show what is durable here: a run that failed may have
	 * published positions it had not yet made durable (promote() reads the
	 * origin too, so both say the same).
	 */
	SpinLockAcquire(&MySlot->mutex);
	MySlot->applied_lsn = replorigin_session_get_progress(false);

	/*
	 * The history check outlives restarts: the proof the catalog keeps.  A
	 * register to copy (anew) starts a new history: a proof from before,
	 * perhaps of the very history that rewound, no longer counts.
	 */
	if (reg.phase == DE_PHASE_INIT)
	{
		MySlot->proof_lsn = InvalidXLogRecPtr;
		MySlot->proof_crc = 0;
	}
	else if (XLogRecPtrIsInvalid(MySlot->proof_lsn))
	{
		MySlot->proof_lsn = reg.history_lsn;
		MySlot->proof_crc = reg.history_crc;
	}
	SpinLockRelease(&MySlot->mutex);

	apply = de_apply_create(WorkerContext, register_name, origin_id);
	de_apply_adopt_rows(apply, !reg.copy_data);
	de_apply_set_schemas(apply, reg_schemas);
	streamed = de_stream_create(WorkerContext, apply, register_name,
								worker_replay_ping);
	worker_setup_skip();
	de_table_sync_start(register_name, apply);

	for (;;)
	{
		WorkerControl ctl = worker_control();

		if (ctl == WORKER_STOP)
			worker_exit_stopped();
		if (ctl == WORKER_PAUSE)
		{
			worker_paused_loop();
			if (worker_control() == WORKER_RUN)
				ereport(LOG,
						errmsg("register \"%s\": resumed", register_name));
			continue;
		}

		worker_connect();
		if (reg.phase == DE_PHASE_INIT)
			worker_initial_sync();
		worker_stream();
	}
}

/*
 * worker_load_register
 *		Read the register's row.  Returns false when it is gone (or the
 *		extension with it).
 */
static bool
worker_load_register(void)
{
	DeRegister *row;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	MemoryContextSwitchTo(WorkerContext);
	row = de_catalog_get_register(register_name, DE_LOCK_NONE, true);
	if (row != NULL)
	{
		reg = *row;
		reg_schemas = de_catalog_register_schemas(register_name);
	}

	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(WorkerContext);

	return row != NULL;
}

/*
 * worker_setup_origin
 *		Get or create the register's replication origin and take it for
 *		this session.  reset: the register is (again) in its first run, so
 *		progress left by an earlier register of the same name is forgotten.
 */
static void
worker_setup_origin(bool reset)
{
	char	   *name;

	StartTransactionCommand();

	name = de_origin_name(MyDatabaseId, register_name);
	origin_id = replorigin_by_name(name, true);
	if (origin_id == InvalidRepOriginId)
		origin_id = replorigin_create(name);
	else if (reset &&
			 !XLogRecPtrIsInvalid(replorigin_get_progress(origin_id, false)))
	{
		/* as pg_replication_origin_advance() does */
		LockRelationOid(ReplicationOriginRelationId, RowExclusiveLock);
		replorigin_advance(origin_id, InvalidXLogRecPtr, InvalidXLogRecPtr,
						   true /* go backward */ , true /* WAL log */ );
	}

	replorigin_session_setup(origin_id);
	replorigin_session_origin = origin_id;

	CommitTransactionCommand();
	MemoryContextSwitchTo(WorkerContext);
}

/*
 * worker_appname
 *		application_name of our replication connections: our slot's name on
 *		the register, unique per embassy and register database, which the
 *		register's DBA lists in synchronous_standby_names (an
 *		application_name in the register's conninfo takes precedence).
 *		Before the first connection the slot's name is not known yet.
 */
static const char *
worker_appname(void)
{
	return reg.slot_name != NULL ? reg.slot_name : WORKER_APPNAME;
}

/*
 * worker_connect
 *		Connect in replication mode and make sure it is the right register.
 */
static void
worker_connect(void)
{
	uint64		sysid;
	TimeLineID	tli;
	XLogRecPtr	xlogpos;
	Oid			dboid;
	const char *appname = worker_appname();

	de_slot_set_state(MySlot, DE_STATE_INITIALIZING, NULL);

	if (reg.require_tls)
		(void) de_conninfo_require_tls(reg.conninfo, register_name, ERROR,
									   ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION);
	stream_conn = de_walconn_connect(reg.conninfo, true, appname);
	de_walconn_identify(stream_conn, &sysid, &tli, &xlogpos);
	dboid = de_walconn_database_oid(stream_conn);

	/*
	 * xlogpos and tli travel unsealed: they are logged, never acted on.  The
	 * stream's sealed HELLO and heartbeats say where the register stands.
	 */
	worker_check_identity(sysid, dboid, true);

	/* the first connection learnt our slot's name: connect again under it */
	if (strcmp(appname, worker_appname()) != 0)
	{
		de_walconn_close(stream_conn);
		stream_conn = NULL;
		stream_conn = de_walconn_connect(reg.conninfo, true, worker_appname());
		de_walconn_identify(stream_conn, &sysid, &tli, &xlogpos);
		worker_check_identity(sysid, de_walconn_database_oid(stream_conn),
							  false);
	}
	logged_caught_up = false;

	ereport(LOG,
			errmsg("register \"%s\": connected to the register (system identifier %llu, database OID %u, timeline %u)",
				   register_name, (unsigned long long) sysid, dboid, tli));
}

/*
 * worker_check_identity
 *		The first connection pins the register's system identifier and
 *		database OID; any later one must reach the same database, so a
 *		conninfo pointed at another server cannot feed this replica.  With
 *		pin false a mismatch is reported but nothing is written.
 */
static void
worker_check_identity(uint64 sysid, Oid dboid, bool pin)
{
	if (reg.pinned)
	{
		if (sysid == reg.sysid && dboid == reg.dboid)
			return;
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" is not the database it was first connected to",
					   register_name),
				errdetail("The connection reached system identifier %llu, database OID %u; the register was first seen as system identifier %llu, database OID %u.",
						  (unsigned long long) sysid, dboid,
						  (unsigned long long) reg.sysid, reg.dboid),
				errhint("Check the register's connection string.  To replicate another database, drop the register and add it again."));
	}

	if (!pin)
		return;

	/* our slot on the register is named after our key and its database */
	reg.slot_name = MemoryContextStrdup(WorkerContext,
										de_slot_name_for_key(own_pub, dboid));

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	de_catalog_set_identity(register_name, sysid, dboid, reg.slot_name);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(WorkerContext);

	reg.pinned = true;
	reg.sysid = sysid;
	reg.dboid = dboid;
}

/*
 * worker_initial_sync
 *		First run of the register: initial_sync.c, with what it needs.
 */
static void
worker_initial_sync(void)
{
	DeInitialSync sync;

	sync.register_name = register_name;
	sync.reg = &reg;
	sync.slot = MySlot;
	sync.apply = apply;
	sync.stream_conn = stream_conn;
	sync.own_priv = own_priv;
	sync.own_key_text = own_key_text;
	sync.register_pub = &register_pub;
	sync.cxt = WorkerContext;
	sync.schemas = reg_schemas;
	sync.apply_frame = worker_apply_copy_frame;
	sync.check_stop = worker_check_stop;
	sync.copy_start_lsn = worker_copy_start_lsn;

	copy_relations_seen = 0;
	copy_end_seen = false;
	hello_seen = false;
	copy_hello_lsn = InvalidXLogRecPtr;
	copy_rows_counted = 0;

	de_initial_sync(&sync);

	/* tables the copy left out are copied on their own from now on */
	de_table_sync_start(register_name, apply);

	/* the copy's rows were counted in rows_applied as they arrived */
	(void) de_apply_take_row_count(apply);
	copy_rows_counted = 0;
}

/*
 * worker_copy_start_lsn
 *		The consistent point sealed in the copy's HELLO, or 0 before it.
 */
static XLogRecPtr
worker_copy_start_lsn(void)
{
	return copy_hello_lsn;
}

/*
 * worker_apply_copy_frame
 *		One frame of the initial copy.
 */
static void
worker_apply_copy_frame(DeOpener *opener, const char *frame, size_t len)
{
	worker_apply_frame(opener, frame, len, false);
}

/*
 * worker_check_stop
 *		Leave for good if the register is being dropped, was promoted or is
 *		to start over.
 */
static void
worker_check_stop(void)
{
	if (worker_control() == WORKER_STOP)
		worker_exit_stopped();
}

/*
 * worker_check_remote_slot
 *		Before streaming: is our slot still on the register, with the WAL
 *		we need?  A slot dropped there, or invalidated because the embassy
 *		was away longer than the register's max_slot_wal_keep_size allows,
 *		cannot be streamed from again; only a new copy can catch up.  The
 *		data here stay as they were, readable and promotable.  (What the
 *		register answers here is outside the seal: a forged answer can only
 *		stop replication, which the views then show.)
 */
static void
worker_check_remote_slot(void)
{
	DeRemoteSlotStatus status;

	status = de_walconn_slot_status(stream_conn, reg.slot_name);
	if (status == DE_REMOTE_SLOT_USABLE)
		return;

	ereport(ERROR,
			errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			errmsg("register \"%s\" no longer holds the WAL this embassy needs; a re-copy is required",
				   register_name),
			status == DE_REMOTE_SLOT_LOST ?
			errdetail("Replication slot \"%s\" on the register was invalidated, most likely because the embassy was away longer than the register's \"max_slot_wal_keep_size\" allows.",
					  reg.slot_name) :
			errdetail("Replication slot \"%s\" does not exist on the register any more.",
					  reg.slot_name),
			errhint("The replica keeps its data as of register LSN %X/%X and can be promoted.  To copy the register again, run data_embassy.resync_register('%s').",
					LSN_FORMAT_ARGS(replorigin_session_get_progress(false)),
					register_name));
}

/*
 * worker_paused_loop
 *		Hold while the register is paused.  Every few seconds ask the
 *		register for its WAL position, so the lag view shows how far the
 *		replica falls behind; a register that cannot be reached leaves the
 *		state paused but says why in last_error.
 */
static void
worker_paused_loop(void)
{
	DeWalConn  *volatile conn = NULL;
	TimestampTz next_identify = 0;

	worker_close_connections();
	de_stream_reset(streamed);
	de_apply_reset_stream(apply);
	MemoryContextSwitchTo(WorkerContext);
	de_slot_set_state(MySlot, DE_STATE_PAUSED, NULL);
	ereport(LOG,
			errmsg("register \"%s\": paused", register_name));

	for (;;)
	{
		WorkerControl ctl;
		TimestampTz now;
		long		wait_ms;

		CHECK_FOR_INTERRUPTS();
		worker_reload_config();

		ctl = worker_control();
		if (ctl == WORKER_STOP)
		{
			if (conn != NULL)
				de_walconn_close(conn);
			worker_exit_stopped();
		}
		if (ctl == WORKER_RUN)
			break;

		now = GetCurrentTimestamp();
		if (now >= next_identify)
		{
			MemoryContext oldcxt = CurrentMemoryContext;

			PG_TRY();
			{
				uint64		sysid;
				TimeLineID	tli;
				XLogRecPtr	xlogpos;

				if (conn == NULL && reg.require_tls)
					(void) de_conninfo_require_tls(reg.conninfo, register_name,
												   ERROR,
												   ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION);
				if (conn == NULL)
					conn = de_walconn_connect(reg.conninfo, true,
											  worker_appname());
				de_walconn_identify(conn, &sysid, &tli, &xlogpos);
				if (reg.pinned)
					worker_check_identity(sysid,
										  de_walconn_database_oid(conn),
										  false);
				worker_publish(DE_STATE_PAUSED, false, 0, 0, 0);
				de_slot_set_state(MySlot, DE_STATE_PAUSED, "");
			}
			PG_CATCH();
			{
				ErrorData  *edata;

				MemoryContextSwitchTo(oldcxt);
				edata = CopyErrorData();
				FlushErrorState();
				if (conn != NULL)
				{
					de_walconn_close(conn);
					conn = NULL;
				}
				de_slot_set_state(MySlot, DE_STATE_PAUSED,
								  worker_error_text(edata, true));
				FreeErrorData(edata);
			}
			PG_END_TRY();

			next_identify = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														WORKER_PAUSED_IDENTIFY_MS);
		}

		wait_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
												  next_identify);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(wait_ms, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	if (conn != NULL)
		de_walconn_close(conn);
}

/*
 * worker_stream
 *		Stream from the origin's progress until the register is paused
 *		(returns), stopped (exits) or something fails (raises).
 */
static void
worker_stream(void)
{
	MemoryContext streamcxt;
	DeOpener   *opener;
	uint8		session_priv[DE_KEY_LEN];

	streamcxt = AllocSetContextCreate(WorkerContext, "data_embassy stream",
									  ALLOCSET_DEFAULT_SIZES);

	/* a new stream: RELATION records and frame sequence start again */
	de_stream_reset(streamed);
	de_apply_reset_stream(apply);
	MemoryContextSwitchTo(WorkerContext);

	/*
	 * A fresh session key binds every frame of this stream to this
	 * connection, and its MAC to the register and this process.
	 */
	de_x25519_generate(session_priv, session);
	session_started_at = GetCurrentTimestamp();
	hello_seen = false;
	opener = de_opener_create(streamcxt, own_priv, register_pub.dh,
							  register_pub.sign, session_priv,
							  DE_FRAME_KIND_STREAM, true,
							  reg.sysid, reg.dboid);
	de_secure_zero(session_priv, sizeof(session_priv));

	/* a stream must start exactly where the replica stands */
	stream_start = replorigin_session_get_progress(false);
	if (!XLogRecPtrIsInvalid(stream_start))
		de_opener_expect_start(opener, stream_start);
	last_sent_flush = InvalidXLogRecPtr;
	last_feedback_at = 0;
	last_persist_at = GetCurrentTimestamp();

	worker_check_remote_slot();
	/* the register must still hold the last heartbeat we saw */
	SpinLockAcquire(&MySlot->mutex);
	history_lsn = MySlot->proof_lsn;
	history_crc = MySlot->proof_crc;
	SpinLockRelease(&MySlot->mutex);

	de_walconn_set_schemas(stream_conn, reg_schemas);
	de_walconn_start_streaming(stream_conn, reg.slot_name, stream_start,
							   history_lsn, own_key_text, session, de_decoding_work_mem_kb,
							   de_stream_in_progress);
	ereport(DEBUG1,
			errmsg_internal("register \"%s\": streaming from %X/%X",
							register_name, LSN_FORMAT_ARGS(stream_start)));

	catching_up = false;
	worker_publish(DE_STATE_STREAMING, false, 0, 0, 0);
	last_recv = GetCurrentTimestamp();
	ping_sent = false;

	for (;;)
	{
		WorkerControl ctl;
		TimestampTz now;
		int			rc;

		MemoryContextSwitchTo(WorkerContext);
		CHECK_FOR_INTERRUPTS();
		worker_reload_config();

		ctl = worker_control();
		if (ctl == WORKER_STOP)
			worker_exit_stopped();
		if (ctl == WORKER_PAUSE)
			break;

		/* everything that has arrived */
		for (;;)
		{
			DeWalMessage msg;

			if (!de_walconn_receive_message(stream_conn, register_name, &msg))
				break;

			last_recv = GetCurrentTimestamp();
			ping_sent = false;
			worker_handle_message(opener, &msg);
			MemoryContextSwitchTo(WorkerContext);
			worker_table_sync_poll();

			CHECK_FOR_INTERRUPTS();
			if (worker_control() != WORKER_RUN)
				break;
		}
		worker_table_sync_poll();

		worker_persist_position(false);
		worker_persist_history();
		worker_send_feedback(false, false);
		worker_heartbeat();

		/* a register that went silent: ping, then give up */
		now = GetCurrentTimestamp();
		if (wal_receiver_timeout > 0)
		{
			if (TimestampDifferenceExceeds(last_recv, now,
										   wal_receiver_timeout))
				ereport(ERROR,
						errcode(ERRCODE_CONNECTION_FAILURE),
						errmsg("no message from register \"%s\" for %d ms",
							   register_name, wal_receiver_timeout),
						errhint("The connection is considered lost after \"%s\".",
								"wal_receiver_timeout"));
			if (!ping_sent &&
				TimestampDifferenceExceeds(last_recv, now,
										   wal_receiver_timeout / 2))
			{
				worker_send_feedback(true, true);
				ping_sent = true;
			}
		}

		rc = WaitLatchOrSocket(MyLatch,
							   WL_SOCKET_READABLE | WL_LATCH_SET |
							   WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							   de_walconn_socket(stream_conn),
							   Min(de_status_interval_ms, WORKER_NAPTIME_MS),
							   PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
			ResetLatch(MyLatch);
	}

	/* paused: let go of the register, and of any half-applied transaction */
	worker_persist_position(true);
	worker_close_connections();
	de_stream_reset(streamed);
	de_apply_reset_stream(apply);
	MemoryContextSwitchTo(WorkerContext);
	MemoryContextDelete(streamcxt);
}

/*
 * worker_handle_message
 *		One message of the stream: a frame (XLogData) or a keepalive.
 */
static void
worker_handle_message(DeOpener *opener, const DeWalMessage *msg)
{
	switch (msg->kind)
	{
		case DE_WAL_XLOGDATA:
			{
				XLogRecPtr	before_flush = last_sent_flush;

				worker_apply_frame(opener, msg->data, msg->len, true);

				if (!failures_reset)
				{
					/* this run works: earlier failures are history */
					LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
					MySlot->failures = 0;
					LWLockRelease(DeShared->lock);
					de_slot_set_state(MySlot, DE_STATE_STREAMING, "");
					failures_reset = true;
				}

				/* a flush that moved is worth telling at once */
				if (de_apply_flushed(apply) > before_flush)
					worker_send_feedback(true, false);
				break;
			}

		case DE_WAL_KEEPALIVE:

			/*
			 * Keepalives travel unsealed: anyone on the path could forge
			 * them, so they prove nothing about the register and change no
			 * view.  They are answered with what is authenticated.
			 */
			if (msg->reply_requested)
				worker_send_feedback(true, false);
			break;
	}
}

/*
 * worker_apply_records
 *		Apply the records of an opened frame from the reader's position on,
 *		then what the frame left buffered.  In the initial copy, *resume is
 *		kept where the copy goes on if a table's trouble stops this: after
 *		a record that failed, or at the record before which the table's
 *		rows ended (de_apply_copy_table_end()).
 */
static void
worker_apply_records(DeReader *reader, const DeFrameHeader *hdr, bool stream,
					 const char *base, FrameCounts *counts,
					 volatile size_t *resume)
{
	DeRecord	rec;

	for (;;)
	{
		size_t		start = reader->pos;

		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(FrameContext);
		if (!de_read_record(reader, &rec))
			break;

		/* the session's first record, and heartbeats */
		if (rec.type == DE_REC_HELLO || !hello_seen)
		{
			worker_check_hello(hdr, &rec, stream);
			if (rec.type == DE_REC_HELLO)
				continue;
		}
		if (rec.type == DE_REC_HEARTBEAT)
		{
			worker_heartbeat_proof(hdr, &rec);
			continue;
		}

		/* transactions streamed before their commit: stream.c */
		if (stream &&
			de_stream_record(streamed, &rec, base + start,
							 reader->pos - start))
			continue;

		if (rec.type == DE_REC_BEGIN)
			open_xact_commit_time = rec.commit_time;
		if (!stream)
		{
			/* the rows of a table end at any other record */
			if (rec.type != DE_REC_INSERT)
			{
				*resume = start;
				de_apply_copy_table_end(apply);
			}
			*resume = reader->pos;

			/* a RELATION record starts each table */
			if (rec.type == DE_REC_RELATION)
				counts->relations++;
			else if (rec.type == DE_REC_INSERT)
				counts->rows++;
			else if (rec.type == DE_REC_COPY_END)
				counts->copy_end = true;
		}
		de_apply_set_raw(apply, base + start, reader->pos - start);
		de_apply_record(apply, &rec);
		if (rec.type == DE_REC_COMMIT)
		{
			last_commit_time = rec.commit_time;
			open_xact_commit_time = 0;
		}
	}
	de_apply_frame_end(apply);
}

/*
 * worker_apply_copy_records
 *		worker_apply_records() for a frame of the initial copy.  Returns
 *		false when a table's trouble stopped it (the table is left out, see
 *		de_apply_copy_table_failed()), with the reader where the copy goes
 *		on; any other error is raised.
 */
static bool
worker_apply_copy_records(DeReader *reader, const DeFrameHeader *hdr,
						  const char *base, FrameCounts *counts)
{
	volatile size_t resume = reader->pos;
	volatile bool done = true;

	PG_TRY();
	{
		worker_apply_records(reader, hdr, false, base, counts, &resume);
	}
	PG_CATCH();
	{
		if (!de_apply_copy_table_failed(apply, FrameContext))
			PG_RE_THROW();
		reader->pos = resume;
		done = false;
	}
	PG_END_TRY();
	return done;
}

/*
 * worker_apply_frame
 *		Open one frame and apply its records.  Raises on any failure, before
 *		anything of the frame is applied when the frame itself is bad.
 */
static void
worker_apply_frame(DeOpener *opener, const char *frame, size_t len,
				   bool stream)
{
	ErrorContextCallback errcallback;
	StringInfoData plain;
	DeFrameHeader hdr;

	MemoryContextSwitchTo(FrameContext);

	initStringInfo(&plain);
	de_opener_open(opener, frame, len, &hdr, &plain);

	errcallback.callback = worker_frame_error_callback;
	errcallback.arg = NULL;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	frame_hdr = hdr;
	frame_valid = true;

	if (!(hdr.flags & DE_FRAME_POSITION) && plain.len > 0)
	{
		DeReader	reader;
		FrameCounts counts = {0};
		uint64		applied_before = stream ? 0 :
		de_apply_copy_rows(apply, NULL);

		de_reader_init(&reader, plain.data, plain.len);
		if (stream)
			worker_apply_records(&reader, &hdr, true, plain.data, &counts,
								 NULL);
		else
		{
			/* a table's trouble leaves it out; the copy goes on after it */
			while (!worker_apply_copy_records(&reader, &hdr, plain.data,
											  &counts))
				;
			worker_publish_copy(counts.relations, counts.rows,
								(int64) de_apply_copy_rows(apply, NULL) -
								(int64) applied_before,
								counts.copy_end, len);
		}
	}

	error_context_stack = errcallback.previous;
	frame_valid = false;

	MemoryContextSwitchTo(WorkerContext);
	MemoryContextReset(FrameContext);

	if (stream)
	{
		received_lsn = hdr.end_lsn;
		worker_note_source(hdr.source_lsn);

		/*
		 * Everything up to the frame's commit_lsn is applied once no
		 * transaction is open; it becomes durable (and confirmable) at the
		 * next persist.
		 */
		if (!de_apply_in_transaction(apply) &&
			hdr.commit_lsn > pending_position)
			pending_position = hdr.commit_lsn;

		/* catching up while frames are sealed far behind the WAL end */
		catching_up = hdr.source_lsn > hdr.end_lsn &&
			hdr.source_lsn - hdr.end_lsn > (XLogRecPtr) wal_segment_size;
	}

	worker_publish(stream ? (catching_up ? DE_STATE_CATCHING_UP :
							 DE_STATE_STREAMING) : DE_STATE_COPYING,
				   false, 1, len, hdr.plain_len);
}

/*
 * worker_check_hello
 *		The first record of a stream or copy must be its sealed HELLO, and
 *		only the first.  For a stream it must name our slot and start exactly
 *		where we asked (the opener checked the frame header's start too);
 *		a register whose WAL ends before that has rewound its history.
 */
static void
worker_check_hello(const DeFrameHeader *hdr, const DeRecord *rec, bool stream)
{
	if (rec->type != DE_REC_HELLO)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("stream from register \"%s\" does not begin with its HELLO record",
					   register_name),
				errdetail("Frame %llu begins with a %s record.",
						  (unsigned long long) hdr->seq,
						  de_record_type_name(rec->type)));
	if (hello_seen)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("stream from register \"%s\" holds a second HELLO record",
					   register_name),
				errdetail("Frame %llu holds it.", (unsigned long long) hdr->seq));
	if (reg.slot_name == NULL || strcmp(rec->slot, reg.slot_name) != 0)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("stream from register \"%s\" belongs to another replication slot",
					   register_name),
				errdetail("Its HELLO names slot \"%s\"; this embassy's slot is \"%s\".",
						  rec->slot, reg.slot_name ? reg.slot_name : ""));
	if (stream)
	{
		/*
		 * The first stream of a register added without a copy asks for no
		 * position: it starts where the register's new slot stands, as the
		 * register seals it, never where an unsealed reply said.
		 */
		if (XLogRecPtrIsInvalid(stream_start))
		{
			if (rec->lsn != rec->confirmed_lsn || hdr->start_lsn != rec->lsn)
				ereport(ERROR,
						errcode(ERRCODE_PROTOCOL_VIOLATION),
						errmsg("first stream from register \"%s\" does not start at its slot's position",
							   register_name),
						errdetail("The register says decoding starts at %X/%X; its slot stands at %X/%X.",
								  LSN_FORMAT_ARGS(rec->lsn),
								  LSN_FORMAT_ARGS(rec->confirmed_lsn)));
			stream_start = rec->lsn;
		}

		/* the slot confirmed past what we applied: feedback we never sent */
		if (rec->confirmed_lsn > stream_start)
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("replication slot \"%s\" on register \"%s\" was moved past what this embassy has applied",
						   rec->slot, register_name),
					errdetail("The slot is confirmed up to %X/%X; this embassy has applied changes up to %X/%X.  The changes in between are not sent again.",
							  LSN_FORMAT_ARGS(rec->confirmed_lsn),
							  LSN_FORMAT_ARGS(stream_start)),
					errhint("Feedback was forged on the network, or the slot was advanced at the register.  Copy the register anew with data_embassy.resync_register()."));

		if (rec->lsn != stream_start || hdr->start_lsn != stream_start)
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("stream from register \"%s\" does not start where this embassy asked",
						   register_name),
					errdetail("The register says decoding starts at %X/%X; this embassy asked for %X/%X.",
							  LSN_FORMAT_ARGS(rec->lsn),
							  LSN_FORMAT_ARGS(stream_start)));
		if (rec->end_lsn < stream_start)
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("register \"%s\" has rewound its history",
						   register_name),
					errdetail("Its WAL ends at %X/%X on timeline %u, but this embassy has applied changes up to %X/%X.",
							  LSN_FORMAT_ARGS(rec->end_lsn), hdr->timeline,
							  LSN_FORMAT_ARGS(stream_start)),
					errhint("The register was restored from an older backup, or another server answers in its name.  Once the register is right, copy it anew with data_embassy.resync_register()."));

		worker_check_history(rec);

		/* the register was alive, sealing for this session, since it began */
		if (session_started_at > proof_at)
			proof_at = session_started_at;
		source_lsn = Max(source_lsn, rec->end_lsn);
	}
	else
	{
		/*
		 * The copy: its HELLO opens frame 1 and seals the slot's consistent
		 * point, which the frame header repeats; the origin starts there.
		 */
		if (hdr->seq != 1)
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("initial copy of register \"%s\" does not begin with its HELLO record",
						   register_name),
					errdetail("Its HELLO arrived in frame %llu.",
							  (unsigned long long) hdr->seq));
		if (XLogRecPtrIsInvalid(rec->lsn) || rec->lsn != hdr->start_lsn)
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("initial copy of register \"%s\" has no valid starting point",
						   register_name),
					errdetail("Its HELLO seals %X/%X; its frame header says %X/%X.",
							  LSN_FORMAT_ARGS(rec->lsn),
							  LSN_FORMAT_ARGS(hdr->start_lsn)));
		copy_hello_lsn = rec->lsn;
	}
	hello_seen = true;
}

/*
 * worker_check_history
 *		The stream's HELLO says what the register's WAL holds where the last
 *		heartbeat we saw was written.  Another record there, or none, means
 *		the register is not the history we applied: restored from an older
 *		backup, or another server answering in its name.
 */
static void
worker_check_history(const DeRecord *rec)
{
	const char *why = NULL;

	if (XLogRecPtrIsInvalid(history_lsn))
		return;
	if (rec->history_lsn != history_lsn ||
		rec->history_status == DE_HISTORY_NOT_ASKED)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("stream from register \"%s\" does not answer the history check this embassy asked for",
					   register_name),
				errdetail("This embassy asked about %X/%X; the register answered about %X/%X.",
						  LSN_FORMAT_ARGS(history_lsn),
						  LSN_FORMAT_ARGS(rec->history_lsn)));

	switch (rec->history_status)
	{
		case DE_HISTORY_FOUND:
			if (rec->crc != history_crc)
				why = "its WAL holds another record there";
			break;
		case DE_HISTORY_NO_RECORD:
			why = "no record of its WAL starts there";
			break;
		case DE_HISTORY_AHEAD:
			why = "its WAL does not reach that far";
			break;
		case DE_HISTORY_GONE:
			ereport(LOG,
					errmsg("register \"%s\": its history at %X/%X cannot be checked, that WAL was removed",
						   register_name, LSN_FORMAT_ARGS(history_lsn)));
			return;
		default:
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("stream from register \"%s\" answers the history check with unknown status %d",
						   register_name, (int) (uint8) rec->history_status));
	}
	if (why != NULL)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("register \"%s\" has rewound its history",
					   register_name),
				errdetail("This embassy received a heartbeat the register wrote at %X/%X, but %s.",
						  LSN_FORMAT_ARGS(history_lsn), why),
				errhint("The register was restored from an older backup, or another server answers in its name.  Once the register is right, copy it anew with data_embassy.resync_register()."));
}

/*
 * worker_heartbeat
 *		Every heartbeat interval, ask the register (over an ordinary
 *		connection, without waiting) for a sealed heartbeat with a fresh
 *		nonce, and collect the answer of the previous one.  A register
 *		that does not answer within wal_receiver_timeout is a lost
 *		connection.
 */
static void
worker_heartbeat(void)
{
	TimestampTz now = GetCurrentTimestamp();
	WorkerHeartbeat *hb;
	bool		requested;

	if (hb_outstanding)
	{
		if (de_walconn_heartbeat_poll(hb_conn))
			hb_outstanding = false;
		else if (wal_receiver_timeout > 0 &&
				 TimestampDifferenceExceeds(hb_sent_at, now,
											Max(wal_receiver_timeout,
												de_heartbeat_interval_ms)))
			ereport(ERROR,
					errcode(ERRCODE_CONNECTION_FAILURE),
					errmsg("register \"%s\" did not answer a heartbeat for %d ms",
						   register_name,
						   Max(wal_receiver_timeout, de_heartbeat_interval_ms)));
		if (hb_outstanding)
			return;
	}

	SpinLockAcquire(&MySlot->mutex);
	requested = MySlot->heartbeat_requested_at > hb_sent_at;
	SpinLockRelease(&MySlot->mutex);

	if (!requested && hb_sent_at != 0 &&
		!TimestampDifferenceExceeds(hb_sent_at, now, de_heartbeat_interval_ms))
		return;

	if (hb_conn == NULL)
		hb_conn = de_walconn_connect(reg.conninfo, false,
									 WORKER_HEARTBEAT_APPNAME);

	hb = &heartbeats[hb_next];
	hb_next = (hb_next + 1) % WORKER_HEARTBEATS;
	if (!pg_strong_random(hb->nonce, sizeof(hb->nonce)))
		ereport(ERROR,
				errcode(ERRCODE_INTERNAL_ERROR),
				errmsg("could not generate a random heartbeat nonce"));
	hb->issued_at = GetCurrentTimestamp();
	de_walconn_heartbeat_send(hb_conn, hb->nonce);
	hb_outstanding = true;
	hb_sent_at = hb->issued_at;
}

/*
 * worker_heartbeat_proof
 *		A sealed HEARTBEAT: if it carries a nonce we issued, the register was
 *		alive at or after the moment we made the nonce, its WAL reached
 *		flush_lsn, and we have received everything it decoded before.  Other
 *		embassies' heartbeats travel in every stream of the database; their
 *		positions are sealed, but their nonces prove no time to us.
 */
static void
worker_heartbeat_proof(const DeFrameHeader *hdr, const DeRecord *rec)
{
	int			i;

	source_lsn = Max(source_lsn, rec->end_lsn);
	for (i = 0; i < WORKER_HEARTBEATS; i++)
	{
		WorkerHeartbeat *hb = &heartbeats[i];

		if (hb->issued_at == 0 ||
			memcmp(hb->nonce, rec->nonce, DE_HEARTBEAT_NONCE_LEN) != 0)
			continue;
		if (hb->issued_at > proof_at)
			proof_at = hb->issued_at;
		hb->issued_at = 0;

		SpinLockAcquire(&MySlot->mutex);
		MySlot->proof_at = proof_at;
		MySlot->proof_flush_lsn = rec->end_lsn;
		MySlot->proof_lsn = rec->lsn;
		MySlot->proof_crc = rec->crc;
		SpinLockRelease(&MySlot->mutex);
		history_unsaved = true;
		break;
	}
}

/*
 * worker_replay_ping
 *		During the replay of a long spooled transaction: tell the register
 *		we are alive, so its walsender does not time out.
 */
static void
worker_replay_ping(void)
{
	worker_send_feedback(true, false);
}

/*
 * worker_frame_error_callback
 *		Name the frame being applied.
 */
static void
worker_frame_error_callback(void *arg)
{
	if (!frame_valid)
		return;
	errcontext("frame %llu of register \"%s\" covering %X/%X to %X/%X",
			   (unsigned long long) frame_hdr.seq, register_name,
			   LSN_FORMAT_ARGS(frame_hdr.start_lsn),
			   LSN_FORMAT_ARGS(frame_hdr.end_lsn));
}

/*
 * worker_persist_position
 *		Make the pending position durable: an empty local commit that
 *		advances the origin.  Only then may it be confirmed to the register.
 *		At most once per status interval unless forced.
 */
static void
worker_persist_position(bool force)
{
	TimestampTz now;

	if (de_apply_in_transaction(apply) ||
		pending_position <= de_apply_last_applied(apply))
		return;

	now = GetCurrentTimestamp();
	if (!force &&
		!TimestampDifferenceExceeds(last_persist_at, now,
									de_status_interval_ms))
		return;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	/* a commit record carries the origin only when it has a transaction id */
	(void) GetTopTransactionId();
	de_apply_commit(apply, pending_position, now);
	MemoryContextSwitchTo(WorkerContext);

	last_persist_at = now;
}

/*
 * worker_persist_history
 *		Keep the latest proven heartbeat in the catalog, between
 *		transactions, so that the first stream after a restart of the
 *		embassy is checked against the register's history too.
 */
static void
worker_persist_history(void)
{
	XLogRecPtr	lsn;
	uint32		crc;

	if (!history_unsaved || de_apply_in_transaction(apply))
		return;

	SpinLockAcquire(&MySlot->mutex);
	lsn = MySlot->proof_lsn;
	crc = MySlot->proof_crc;
	SpinLockRelease(&MySlot->mutex);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	/* the row locked by promote() or drop_register(): another time */
	history_unsaved = !de_catalog_set_history(register_name, lsn, crc);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(WorkerContext);
}

/*
 * worker_send_feedback
 *		Standby status update: received, flushed (durable here) and applied
 *		positions.  Unless forced, only when the flushed position moved or a
 *		status interval has passed.
 */
static void
worker_send_feedback(bool force, bool request_reply)
{
	XLogRecPtr	flushed;
	XLogRecPtr	applied;
	XLogRecPtr	written;
	TimestampTz now = GetCurrentTimestamp();

	if (stream_conn == NULL)
		return;

	flushed = de_apply_flushed(apply);
	if (!force && flushed == last_sent_flush &&
		!TimestampDifferenceExceeds(last_feedback_at, now,
									de_status_interval_ms))
		return;

	/* as the register shows them: replay <= flush <= write */
	applied = Min(de_apply_last_applied(apply), flushed);
	written = Max(received_lsn, flushed);

	de_walconn_send_status(stream_conn, written, flushed, applied, now,
						   request_reply);

	last_sent_flush = flushed;
	last_feedback_at = now;
}

/*
 * worker_note_source
 *		The register reported its WAL position: in a sealed frame's header,
 *		or in answer to IDENTIFY_SYSTEM.  The latest report wins, so a forged
 *		answer cannot stick: the next frame corrects it.  Keepalives, which
 *		anyone on the path could forge, only prove the register is alive.
 */
static void
worker_note_source(XLogRecPtr lsn)
{
	source_lsn = lsn;
}

/*
 * worker_publish
 *		Mirror progress into the slot: once per frame, never per row.
 *		contact: a sealed message from the register just arrived (every
 *		frame counts as one).  Only sealed data moves source_lsn and the
 *		contact time; behind_since and failing_since live in the slot, so a
 *		retry does not reset them.  A slot that promote() marked promoting
 *		keeps that state.
 */
static void
worker_publish(DeState state, bool contact, uint64 frames, uint64 wire,
			   uint64 plain)
{
	XLogRecPtr	applied = Max(de_apply_last_applied(apply), pending_position);
	uint64		rows = de_apply_take_row_count(apply);
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz pending_since;

	pending_since = de_apply_in_transaction(apply) ? open_xact_commit_time : 0;

	/* once per connection: the first time nothing is left to apply */
	if (!logged_caught_up && state == DE_STATE_STREAMING &&
		!XLogRecPtrIsInvalid(source_lsn) && !XLogRecPtrIsInvalid(applied) &&
		applied >= source_lsn)
	{
		logged_caught_up = true;
		ereport(LOG,
				errmsg("register \"%s\": caught up with the register at %X/%X",
					   register_name, LSN_FORMAT_ARGS(applied)));
	}

	SpinLockAcquire(&MySlot->mutex);
	if (MySlot->state != DE_STATE_PROMOTING)
		MySlot->state = state;
	if (!XLogRecPtrIsInvalid(source_lsn))
	{
		MySlot->source_lsn = source_lsn;
		/* behind since the sealed source first passed what is applied */
		if (source_lsn > applied)
		{
			if (MySlot->behind_since == 0)
				MySlot->behind_since = now;
		}
		else
			MySlot->behind_since = 0;
	}
	if (!XLogRecPtrIsInvalid(received_lsn))
		MySlot->received_lsn = received_lsn;
	if (!XLogRecPtrIsInvalid(applied))
		MySlot->applied_lsn = applied;
	if (last_commit_time != 0)
		MySlot->last_applied_commit_at = last_commit_time;
	if (proof_at > MySlot->contact_at)
		MySlot->contact_at = proof_at;
	if (contact || frames > 0)
		MySlot->last_message_at = now;
	/* a run that streams ends a series of failures, as failures = 0 does */
	if (frames > 0 &&
		(state == DE_STATE_STREAMING || state == DE_STATE_CATCHING_UP))
		MySlot->failing_since = 0;
	MySlot->pending_since = pending_since;
	MySlot->frames_applied += frames;
	MySlot->rows_applied += rows;
	MySlot->wire_bytes += wire;
	MySlot->plain_bytes += plain;
	SpinLockRelease(&MySlot->mutex);
}

/*
 * worker_publish_copy
 *		Progress of the initial copy, once per frame: how many tables it
 *		holds (sealed at its start), the frame's tables (RELATION records),
 *		rows received and bytes, and the change in rows
 *		applied (negative when a table's rows were left out).  Applied rows
 *		count in rows_applied at once, though they commit only with the
 *		whole copy (a copy that fails takes them back, worker_uncount_copy).
 */
static void
worker_publish_copy(uint64 relations, uint64 rows, int64 applied, bool end,
					uint64 wire)
{
	int			planned;

	copy_relations_seen += relations;
	copy_end_seen = copy_end_seen || end;
	copy_rows_counted += applied;

	planned = de_apply_copy_tables_planned(apply);
	SpinLockAcquire(&MySlot->mutex);
	if (planned >= 0)
		MySlot->copy_tables_total = planned;
	/* a table is done once the next one starts, or the copy ends */
	if (copy_end_seen)
		MySlot->copy_tables_done = copy_relations_seen;
	else if (copy_relations_seen > 0)
		MySlot->copy_tables_done = copy_relations_seen - 1;
	MySlot->copy_rows += rows;
	MySlot->copy_bytes += wire;
	if (applied >= 0 || MySlot->rows_applied >= (uint64) -applied)
		MySlot->rows_applied += applied;
	else
		MySlot->rows_applied = 0;
	SpinLockRelease(&MySlot->mutex);
}

/*
 * worker_uncount_copy
 *		A copy that will not commit: its rows leave rows_applied again.
 */
static void
worker_uncount_copy(void)
{
	if (copy_rows_counted == 0)
		return;
	SpinLockAcquire(&MySlot->mutex);
	MySlot->rows_applied -= Min(MySlot->rows_applied, copy_rows_counted);
	SpinLockRelease(&MySlot->mutex);
	copy_rows_counted = 0;
}

/*
 * worker_setup_skip
 *		At the start of a run: hand the skip() asked for to the apply, or
 *		withdraw it when the origin has passed it already (the transaction
 *		was applied, or there was none there); and decide whether streamed
 *		transactions may be applied as they arrive.  They may not while a
 *		skip is pending, nor may the one an earlier run failed in: spooled
 *		and applied at its commit, a transaction has a known commit LSN,
 *		which the lag view shows and skip() takes.
 */
static void
worker_setup_skip(void)
{
	XLogRecPtr	progress = replorigin_session_get_progress(false);
	TransactionId spool_xid;

	if (!XLogRecPtrIsInvalid(reg.skip_lsn) &&
		!XLogRecPtrIsInvalid(progress) && reg.skip_lsn < progress)
	{
		ereport(WARNING,
				errmsg("register \"%s\": skip of the transaction at %X/%X withdrawn, the replica has passed it",
					   register_name, LSN_FORMAT_ARGS(reg.skip_lsn)),
				errdetail("Everything up to %X/%X is applied already.",
						  LSN_FORMAT_ARGS(progress)));
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		de_catalog_set_skip(register_name, InvalidXLogRecPtr);
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextSwitchTo(WorkerContext);
		reg.skip_lsn = InvalidXLogRecPtr;
	}

	if (!XLogRecPtrIsInvalid(reg.skip_lsn))
		ereport(LOG,
				errmsg("register \"%s\": the transaction at %X/%X will be skipped",
					   register_name, LSN_FORMAT_ARGS(reg.skip_lsn)));
	de_apply_set_skip_lsn(apply, reg.skip_lsn);

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	spool_xid = MySlot->spool_xid;
	MySlot->spool_xid = InvalidTransactionId;
	LWLockRelease(DeShared->lock);

	de_stream_set_direct(streamed, XLogRecPtrIsInvalid(reg.skip_lsn),
						 spool_xid);
}

/*
 * worker_table_sync_poll
 *		Between transactions: tables copied again (table_sync.c).  While
 *		one is, streamed transactions are spooled.
 */
static void
worker_table_sync_poll(void)
{
	bool		retry;

	if (de_apply_in_transaction(apply) || IsTransactionState())
		return;

	/*
	 * retry_register(): tables whose copy failed, without their backoff (an
	 * unlocked look first: this runs between any two messages)
	 */
	if (MySlot->retry_tables)
	{
		LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
		retry = MySlot->retry_tables;
		MySlot->retry_tables = false;
		LWLockRelease(DeShared->lock);
		if (retry)
			(void) de_table_sync_retry();
	}
	de_stream_hold_direct(streamed,
						  de_table_sync_poll(replorigin_session_get_progress(false)));
}

/*
 * worker_note_failure
 *		While handling an error: if it was raised applying a register
 *		transaction, show its commit LSN (what skip() takes) next to
 *		last_error, and have the next run spool the transaction if it was
 *		a streamed one, so that the LSN is known next time.
 */
static void
worker_note_failure(void)
{
	TransactionId xid;
	XLogRecPtr	commit_lsn;
	bool		was_streamed;

	if (apply == NULL ||
		!de_apply_failed_transaction(apply, &xid, &commit_lsn, &was_streamed))
		return;

	SpinLockAcquire(&MySlot->mutex);
	MySlot->failed_commit_lsn = commit_lsn;
	SpinLockRelease(&MySlot->mutex);

	if (was_streamed)
	{
		LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
		MySlot->spool_xid = xid;
		LWLockRelease(DeShared->lock);
	}
}
