/*-------------------------------------------------------------------------
 *
 * walconn.c
 *		  libpq connections from an embassy to a register: the replication
 *		  protocol for the change stream, and an ordinary connection for the
 *		  initial copy.
 *
 * Modelled on PostgreSQL's libpqwalreceiver.c.  libpq is only ever driven
 * asynchronously (PQconnectStartParams/PQconnectPoll, PQsendQuery with
 * PQisBusy/PQconsumeInput, a non-blocking socket): every wait goes through
 * WaitLatchOrSocket() with WL_EXIT_ON_PM_DEATH, and a set latch leads to
 * CHECK_FOR_INTERRUPTS(), so SIGTERM, query cancel and postmaster death are
 * honoured however slow or silent the register is.
 *
 * Errors.  Failures to reach or talk to the register raise
 * ERRCODE_CONNECTION_FAILURE with libpq's message; an error the register
 * itself reported keeps the register's SQLSTATE, detail and hint.  libpq
 * never puts a password into its messages; conninfo strings are shown only
 * through de_conninfo_redact(), and libpq's complaints about a conninfo
 * that does not parse have their quoted fragments (which may be pieces of a
 * password) replaced before they are shown.
 *
 * This is the only file that includes libpq-fe.h.
 *
 * IDENTIFICATION
 *		  src/embassy/walconn.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/connect.h"
#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "data_embassy.h"
#include "embassy/walconn.h"
#include "seal/codec.h"
#include "seal/frame.h"
#include "schema_list.h"
#include "utils/builtins.h"

/* Defaults added when the user's conninfo does not set them. */
#define WALCONN_CONNECT_TIMEOUT		"30"
#define WALCONN_KEEPALIVES_IDLE		"30"
#define WALCONN_KEEPALIVES_INTERVAL	"10"
#define WALCONN_KEEPALIVES_COUNT	"3"

struct DeWalConn
{
	PGconn	   *conn;
	char	   *recvbuf;		/* last CopyData message, or NULL */
	PGresult   *rowres;			/* last row of the copy result, or NULL */
	bool		copying;		/* copy_frames result being read */
	StringInfo	sendbuf;		/* status update being built, or NULL */
	char	   *schemas;		/* "schemas" option value, or NULL */
};

static void walconn_wait(DeWalConn *conn, int io_flags);
static XLogRecPtr walconn_create_slot(DeWalConn *conn, const char *slot,
									  bool temporary, char **snapshot_name);
static void walconn_copy_start(DeWalConn *conn, const char *snapshot_name,
							   const char *embassy_key, const uint8 *session,
							   const char *slot, List *schemas,
							   bool with_rows, Oid remote_relid);
static void walconn_flush(DeWalConn *conn, const char *what);
static PGresult *walconn_get_result(DeWalConn *conn, const char *what);
static PGresult *walconn_exec(DeWalConn *conn, const char *query,
							  const char *what);
static void walconn_expect(DeWalConn *conn, PGresult *res,
						   ExecStatusType expected, const char *what);
static void walconn_report(DeWalConn *conn, PGresult *res,
						   const char *what) pg_attribute_noreturn();
static void walconn_connection_error(DeWalConn *conn,
									 const char *what) pg_attribute_noreturn();
static char *walconn_scrub(const char *msg);
static char *walconn_quote_identifier(DeWalConn *conn, const char *ident);
static char *walconn_quote_literal(DeWalConn *conn, const char *str);
static XLogRecPtr walconn_parse_lsn(const char *str, const char *what);
static void walconn_expect_shape(PGresult *res, int ntuples, int nfields,
								 const char *what);

/*
 * walconn_scrub
 *		libpq's complaint about a conninfo string, with every quoted fragment
 *		that is not a connection keyword replaced by "...".  A malformed URI
 *		or value can make libpq quote the text around the error, password
 *		included.
 */
static char *
walconn_scrub(const char *msg)
{
	PQconninfoOption *defs = PQconndefaults();
	StringInfoData buf;
	const char *p = msg;

	initStringInfo(&buf);
	while (*p)
	{
		const char *close;
		bool		keep = false;

		if (*p != '"' || (close = strchr(p + 1, '"')) == NULL)
		{
			appendStringInfoChar(&buf, *p++);
			continue;
		}

		/* keep keywords and single punctuation characters ("=") */
		if (close - p - 1 == 1 && !isalnum((unsigned char) p[1]))
			keep = true;
		else if (defs != NULL)
		{
			PQconninfoOption *o;

			for (o = defs; o->keyword != NULL; o++)
			{
				if (strlen(o->keyword) == (size_t) (close - p - 1) &&
					strncmp(o->keyword, p + 1, close - p - 1) == 0)
				{
					keep = true;
					break;
				}
			}
		}

		if (keep)
			appendBinaryStringInfo(&buf, p, close - p + 1);
		else
			appendStringInfoString(&buf, "\"...\"");
		p = close + 1;
	}

	if (defs != NULL)
		PQconninfoFree(defs);
	return pchomp(buf.data);
}

/*
 * de_conninfo_validate
 *		Check that conninfo parses.
 */
void
de_conninfo_validate(const char *conninfo)
{
	PQconninfoOption *opts;
	char	   *err = NULL;

	opts = PQconninfoParse(conninfo, &err);
	if (opts == NULL)
	{
		char	   *msg = err ? walconn_scrub(err) : pstrdup("out of memory");

		if (err)
			PQfreemem(err);
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid connection string: %s", msg));
	}
	PQconninfoFree(opts);
}

/*
 * de_conninfo_has_password
 *		Does conninfo (which must parse) carry a password?
 */
bool
de_conninfo_has_password(const char *conninfo)
{
	PQconninfoOption *opts;
	bool		found = false;
	char	   *err = NULL;

	opts = PQconninfoParse(conninfo, &err);
	if (opts == NULL)
	{
		if (err)
			PQfreemem(err);
		return false;
	}
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val != NULL &&
			o->val[0] != '\0')
			found = true;
	PQconninfoFree(opts);
	return found;
}

/*
 * de_conninfo_redact
 *		The options of conninfo as "keyword=value" pairs, secrets masked.
 *		A string that does not parse is not shown at all.
 */
