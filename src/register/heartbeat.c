/*-------------------------------------------------------------------------
 *
 * heartbeat.c
 *		  heartbeat(nonce): a register proves to an embassy, sealed and
 *		  fresh, that it is alive and how far its WAL goes.
 *
 * An idle register sends no frames, and the replication protocol's own
 * keepalives travel unsealed: whoever holds the network could forge them
 * and hide that every sealed frame is being dropped.  So the embassy's
 * worker calls this function over an ordinary connection every few
 * seconds with a fresh random nonce.  It writes a non-transactional logical
 * decoding message carrying the nonce and flushes it; the output plugin
 * decodes it in the embassy's stream and seals a HEARTBEAT record with the
 * nonce and the register's WAL flush position (see plugin.c).  A HEARTBEAT
 * that comes back with the nonce proves that the stream delivered
 * everything the register decoded before it, after the moment the nonce
 * was made.
 *
 * Nothing here is secret: anybody who may call the function can only make
 * the register say, sealed, where its WAL stands.
 *
 * IDENTIFICATION
 *		  src/register/heartbeat.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "utils/pg_lsn.h"

#include "data_embassy.h"
#include "privilege.h"
#include "seal/codec.h"

PG_FUNCTION_INFO_V1(data_embassy_heartbeat);

/*
 * data_embassy_heartbeat
 *		SQL: heartbeat(nonce bytea) -> pg_lsn, the message's position.
 */
Datum
data_embassy_heartbeat(PG_FUNCTION_ARGS)
{
	bytea	   *nonce = PG_GETARG_BYTEA_PP(0);
	XLogRecPtr	lsn;

	if (!has_rolreplication(GetUserId()) && !de_is_admin(GetUserId()))
		ereport(ERROR,
				errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				errmsg("permission denied to send a heartbeat to an embassy"),
				errhint("Only superusers, roles with the REPLICATION attribute and members of role \"%s\" may do this.",
						DE_ADMIN_ROLE));
	if (VARSIZE_ANY_EXHDR(nonce) != DE_HEARTBEAT_NONCE_LEN)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("heartbeat nonce must be %d bytes long",
					   DE_HEARTBEAT_NONCE_LEN),
				errdetail("It is %zu bytes long.",
						  (size_t) VARSIZE_ANY_EXHDR(nonce)));
	if (RecoveryInProgress())
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("cannot send a heartbeat during recovery"),
				errdetail("Only a register that accepts writes streams to embassies."));

	lsn = LogLogicalMessage(DE_HEARTBEAT_PREFIX, VARDATA_ANY(nonce),
							DE_HEARTBEAT_NONCE_LEN, false);

	/* the walsender decodes only flushed WAL: do not wait for the writer */
	XLogFlush(lsn);

	PG_RETURN_LSN(lsn);
}
