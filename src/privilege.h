/*-------------------------------------------------------------------------
 *
 * privilege.h
 *		  Who may do what, and SQL that runs with raised privileges: the
 *		  admin check, object name checks, and the owner switch every
 *		  privileged statement of the extension goes through.
 *
 * IDENTIFICATION
 *		  src/privilege.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_PRIVILEGE_H
#define DE_PRIVILEGE_H

#include "fmgr.h"

/* The kinds of names users give to data_embassy objects. */
typedef enum DeNameKind
{
	DE_NAME_REGISTER,
	DE_NAME_EMBASSY
} DeNameKind;

/* Is roleid a superuser, or does it have the privileges of data_embassy_admin? */
extern bool de_is_admin(Oid roleid);

/*
 * Raise ERROR unless the current user is an administrator (de_is_admin);
 * funcname is the SQL function being called, as "data_embassy.f()".
 */
extern void de_check_admin_call(const char *funcname);

/*
 * Check a register or embassy name: not NULL, not empty, shorter than
 * NAMEDATALEN, ASCII letters, digits, '_', '-' and '.' only.  Errors:
 * ERRCODE_NULL_VALUE_NOT_ALLOWED, ERRCODE_INVALID_PARAMETER_VALUE.
 */
extern void de_check_name(DeNameKind kind, const char *name);

/* The name in argument argno of an SQL function, checked as above. */
extern char *de_name_arg(FunctionCallInfo fcinfo, int argno, DeNameKind kind);

/*
 * In a background worker, right after it connected to its database: an
 * empty search_path (settings of the database or its owner do not reach
 * the worker's SQL) and read-write transactions whatever
 * default_transaction_read_only says.
 */
extern void de_background_session_settings(void);

/* The owner of a relation (elog ERROR if it is gone). */
extern Oid	de_relation_owner(Oid relid);

/*
 * A stretch of SQL run with raised privileges:
 *
 *		DePrivilegedSql sql;
 *
 *		de_privileged_sql_begin(relid, &sql);
 *		de_privileged_sql_exec(...);
 *		de_privileged_sql_end(&sql);
 *
 * In between the current user is the owner of relid, under
 * SECURITY_RESTRICTED_OPERATION, with search_path set to "pg_catalog,
 * pg_temp" at a new GUC nest level, and connected to SPI; so neither the
 * caller's nor the database's search_path nor any object the caller made
 * can take part.  An ERROR in between restores all of it at abort.
 */
typedef struct DePrivilegedSql
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} DePrivilegedSql;

extern void de_privileged_sql_begin(Oid relid, DePrivilegedSql *save);
extern void de_privileged_sql_end(DePrivilegedSql *save);

/*
 * Run one statement with parameters (nulls as for SPI: NULL or 'n' marks);
 * elog ERROR unless SPI returns "expected".  Returns SPI_processed.
 */
extern uint64 de_privileged_sql_exec(const char *sql, int expected, int nargs,
									 Oid *types, Datum *values,
									 const char *nulls);

#endif							/* DE_PRIVILEGE_H */