char *
de_conninfo_redact(const char *conninfo)
{
	PQconninfoOption *opts;
	PQconninfoOption *o;
	StringInfoData buf;
	char	   *err = NULL;

	opts = PQconninfoParse(conninfo, &err);
	if (opts == NULL)
	{
		if (err)
			PQfreemem(err);
		return pstrdup("(invalid connection string)");
	}

	initStringInfo(&buf);
	for (o = opts; o->keyword != NULL; o++)
	{
		const char *v;

		if (o->val == NULL)
			continue;
		if (buf.len > 0)
			appendStringInfoChar(&buf, ' ');
		appendStringInfo(&buf, "%s=", o->keyword);

		if (strchr(o->dispchar, '*') != NULL ||
			strcmp(o->keyword, "password") == 0)
		{
			appendStringInfoString(&buf, "********");
			continue;
		}

		/* quote as libpq reads it back */
		if (o->val[0] != '\0' && strpbrk(o->val, " \t\n\r\f\v'\\") == NULL)
		{
			appendStringInfoString(&buf, o->val);
			continue;
		}
		appendStringInfoChar(&buf, '\'');
		for (v = o->val; *v; v++)
		{
			if (*v == '\'' || *v == '\\')
				appendStringInfoChar(&buf, '\\');
			appendStringInfoChar(&buf, *v);
		}
		appendStringInfoChar(&buf, '\'');
	}
	PQconninfoFree(opts);

	return buf.data;
}

/*
 * walconn_list_item
 *		Element i of a comma-separated libpq list (host, hostaddr), split as
 *		libpq splits it (no escapes); "" past its end.
 */
static char *
walconn_list_item(const char *list, int i)
{
	const char *s = list ? list : "";
	const char *e;

	for (; i > 0; i--)
	{
		s = strchr(s, ',');
		if (s == NULL)
			return pstrdup("");
		s++;
	}
	for (e = s; *e != '\0' && *e != ','; e++)
		;
	return pnstrdup(s, e - s);
}

/* Number of elements of a comma-separated libpq list; 0 when empty. */
static int
walconn_list_length(const char *list)
{
	int			n = 1;

	if (list == NULL || list[0] == '\0')
		return 0;
	for (; *list; list++)
		if (*list == ',')
			n++;
	return n;
}

/*
 * walconn_is_loopback
 *		Is addr a numeric loopback address: 127.0.0.0/8, ::1, or
 *		::ffff:127.x.y.z?  Names other than "localhost" are not resolved: a
 *		name that needs DNS is judged remote.
 */
static bool
walconn_is_loopback(const char *addr)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (pg_strcasecmp(addr, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, addr, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, addr, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6) ||
			(IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
	return false;
}

/*
 * de_conninfo_transport
 *		Judge a conninfo for the TLS rule on the options libpq would really
 *		use, without connecting.  Returns false, with t->error set, when
 *		libpq cannot complete the options (a service that is not defined,
 *		say).
 *
 * libpq offers no call that completes a conninfo with its defaults (the
 * service file, whether named by "service" or PGSERVICE, then the
 * environment, then the compiled-in defaults) other than starting a
 * connection.  So a connection is started with the conninfo expanded
 * exactly as de_walconn_connect() expands it, plus a target_session_attrs
 * value libpq rejects while checking the options: PQconnectStartParams()
 * then stops before it opens a socket, and PQconninfo() shows the
 * completed options.  That no socket was opened is checked.
 *
 * Each host libpq may try is judged: a hostaddr element if given, else the
 * host element; an empty one (the default socket directory) or a Unix
 * socket path (starting with '/' or '@') is local, and so are "localhost"
 * and the numeric loopback addresses.
 */
bool
de_conninfo_transport(const char *conninfo, DeConnTransport *t)
{
	const char *keys[3] = {"dbname", "target_session_attrs", NULL};
	const char *vals[3] = {conninfo, "(options only)", NULL};
	PGconn	   *conn;
	PQconninfoOption *opts;
	char	   *host = NULL;
	char	   *hostaddr = NULL;
	int			nhosts;

	memset(t, 0, sizeof(DeConnTransport));

	/* complain about a malformed conninfo without echoing it */
	de_conninfo_validate(conninfo);

	conn = PQconnectStartParams(keys, vals, /* expand_dbname = */ true);
	if (conn == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OUT_OF_MEMORY),
				errmsg("out of memory"));
	if (PQsocket(conn) >= 0)
	{
		PQfinish(conn);
		elog(ERROR, "libpq opened a connection while only its options were to be read");
	}

	opts = PQconninfo(conn);
	if (opts != NULL)
	{
		for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
		{
			if (o->val == NULL)
				continue;
			if (strcmp(o->keyword, "host") == 0)
				host = pstrdup(o->val);
			else if (strcmp(o->keyword, "hostaddr") == 0)
				hostaddr = pstrdup(o->val);
			else if (strcmp(o->keyword, "sslmode") == 0)
				t->sslmode = pstrdup(o->val);
		}
		PQconninfoFree(opts);
	}

	/* sslmode always has a value once libpq has filled in its defaults */
	if (t->sslmode == NULL)
	{
		t->error = walconn_scrub(PQerrorMessage(conn));
		PQfinish(conn);
		return false;
	}
	PQfinish(conn);

	t->verified = strcmp(t->sslmode, "verify-ca") == 0 ||
		strcmp(t->sslmode, "verify-full") == 0;

	/* as libpq counts the hosts it will try */
	nhosts = walconn_list_length(hostaddr);
	if (nhosts == 0)
		nhosts = Max(walconn_list_length(host), 1);

	t->local = true;
	for (int i = 0; i < nhosts; i++)
	{
		char	   *addr = walconn_list_item(hostaddr, i);
		char	   *name = walconn_list_item(host, i);
		const char *target = addr[0] != '\0' ? addr : name;
		bool		local;

		if (target[0] == '\0')
			local = true;		/* the default socket directory */
		else if (target == name && (name[0] == '/' || name[0] == '@'))
			local = true;		/* a Unix socket */
		else
			local = walconn_is_loopback(target);

		if (!local)
		{
			t->local = false;
			t->remote_host = pstrdup(target);
		}
		pfree(addr);
		pfree(name);
		if (!local)
			break;
	}
	if (host != NULL)
		pfree(host);
	if (hostaddr != NULL)
		pfree(hostaddr);

	return true;
}

