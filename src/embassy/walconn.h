/*-------------------------------------------------------------------------
 *
 * walconn.h
 *		  libpq connections from an embassy worker to a register: the
 *		  replication protocol, and the ordinary connection the initial copy
 *		  reads sealed frames over.  The only file that includes libpq-fe.h.
 *
 * Every call waits on the socket and the process latch together and
 * checks for interrupts, so SIGTERM and postmaster death are honoured
 * while a register is slow or unreachable.  Failures raise ERROR with
 * ERRCODE_CONNECTION_FAILURE (or the code the register sent); messages
 * never contain a password.
 *
 * IDENTIFICATION
 *		  src/embassy/walconn.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_WALCONN_H
#define DE_WALCONN_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

typedef struct DeWalConn DeWalConn;

/*
 * Check a conninfo string; raises ERRCODE_INVALID_PARAMETER_VALUE with
 * libpq's complaint (which never echoes a password).
 */
extern void de_conninfo_validate(const char *conninfo);

/* Does a (valid) conninfo carry a password? */
extern bool de_conninfo_has_password(const char *conninfo);

/* Copy of conninfo with every password value replaced by "********". */
extern char *de_conninfo_redact(const char *conninfo);

/*
 * What a conninfo would give libpq to connect with, for the TLS rule: the
 * options as libpq itself completes them (service file, PGHOST, PGSSLMODE
 * and the other environment defaults), judged without connecting.
 */
typedef struct DeConnTransport
{
	bool		local;			/* every host it may reach is this machine */
	bool		verified;		/* sslmode is verify-ca or verify-full */
	char	   *sslmode;		/* the sslmode libpq would use */
	char	   *remote_host;	/* the first host that is not local, or NULL */
	char	   *error;			/* why libpq could not complete the options */
} DeConnTransport;

extern bool de_conninfo_transport(const char *conninfo, DeConnTransport *t);

/*
 * The TLS rule: a register on another machine is reached only with
 * sslmode verify-ca or verify-full.  Reports at elevel, with sqlerrcode,
 * when conninfo breaks it (for register register_name); returns whether it
 * keeps it.
 */
extern bool de_conninfo_require_tls(const char *conninfo,
									const char *register_name,
									int elevel, int sqlerrcode);

/*
 * Connect.  replication = true adds replication=database (a walsender
 * that also accepts SQL); appname becomes application_name.
 */
extern DeWalConn *de_walconn_connect(const char *conninfo, bool replication,
									 const char *appname);
extern void de_walconn_close(DeWalConn *conn);

/*
 * Connect (replication mode), run fn, close, all in a subtransaction.
 * Returns NULL, or the error that fn or the connection raised (flushed).
 */
extern ErrorData *de_walconn_try(const char *conninfo, const char *appname,
								 void (*fn) (DeWalConn *conn, void *arg),
								 void *arg);

/* IDENTIFY_SYSTEM: system identifier, timeline, current flush LSN. */
extern void de_walconn_identify(DeWalConn *conn, uint64 *sysid,
								TimeLineID *tli, XLogRecPtr *xlogpos);

/* OID of the database the connection is attached to (SQL query). */
extern Oid	de_walconn_database_oid(DeWalConn *conn);

/* Does a replication slot of this name exist on the register? */
typedef enum DeRemoteSlotStatus
{
	DE_REMOTE_SLOT_MISSING,
	DE_REMOTE_SLOT_USABLE,
	DE_REMOTE_SLOT_LOST			/* invalidated: its WAL is gone */
} DeRemoteSlotStatus;

extern DeRemoteSlotStatus de_walconn_slot_status(DeWalConn *conn,
												 const char *slot);

/*
 * CREATE_REPLICATION_SLOT slot LOGICAL data_embassy, exporting a snapshot
 * when snapshot_name is not NULL (the snapshot lives until the next command
 * on this connection).  Returns the consistent point of the reply, which
 * travels in the clear: the initial copy seals the one to trust.
 */
extern XLogRecPtr de_walconn_create_slot(DeWalConn *conn, const char *slot,
										 char **snapshot_name);

/* The same, CREATE_REPLICATION_SLOT slot TEMPORARY LOGICAL (resync_table). */
extern XLogRecPtr de_walconn_create_temp_slot(DeWalConn *conn,
											  const char *slot,
											  char **snapshot_name);