/*
 * de_conninfo_require_tls
 *		Apply the TLS rule to the conninfo of register register_name.
 */
bool
de_conninfo_require_tls(const char *conninfo, const char *register_name,
						int elevel, int sqlerrcode)
{
	DeConnTransport t;

	if (!de_conninfo_transport(conninfo, &t))
	{
		ereport(elevel,
				errcode(sqlerrcode),
				errmsg("could not read the connection options of register \"%s\"",
					   register_name),
				errdetail_internal("%s", t.error));
		return false;
	}
	if (t.local || t.verified)
		return true;

	ereport(elevel,
			errcode(sqlerrcode),
			errmsg("connection to register \"%s\" must use sslmode \"%s\" or \"%s\"",
				   register_name, "verify-full", "verify-ca"),
			errdetail("Host \"%s\" is not on this machine, and libpq would connect to it with sslmode \"%s\".",
					  t.remote_host, t.sslmode),
			errhint("Add \"sslmode=verify-full\" and \"sslrootcert\" to the connection string, or opt out with \"require_tls => false\" in data_embassy.add_register() or data_embassy.alter_register()."));
	return false;
}

/*
 * walconn_wait
 *		Wait for the socket (io_flags) or the latch; process interrupts when
 *		the latch was set.
 */
static void
walconn_wait(DeWalConn *conn, int io_flags)
{
	int			rc;

	rc = WaitLatchOrSocket(MyLatch,
						   WL_EXIT_ON_PM_DEATH | WL_LATCH_SET | io_flags,
						   PQsocket(conn->conn), 0, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * walconn_connection_error
 *		Report libpq's last error as a connection failure.  msg is the
 *		complete primary message (translated by the caller); libpq's words
 *		become the detail.
 */
static void
walconn_connection_error(DeWalConn *conn, const char *msg)
{
	ereport(ERROR,
			errcode(ERRCODE_CONNECTION_FAILURE),
			errmsg_internal("%s", msg),
			errdetail_internal("%s", pchomp(PQerrorMessage(conn->conn))));
}

/*
 * walconn_flush
 *		Send everything libpq has queued, without blocking.
 */
static void
walconn_flush(DeWalConn *conn, const char *what)
{
	for (;;)
	{
		int			r = PQflush(conn->conn);

		if (r == 0)
			return;
		if (r < 0)
			walconn_connection_error(conn, what);

		/* the server may be waiting for us to read before it reads more */
		walconn_wait(conn, WL_SOCKET_WRITEABLE | WL_SOCKET_READABLE);
		if (PQconsumeInput(conn->conn) == 0)
			walconn_connection_error(conn, what);
	}
}

/*
 * walconn_get_result
 *		PQgetResult() without blocking.  NULL when the command is done.
 */
static PGresult *
walconn_get_result(DeWalConn *conn, const char *what)
{
	while (PQisBusy(conn->conn))
	{
		walconn_wait(conn, WL_SOCKET_READABLE);
		if (PQconsumeInput(conn->conn) == 0)
			walconn_connection_error(conn, what);
	}
	return PQgetResult(conn->conn);
}

/*
 * walconn_exec
 *		Run one command and return its last result (which the caller
 *		clears), or its first one when it enters COPY.  NULL only when the
 *		connection broke.
 */
static PGresult *
walconn_exec(DeWalConn *conn, const char *query, const char *what)
{
	PGresult   *last = NULL;

	if (!PQsendQuery(conn->conn, query))
		walconn_connection_error(conn, what);
	walconn_flush(conn, what);

	for (;;)
	{
		PGresult   *res = walconn_get_result(conn, what);
		ExecStatusType status;

		if (res == NULL)
			break;
		PQclear(last);
		last = res;

		status = PQresultStatus(res);
		if (status == PGRES_COPY_IN || status == PGRES_COPY_OUT ||
			status == PGRES_COPY_BOTH ||
			PQstatus(conn->conn) == CONNECTION_BAD)
			break;
	}
	return last;
}

/*
 * walconn_report
 *		Raise the error a command ended with, with msg (complete, translated
 *		by the caller) as the primary message.  An error the register sent
 *		keeps its SQLSTATE and hint, and its message and detail become the
 *		detail; anything else is a connection failure with libpq's words as
 *		the detail.  Clears res.
 */
static void
walconn_report(DeWalConn *conn, PGresult *res, const char *msg)
{
	const char *sqlstate;
	char	   *primary = NULL;
	char	   *detail = NULL;
	char	   *hint = NULL;
	int			code = ERRCODE_CONNECTION_FAILURE;

	if (res == NULL || PQresultStatus(res) != PGRES_FATAL_ERROR)
	{
		if (res != NULL)
		{
			ExecStatusType status = PQresultStatus(res);

			PQclear(res);
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg_internal("%s", msg),
					errdetail("The register answered with the unexpected result status %s.",
							  PQresStatus(status)));
		}
		walconn_connection_error(conn, msg);
	}

	sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) != NULL)
		primary = pstrdup(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
	if (PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) != NULL)
		detail = pstrdup(PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL));
	if (PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) != NULL)
		hint = pstrdup(PQresultErrorField(res, PG_DIAG_MESSAGE_HINT));
	if (sqlstate != NULL && strlen(sqlstate) == 5)
		code = MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2],
							 sqlstate[3], sqlstate[4]);
	if (primary == NULL)
		primary = pchomp(PQresultErrorMessage(res));
	PQclear(res);

	ereport(ERROR,
			errcode(code),
			errmsg_internal("%s", msg),
			detail ?
			errdetail("The register reported: %s.\n%s", primary, detail) :
			errdetail("The register reported: %s.", primary),
			hint ? errhint("%s", hint) : 0);
}

/*
 * walconn_expect
 *		Raise unless res has the expected status.  On success res is left
 *		for the caller.
 */
static void
walconn_expect(DeWalConn *conn, PGresult *res, ExecStatusType expected,
			   const char *what)
{
	if (res != NULL && PQresultStatus(res) == expected)
		return;
	walconn_report(conn, res, what);
}

/*
 * walconn_expect_shape
 *		Raise unless a result has the given numbers of rows and columns.
 */
static void
walconn_expect_shape(PGresult *res, int ntuples, int nfields,
					 const char *what)
{
	int			gotrows = PQntuples(res);
	int			gotfields = PQnfields(res);

	if (gotrows == ntuples && gotfields >= nfields)
		return;
	PQclear(res);
	ereport(ERROR,
			errcode(ERRCODE_PROTOCOL_VIOLATION),
			errmsg("invalid response from the register to %s", what),
			errdetail("Got %d rows and %d fields, expected %d rows and %d or more fields.",
					  gotrows, gotfields, ntuples, nfields));
}

/*
 * walconn_escaped
 *		libpq's escaped copy q of a string, in palloc'd memory; q NULL (out
 *		of memory, or bad encoding) is an error with message msg.
 */
static char *
walconn_escaped(DeWalConn *conn, char *q, const char *msg)
{
	char	   *result;

	if (q == NULL)
		walconn_connection_error(conn, msg);
	result = pstrdup(q);
	PQfreemem(q);
	return result;
}

static char *
walconn_quote_identifier(DeWalConn *conn, const char *ident)
{
	return walconn_escaped(conn,
						   PQescapeIdentifier(conn->conn, ident, strlen(ident)),
						   _("could not quote an identifier"));
}

static char *
walconn_quote_literal(DeWalConn *conn, const char *str)
{
	return walconn_escaped(conn, PQescapeLiteral(conn->conn, str, strlen(str)),
						   _("could not quote a literal"));
}

/*
 * walconn_parse_lsn
 *		An LSN in the text form the register sends ("16/B374D848").
 */
static XLogRecPtr
walconn_parse_lsn(const char *str, const char *what)
{
	uint32		hi;
	uint32		lo;

	if (str == NULL || sscanf(str, "%X/%X", &hi, &lo) != 2)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("invalid response from the register to %s", what),
				errdetail("Could not parse LSN \"%s\".", str ? str : ""));
	return ((uint64) hi) << 32 | lo;
}

/*
 * walconn_notice_receiver
 *		Notices and warnings the register sends (the output plugin's, for
 *		example) would otherwise go to stderr, that is into this server's
 *		log, on every reconnect: keep them at DEBUG1, with the register's
 *		name when this is its apply worker.
 */
static void
walconn_notice_receiver(void *arg, const PGresult *res)
{
	const char *prefix = "data_embassy register ";
	char	   *msg = pchomp(PQresultErrorMessage(res));

	if (MyBgworkerEntry != NULL &&
		strncmp(MyBgworkerEntry->bgw_name, prefix, strlen(prefix)) == 0)
		ereport(DEBUG1,
				errmsg_internal("message from register \"%s\": %s",
								MyBgworkerEntry->bgw_name + strlen(prefix),
								msg));
	else
		ereport(DEBUG1,
				errmsg_internal("message from the register: %s", msg));
	pfree(msg);
}

/*
 * de_walconn_connect
 *		Connect to the register.
 *
 * The user's conninfo is expanded in the middle of the parameter list:
 * defaults listed before it (connect_timeout, keepalives, application_name)
 * yield to what the user wrote, settings after it (replication,
 * client_encoding) always apply.  connect_timeout is enforced here, since
 * libpq enforces it only in its blocking calls.
 */