/* DROP_REPLICATION_SLOT slot WAIT.  missing_ok: no error if absent. */
extern void de_walconn_drop_slot(DeWalConn *conn, const char *slot,
								 bool missing_ok);

/*
 * The streams started on conn from now on ask with "schemas" for the tables
 * and sequences of these schemas only (NIL: every schema; see
 * schema_list.h).
 */
extern void de_walconn_set_schemas(DeWalConn *conn, List *schemas);

/*
 * START_REPLICATION SLOT slot LOGICAL start ("embassy_key" 'key',
 * "session" 'hex', "frame_version" '2', and "history_lsn" 'X/Y' when
 * history_lsn is valid), with
 * "decoding_work_mem" too when decoding_work_mem_kb > 0, and
 * "stream_in_progress" 'on' when stream_in_progress.
 */
extern void de_walconn_start_streaming(DeWalConn *conn, const char *slot,
									   XLogRecPtr start,
									   XLogRecPtr history_lsn,
									   const char *embassy_key,
									   const uint8 *session,
									   int decoding_work_mem_kb,
									   bool stream_in_progress);

/*
 * Heartbeats, over an ordinary connection: send one (nonce of
 * DE_HEARTBEAT_NONCE_LEN bytes) without waiting, then poll until done.
 */
extern void de_walconn_heartbeat_send(DeWalConn *conn, const uint8 *nonce);
extern bool de_walconn_heartbeat_poll(DeWalConn *conn);

/* A message of the replication stream, parsed. */
typedef enum DeWalMessageKind
{
	DE_WAL_XLOGDATA,			/* 'w': here, one sealed frame */
	DE_WAL_KEEPALIVE			/* 'k': primary keepalive */
} DeWalMessageKind;

typedef struct DeWalMessage
{
	DeWalMessageKind kind;
	XLogRecPtr	start;			/* XLogData: dataStart */
	XLogRecPtr	end;			/* walEnd */
	TimestampTz send_time;
	bool		reply_requested;	/* keepalive: the sender wants a status */
	const char *data;			/* XLogData: the payload, valid until the next
								 * receive */
	int			len;
} DeWalMessage;

/*
 * Receive and parse one message without blocking.  Returns false when
 * nothing is ready (wait for the socket from de_walconn_socket()).  Raises
 * ERRCODE_CONNECTION_FAILURE when the register ended the stream, and
 * ERRCODE_PROTOCOL_VIOLATION for an empty, truncated or unknown message;
 * register_name names the register in these errors.
 */
extern bool de_walconn_receive_message(DeWalConn *conn,
									   const char *register_name,
									   DeWalMessage *msg);

/* Send one CopyData message and flush it. */
extern void de_walconn_send(DeWalConn *conn, const char *buf, int len);

/* Send a standby status update ('r') and flush it. */
extern void de_walconn_send_status(DeWalConn *conn, XLogRecPtr written,
								   XLogRecPtr flushed, XLogRecPtr applied,
								   TimestampTz now, bool request_reply);

extern pgsocket de_walconn_socket(DeWalConn *conn);

/*
 * Initial copy over an ordinary connection: import the slot's exported
 * snapshot and run data_embassy.copy_frames(embassy_key, session, slot,
 * snapshot_name[, schemas, with_rows]) in single-row mode (session:
 * DE_SESSION_LEN bytes, sent as hex): only the tables and sequences of
 * schemas (NIL: every schema), and without rows when with_rows is false
 * (the copy then describes the tables only).  de_walconn_copy_next()
 * returns the next sealed frame (valid until the next call) or NULL at the
 * end of the result.
 */
extern void de_walconn_copy_start(DeWalConn *conn, const char *snapshot_name,
								  const char *embassy_key,
								  const uint8 *session, const char *slot,
								  List *schemas, bool with_rows);
extern char *de_walconn_copy_next(DeWalConn *conn, int *len);

/* The same for one register table: copy_table_frames(..., ARRAY[oid]). */
extern void de_walconn_copy_table_start(DeWalConn *conn,
										const char *snapshot_name,
										const char *embassy_key,
										const uint8 *session,
										const char *slot, Oid remote_relid);

#endif							/* DE_WALCONN_H */