DeWalConn *
de_walconn_connect(const char *conninfo, bool replication,
				   const char *appname)
{
	const char *keys[12];
	const char *vals[12];
	int			n = 0;
	DeWalConn  *conn;

	/* complain about a malformed conninfo without echoing it */
	de_conninfo_validate(conninfo);

	keys[n] = "connect_timeout";
	vals[n++] = WALCONN_CONNECT_TIMEOUT;
	keys[n] = "keepalives";
	vals[n++] = "1";
	keys[n] = "keepalives_idle";
	vals[n++] = WALCONN_KEEPALIVES_IDLE;
	keys[n] = "keepalives_interval";
	vals[n++] = WALCONN_KEEPALIVES_INTERVAL;
	keys[n] = "keepalives_count";
	vals[n++] = WALCONN_KEEPALIVES_COUNT;
	keys[n] = "application_name";
	vals[n++] = appname;
	keys[n] = "dbname";
	vals[n++] = conninfo;
	keys[n] = "replication";
	vals[n++] = replication ? "database" : "false";
	keys[n] = "fallback_application_name";
	vals[n++] = appname;
	keys[n] = "client_encoding";
	vals[n++] = GetDatabaseEncodingName();
	keys[n] = NULL;
	vals[n] = NULL;
	Assert(n < lengthof(keys));

	conn = MemoryContextAllocZero(TopMemoryContext, sizeof(DeWalConn));
	conn->conn = PQconnectStartParams(keys, vals, /* expand_dbname = */ true);
	if (conn->conn == NULL)
	{
		pfree(conn);
		ereport(ERROR,
				errcode(ERRCODE_OUT_OF_MEMORY),
				errmsg("out of memory"));
	}
	PQsetNoticeReceiver(conn->conn, walconn_notice_receiver, NULL);

	/* whatever goes wrong, do not leave the connection behind */
	PG_TRY();
	{
		PostgresPollingStatusType status;
		PQconninfoOption *opts;
		PGresult   *res;
		int			timeout_s = 0;
		TimestampTz deadline = 0;
		const char *host = NULL;

		if (PQstatus(conn->conn) == CONNECTION_BAD)
			walconn_connection_error(conn, _("could not connect to the register"));

		/* the effective connect_timeout, as libpq reads it */
		opts = PQconninfo(conn->conn);
		if (opts != NULL)
		{
			PQconninfoOption *o;

			for (o = opts; o->keyword != NULL; o++)
				if (strcmp(o->keyword, "connect_timeout") == 0 &&
					o->val != NULL)
					timeout_s = atoi(o->val);
			PQconninfoFree(opts);
		}
		if (timeout_s > 0 && timeout_s < 2)
			timeout_s = 2;		/* as libpq does */

		/* Per PQconnectPoll's contract, first wait until writable. */
		status = PGRES_POLLING_WRITING;
		do
		{
			int			io_flag;
			int			rc;
			long		wait_ms = -1;

			/* the timeout applies to each host of a multi-host conninfo */
			if (timeout_s > 0 && PQhost(conn->conn) != host)
			{
				host = PQhost(conn->conn);
				deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   timeout_s * 1000);
			}
			if (timeout_s > 0)
			{
				wait_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														  deadline);
				if (wait_ms <= 0)
					ereport(ERROR,
							errcode(ERRCODE_CONNECTION_FAILURE),
							errmsg("could not connect to the register: timeout expired after %d seconds",
								   timeout_s));
			}

			io_flag = (status == PGRES_POLLING_READING) ?
				WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE;
			rc = WaitLatchOrSocket(MyLatch,
								   WL_EXIT_ON_PM_DEATH | WL_LATCH_SET |
								   io_flag | (wait_ms >= 0 ? WL_TIMEOUT : 0),
								   PQsocket(conn->conn), wait_ms,
								   PG_WAIT_EXTENSION);
			if (rc & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
			}

			if (rc & io_flag)
				status = PQconnectPoll(conn->conn);
		} while (status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED);

		if (PQstatus(conn->conn) != CONNECTION_OK)
			walconn_connection_error(conn, _("could not connect to the register"));

		if (PQsetnonblocking(conn->conn, 1) != 0)
			walconn_connection_error(conn, _("could not connect to the register"));

		/* our queries are schema-qualified; take no chances all the same */
		res = walconn_exec(conn, ALWAYS_SECURE_SEARCH_PATH_SQL,
						   _("could not clear search path on the register"));
		walconn_expect(conn, res, PGRES_TUPLES_OK,
					   _("could not clear search path on the register"));
		PQclear(res);
	}
	PG_CATCH();
	{
		PQfinish(conn->conn);
		pfree(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();

	return conn;
}

/*
 * de_walconn_close
 *		Close the connection and free everything it holds.
 */
void
de_walconn_close(DeWalConn *conn)
{
	if (conn == NULL)
		return;
	if (conn->recvbuf != NULL)
		PQfreemem(conn->recvbuf);
	if (conn->rowres != NULL)
		PQclear(conn->rowres);
	if (conn->sendbuf != NULL)
	{
		pfree(conn->sendbuf->data);
		pfree(conn->sendbuf);
	}
	if (conn->conn != NULL)
		PQfinish(conn->conn);
	if (conn->schemas != NULL)
		pfree(conn->schemas);
	pfree(conn);
}

/*
 * de_walconn_set_schemas
 *		The stream started on this connection asks the register for the
 *		tables and sequences of these schemas only (NIL: every schema).
 */
void
de_walconn_set_schemas(DeWalConn *conn, List *schemas)
{
	if (conn->schemas != NULL)
		pfree(conn->schemas);
	conn->schemas = NULL;
	if (schemas != NIL)
		conn->schemas = MemoryContextStrdup(TopMemoryContext,
											de_schema_list_to_option(schemas));
}

/*
 * de_walconn_try
 *		Open a replication connection, run fn on it and close it, inside a
 *		subtransaction.  Returns NULL on success; on failure the connection
 *		is closed, the subtransaction rolled back, the error flushed and a
 *		copy of it returned (in the caller's memory context), for callers
 *		that go on without the register (drop_register, promote).
 */
ErrorData *
de_walconn_try(const char *conninfo, const char *appname,
			   void (*fn) (DeWalConn *conn, void *arg), void *arg)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	DeWalConn  *volatile conn = NULL;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);

	PG_TRY();
	{
		conn = de_walconn_connect(conninfo, true, appname);
		fn(conn, arg);
		de_walconn_close(conn);
		conn = NULL;

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();

		if (conn != NULL)
			de_walconn_close(conn);

		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_END_TRY();

	return edata;
}

/*
 * de_walconn_identify
 *		IDENTIFY_SYSTEM.
 */
void
de_walconn_identify(DeWalConn *conn, uint64 *sysid, TimeLineID *tli,
					XLogRecPtr *xlogpos)
{
	const char *what = _("could not identify the register system");
	PGresult   *res;
	char	   *end;
	const char *val;
	char	   *lsnstr;

	res = walconn_exec(conn, "IDENTIFY_SYSTEM", what);
	walconn_expect(conn, res, PGRES_TUPLES_OK, what);
	walconn_expect_shape(res, 1, 3, "IDENTIFY_SYSTEM");

	val = PQgetvalue(res, 0, 0);
	errno = 0;
	*sysid = strtou64(val, &end, 10);
	if (errno != 0 || end == val || *end != '\0')
	{
		PQclear(res);
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("invalid response from the register to %s",
					   "IDENTIFY_SYSTEM"),
				errdetail("Could not parse the system identifier."));
	}
	*tli = (TimeLineID) strtoul(PQgetvalue(res, 0, 1), NULL, 10);
	lsnstr = pstrdup(PQgetvalue(res, 0, 2));
	PQclear(res);

	*xlogpos = walconn_parse_lsn(lsnstr, "IDENTIFY_SYSTEM");
}

/*
 * de_walconn_database_oid
 *		OID of the register database the connection is attached to.
 */
Oid
de_walconn_database_oid(DeWalConn *conn)
{
	const char *what = _("could not read the register's database OID");
	PGresult   *res;
	Oid			dboid;

	res = walconn_exec(conn,
					   "SELECT oid FROM pg_catalog.pg_database "
					   "WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()",
					   what);
	walconn_expect(conn, res, PGRES_TUPLES_OK, what);
	walconn_expect_shape(res, 1, 1, "the database OID query");
	dboid = (Oid) strtoul(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);

	if (!OidIsValid(dboid))
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("invalid response from the register to %s",
					   "the database OID query"));
	return dboid;
}

/*
 * de_walconn_slot_status
 *		The state of our replication slot on the register: missing, usable,
 *		or lost (invalidated by max_slot_wal_keep_size: the WAL it needs is
 *		gone).
 */
DeRemoteSlotStatus
de_walconn_slot_status(DeWalConn *conn, const char *slot)
{
	const char *what = _("could not look up a replication slot on the register");
	DeRemoteSlotStatus status = DE_REMOTE_SLOT_MISSING;
	PGresult   *res;
	char	   *query;

	query = psprintf("SELECT wal_status FROM pg_catalog.pg_replication_slots "
					 "WHERE slot_name OPERATOR(pg_catalog.=) %s",
					 walconn_quote_literal(conn, slot));
	res = walconn_exec(conn, query, what);
	walconn_expect(conn, res, PGRES_TUPLES_OK, what);
	if (PQntuples(res) > 0)
	{
		const char *wal_status = PQgetisnull(res, 0, 0) ? "" :
		PQgetvalue(res, 0, 0);

		status = (strcmp(wal_status, "lost") == 0) ?
			DE_REMOTE_SLOT_LOST : DE_REMOTE_SLOT_USABLE;
	}
	PQclear(res);
	pfree(query);

	return status;
}

/*
 * de_walconn_create_slot
 *		CREATE_REPLICATION_SLOT with our output plugin; PG15 option syntax.
 */
XLogRecPtr
de_walconn_create_slot(DeWalConn *conn, const char *slot,
					   char **snapshot_name)
{
	return walconn_create_slot(conn, slot, false, snapshot_name);
}

/*
 * de_walconn_create_temp_slot
 *		The same, TEMPORARY: the register drops the slot when this
 *		connection ends, however it ends.
 */
XLogRecPtr
de_walconn_create_temp_slot(DeWalConn *conn, const char *slot,
							char **snapshot_name)
{
	return walconn_create_slot(conn, slot, true, snapshot_name);
}

static XLogRecPtr
walconn_create_slot(DeWalConn *conn, const char *slot, bool temporary,
					char **snapshot_name)
{
	char	   *what = psprintf(_("could not create replication slot \"%s\""),
								slot);
	char	   *query;
	PGresult   *res;
	XLogRecPtr	lsn;
	char	   *lsnstr;
	char	   *snapstr;

	query = psprintf("CREATE_REPLICATION_SLOT %s %sLOGICAL %s (SNAPSHOT '%s')",
					 walconn_quote_identifier(conn, slot),
					 temporary ? "TEMPORARY " : "",
					 DE_PLUGIN_NAME,
					 snapshot_name ? "export" : "nothing");
	res = walconn_exec(conn, query, what);
	pfree(query);
	walconn_expect(conn, res, PGRES_TUPLES_OK, what);
	walconn_expect_shape(res, 1, 3, "CREATE_REPLICATION_SLOT");

	lsnstr = pstrdup(PQgetvalue(res, 0, 1));
	snapstr = PQgetisnull(res, 0, 2) ? NULL : pstrdup(PQgetvalue(res, 0, 2));
	PQclear(res);

	lsn = walconn_parse_lsn(lsnstr, "CREATE_REPLICATION_SLOT");
	if (snapshot_name != NULL)
	{
		if (snapstr == NULL)
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("invalid response from the register to %s",
						   "CREATE_REPLICATION_SLOT"),
					errdetail("No snapshot was exported."));
		*snapshot_name = snapstr;
	}

	return lsn;
}

/*
 * de_walconn_drop_slot
 *		DROP_REPLICATION_SLOT ... WAIT: waits for a walsender still using
 *		the slot to let go of it.
 */
void
de_walconn_drop_slot(DeWalConn *conn, const char *slot, bool missing_ok)
{
	char	   *what = psprintf(_("could not drop replication slot \"%s\""), slot);
	char	   *query;
	PGresult   *res;

	query = psprintf("DROP_REPLICATION_SLOT %s WAIT",
					 walconn_quote_identifier(conn, slot));
	res = walconn_exec(conn, query, what);
	pfree(query);

	if (res != NULL && PQresultStatus(res) == PGRES_FATAL_ERROR && missing_ok)
	{
		const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (sqlstate != NULL && strcmp(sqlstate, "42704") == 0)
		{
			/* ERRCODE_UNDEFINED_OBJECT: there is nothing to drop */
			PQclear(res);
			return;
		}
	}
	walconn_expect(conn, res, PGRES_COMMAND_OK, what);
	PQclear(res);
}

/*
 * de_walconn_start_streaming
 *		START_REPLICATION of our slot from "start", for the embassy whose
 *		public key is embassy_key.  Leaves the connection in COPY BOTH mode.
 */
void
de_walconn_start_streaming(DeWalConn *conn, const char *slot,
						   XLogRecPtr start, XLogRecPtr history_lsn,
						   const char *embassy_key,
						   const uint8 *session,
						   int decoding_work_mem_kb,
						   bool stream_in_progress)
{
	char		session_hex[2 * DE_SESSION_LEN + 1];
	char	   *what = psprintf(_("could not start streaming from replication slot \"%s\""),
								slot);
	char	   *query;
	char		workmem[64] = "";
	char		history[64] = "";
	char	   *schemas = "";
	PGresult   *res;

	if (decoding_work_mem_kb > 0)
		snprintf(workmem, sizeof(workmem), ", \"decoding_work_mem\" '%d'",
				 decoding_work_mem_kb);
	if (!XLogRecPtrIsInvalid(history_lsn))
		snprintf(history, sizeof(history), ", \"history_lsn\" '%X/%X'",
				 LSN_FORMAT_ARGS(history_lsn));
	if (conn->schemas != NULL)
		schemas = psprintf(", \"schemas\" %s",
						   walconn_quote_literal(conn, conn->schemas));
	hex_encode((const char *) session, DE_SESSION_LEN, session_hex);
	session_hex[2 * DE_SESSION_LEN] = '\0';
	query = psprintf("START_REPLICATION SLOT %s LOGICAL %X/%X (\"embassy_key\" %s, \"session\" '%s', \"frame_version\" '%d'%s%s%s%s)",
					 walconn_quote_identifier(conn, slot),
					 LSN_FORMAT_ARGS(start),
					 walconn_quote_literal(conn, embassy_key), session_hex,
					 DE_FRAME_VERSION, history, workmem,
					 stream_in_progress ? ", \"stream_in_progress\" 'on'" : "",
					 schemas);
	res = walconn_exec(conn, query, what);
	pfree(query);
	walconn_expect(conn, res, PGRES_COPY_BOTH, what);
	PQclear(res);
}

/*
 * de_walconn_heartbeat_send
 *		Ask the register, over an ordinary connection, to seal a heartbeat
 *		with this nonce into the stream (data_embassy.heartbeat()).  Does
 *		not wait for the answer: the proof comes back in the stream, and
 *		de_walconn_heartbeat_poll() collects the command's result.
 */
void
de_walconn_heartbeat_send(DeWalConn *conn, const uint8 *nonce)
{
	const char *what = _("could not send a heartbeat to the register");
	const char *values[1];
	int			lengths[1];
	int			formats[1] = {1};
	Oid			types[1] = {BYTEAOID};

	values[0] = (const char *) nonce;
	lengths[0] = DE_HEARTBEAT_NONCE_LEN;
	if (!PQsendQueryParams(conn->conn,
						   "SELECT data_embassy.heartbeat($1)",
						   1, types, values, lengths, formats, 0))
		walconn_connection_error(conn, what);
	walconn_flush(conn, what);
}

/*
 * de_walconn_heartbeat_poll
 *		Collect the result of a heartbeat without blocking: true once the
 *		command is done, false while it runs.  A refusal by the register
 *		(say, the role may not call heartbeat()) is raised with its words.
 */
bool
de_walconn_heartbeat_poll(DeWalConn *conn)
{
	const char *what = _("could not send a heartbeat to the register");

	for (;;)
	{
		PGresult   *res;

		if (PQconsumeInput(conn->conn) == 0)
			walconn_connection_error(conn, what);
		if (PQisBusy(conn->conn))
			return false;
		res = PQgetResult(conn->conn);
		if (res == NULL)
			return true;
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			walconn_report(conn, res, what);
		PQclear(res);
	}
}

/*
 * walconn_receive
 *		Next CopyData message of the stream, without blocking.
 *
 * Returns its length with *buf pointing at it (valid until the next call),
 * 0 when nothing is ready, -1 when the register ended the stream.
 */
static int
walconn_receive(DeWalConn *conn, char **buf)
{
	int			len;

	if (conn->recvbuf != NULL)
	{
		PQfreemem(conn->recvbuf);
		conn->recvbuf = NULL;
	}

	len = PQgetCopyData(conn->conn, &conn->recvbuf, 1);
	if (len == 0)
	{
		/* nothing buffered: read what the socket has, and try again */
		if (PQconsumeInput(conn->conn) == 0)
			walconn_connection_error(conn,
									 _("could not receive data from the register"));
		len = PQgetCopyData(conn->conn, &conn->recvbuf, 1);
		if (len == 0)
			return 0;
	}

	if (len == -1)
	{
		PGresult   *res = PQgetResult(conn->conn);

		/* the register ended the COPY: fine, or an error it reported */
		if (res != NULL && PQresultStatus(res) == PGRES_FATAL_ERROR)
			walconn_report(conn, res,
						   _("the register ended the replication stream with an error"));
		PQclear(res);
		return -1;
	}
	if (len < -1)
		walconn_connection_error(conn,
								 _("could not receive data from the register"));

	*buf = conn->recvbuf;
	return len;
}

/*
 * walconn_need
 *		Raise unless the message has "need" more bytes to read.
 */
static void
walconn_need(StringInfo s, int need, char type, const char *register_name)
{
	if (s->len - s->cursor >= need)
		return;

	if (type == 'w')
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("truncated data message in the stream of register \"%s\"",
					   register_name),
				errdetail("The message ends after %d bytes.", s->len));
	ereport(ERROR,
			errcode(ERRCODE_PROTOCOL_VIOLATION),
			errmsg("truncated keepalive message in the stream of register \"%s\"",
				   register_name),
			errdetail("The message ends after %d bytes.", s->len));
}

/*
 * de_walconn_receive_message
 *		Next message of the replication stream, parsed, without blocking.
 *
 * As core's apply worker reads them: XLogData is 'w', dataStart, walEnd,
 * sendTime and the data; a primary keepalive is 'k', walEnd, sendTime and
 * replyRequested.
 */
bool
de_walconn_receive_message(DeWalConn *conn, const char *register_name,
						   DeWalMessage *msg)
{
	StringInfoData s;
	char	   *buf;
	int			len;
	char		type;

	len = walconn_receive(conn, &buf);
	if (len == 0)
		return false;
	if (len < 0)
		ereport(ERROR,
				errcode(ERRCODE_CONNECTION_FAILURE),
				errmsg("register \"%s\" ended the replication stream",
					   register_name));

	/* read in place, as core's apply worker does */
	s.data = buf;
	s.len = len;
	s.cursor = 0;
	s.maxlen = -1;

	if (len < 1)
		ereport(ERROR,
				errcode(ERRCODE_PROTOCOL_VIOLATION),
				errmsg("empty message in the stream of register \"%s\"",
					   register_name));

	memset(msg, 0, sizeof(DeWalMessage));
	type = pq_getmsgbyte(&s);
	switch (type)
	{
		case 'w':
			walconn_need(&s, 3 * sizeof(int64), type, register_name);
			msg->kind = DE_WAL_XLOGDATA;
			msg->start = pq_getmsgint64(&s);
			msg->end = pq_getmsgint64(&s);
			msg->send_time = pq_getmsgint64(&s);
			msg->len = s.len - s.cursor;
			msg->data = pq_getmsgbytes(&s, msg->len);
			break;

		case 'k':
			walconn_need(&s, 2 * sizeof(int64) + 1, type, register_name);
			msg->kind = DE_WAL_KEEPALIVE;
			msg->end = pq_getmsgint64(&s);
			msg->send_time = pq_getmsgint64(&s);
			msg->reply_requested = pq_getmsgbyte(&s) != 0;
			break;

		default:
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("unexpected message type \"%c\" in the stream of register \"%s\"",
						   type, register_name));
	}

	return true;
}

/*
 * de_walconn_send
 *		Send one CopyData message and flush it.
 */
void
de_walconn_send(DeWalConn *conn, const char *buf, int len)
{
	const char *what = _("could not send data to the register");

	for (;;)
	{
		int			r = PQputCopyData(conn->conn, buf, len);

		if (r > 0)
			break;
		if (r < 0)
			walconn_connection_error(conn, what);
		/* r == 0: libpq's buffer is full (non-blocking mode) */
		walconn_flush(conn, what);
	}
	walconn_flush(conn, what);
}

/*
 * de_walconn_send_status
 *		Standby status update ('r'): written, flushed and applied positions,
 *		the send time, and whether a reply is requested.
 */
void
de_walconn_send_status(DeWalConn *conn, XLogRecPtr written,
					   XLogRecPtr flushed, XLogRecPtr applied,
					   TimestampTz now, bool request_reply)
{
	if (conn->sendbuf == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

		conn->sendbuf = makeStringInfo();
		MemoryContextSwitchTo(oldcxt);
	}
	resetStringInfo(conn->sendbuf);

	pq_sendbyte(conn->sendbuf, 'r');
	pq_sendint64(conn->sendbuf, written);
	pq_sendint64(conn->sendbuf, flushed);
	pq_sendint64(conn->sendbuf, applied);
	pq_sendint64(conn->sendbuf, now);
	pq_sendbyte(conn->sendbuf, request_reply ? 1 : 0);

	de_walconn_send(conn, conn->sendbuf->data, conn->sendbuf->len);
}

pgsocket
de_walconn_socket(DeWalConn *conn)
{
	return PQsocket(conn->conn);
}

/*
 * de_walconn_copy_start
 *		Import the slot's exported snapshot on an ordinary connection and
 *		start data_embassy.copy_frames() for this embassy, session and slot,
 *		one row at a time; its six-argument form only for an embassy that
 *		replicates only some schemas or takes no rows.  Both statements
 *		travel in the clear: the register checks the import itself and
 *		seals the session and whether rows were asked for.
 */
void
de_walconn_copy_start(DeWalConn *conn, const char *snapshot_name,
					  const char *embassy_key, const uint8 *session,
					  const char *slot, List *schemas,
					  bool with_rows)
{
	walconn_copy_start(conn, snapshot_name, embassy_key, session, slot,
					   schemas, with_rows, InvalidOid);
}

/*
 * de_walconn_copy_table_start
 *		The same for one table of the register (resync_table):
 *		data_embassy.copy_table_frames(..., ARRAY[remote_relid]).
 */
void
de_walconn_copy_table_start(DeWalConn *conn, const char *snapshot_name,
							const char *embassy_key, const uint8 *session,
							const char *slot, Oid remote_relid)
{
	walconn_copy_start(conn, snapshot_name, embassy_key, session, slot,
					   NIL, true, remote_relid);
}

static void
walconn_copy_start(DeWalConn *conn, const char *snapshot_name,
				   const char *embassy_key, const uint8 *session,
				   const char *slot, List *schemas, bool with_rows,
				   Oid remote_relid)
{
	const char *what = _("could not start the initial copy");
	const char *query;
	const char *params[6];
	Oid			types[6];
	int			nparams = 4;
	PGresult   *res;
	char	   *set_snapshot;
	char		session_hex[2 * DE_SESSION_LEN + 1];

	res = walconn_exec(conn,
					   "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
					   what);
	walconn_expect(conn, res, PGRES_COMMAND_OK, what);
	PQclear(res);

	set_snapshot = psprintf("SET TRANSACTION SNAPSHOT %s",
							walconn_quote_literal(conn, snapshot_name));
	res = walconn_exec(conn, set_snapshot, what);
	pfree(set_snapshot);
	walconn_expect(conn, res, PGRES_COMMAND_OK, what);
	PQclear(res);

	hex_encode((const char *) session, DE_SESSION_LEN, session_hex);
	session_hex[2 * DE_SESSION_LEN] = '\0';

	query = "SELECT " DE_SCHEMA_NAME ".copy_frames($1, $2, $3, $4)";
	params[0] = embassy_key;
	params[1] = session_hex;
	params[2] = slot;
	params[3] = snapshot_name;
	types[0] = types[1] = types[2] = types[3] = TEXTOID;
	if (OidIsValid(remote_relid))
	{
		query = "SELECT " DE_SCHEMA_NAME ".copy_table_frames($1, $2, $3, $4,"
			" ARRAY[$5])";
		params[4] = psprintf("%u", remote_relid);
		types[4] = OIDOID;
		nparams = 5;
	}
	else if (schemas != NIL || !with_rows)
	{
		StringInfoData arr;
		ListCell   *lc;

		/* a text[] literal: every element double-quoted and escaped */
		initStringInfo(&arr);
		appendStringInfoChar(&arr, '{');
		foreach(lc, schemas)
		{
			const char *p;

			if (arr.len > 1)
				appendStringInfoChar(&arr, ',');
			appendStringInfoChar(&arr, '"');
			for (p = lfirst(lc); *p != '\0'; p++)
			{
				if (*p == '"' || *p == '\\')
					appendStringInfoChar(&arr, '\\');
				appendStringInfoChar(&arr, *p);
			}
			appendStringInfoChar(&arr, '"');
		}
		appendStringInfoChar(&arr, '}');

		query = "SELECT " DE_SCHEMA_NAME ".copy_frames($1, $2, $3, $4, $5, $6)";
		params[4] = schemas != NIL ? arr.data : NULL;
		params[5] = with_rows ? "true" : "false";
		types[4] = TEXTARRAYOID;
		types[5] = BOOLOID;
		nparams = 6;
	}

	/* binary result: the frames arrive as raw bytes */
	if (!PQsendQueryParams(conn->conn, query, nparams, types, params, NULL,
						   NULL, 1))
		walconn_connection_error(conn, what);
	if (!PQsetSingleRowMode(conn->conn))
		walconn_connection_error(conn, what);
	walconn_flush(conn, what);
	conn->copying = true;
}

/*
 * de_walconn_copy_next
 *		Next sealed frame of the initial copy, or NULL at the end.  The frame
 *		stays valid until the next call.
 */
char *
de_walconn_copy_next(DeWalConn *conn, int *len)
{
	const char *what = _("could not read the initial copy from the register");
	PGresult   *res;

	if (conn->rowres != NULL)
	{
		PQclear(conn->rowres);
		conn->rowres = NULL;
	}
	if (!conn->copying)
		return NULL;

	res = walconn_get_result(conn, what);
	if (res != NULL && PQresultStatus(res) == PGRES_SINGLE_TUPLE)
	{
		if (PQnfields(res) != 1 || PQgetisnull(res, 0, 0))
		{
			PQclear(res);
			ereport(ERROR,
					errcode(ERRCODE_PROTOCOL_VIOLATION),
					errmsg("invalid response from the register to %s",
						   "copy_frames()"));
		}
		conn->rowres = res;
		*len = PQgetlength(res, 0, 0);
		return PQgetvalue(res, 0, 0);
	}

	/* the end of the result set, or an error */
	walconn_expect(conn, res, PGRES_TUPLES_OK, what);
	PQclear(res);
	conn->copying = false;

	res = walconn_get_result(conn, what);
	if (res != NULL)
		walconn_report(conn, res, what);

	return NULL;
}
