/*-------------------------------------------------------------------------
 *
 * privilege.c
 *		  Who may do what, and SQL that runs with raised privileges.
 *
 * The extension's tables (registers, embassy_pins, ...) are readable only
 * by their owner, since they hold connection strings and decide what is
 * replicated.  SQL functions check their caller once (de_check_admin_call) and
 * then read and write those tables as the owner.  Whatever runs that way
 * must not be steerable by the caller: it runs under
 * SECURITY_RESTRICTED_OPERATION with a search_path of pg_catalog alone, as
 * core runs index expressions and maintenance commands, and its statements
 * qualify their tables and operators anyway.
 *
 * IDENTIFICATION
 *		  src/privilege.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "data_embassy.h"
#include "privilege.h"

/*
 * de_is_admin
 *		May this role configure data_embassy: a superuser, or a role with the
 *		privileges of data_embassy_admin?
 */
bool
de_is_admin(Oid roleid)
{
	Oid			admin;

	if (superuser_arg(roleid))
		return true;
	admin = get_role_oid(DE_ADMIN_ROLE, true);
	return OidIsValid(admin) && has_privs_of_role(roleid, admin);
}

/*
 * de_check_admin_call
 *		Refuse the call of SQL function "funcname" unless the current user is
 *		an administrator (de_is_admin).
 */
void
de_check_admin_call(const char *funcname)
{
	if (de_is_admin(GetUserId()))
		return;

	ereport(ERROR,
			errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			errmsg("permission denied to call function %s", funcname),
			errhint("Only superusers and members of role \"%s\" may call it.",
					DE_ADMIN_ROLE));
}

/*
 * de_check_name
 *		Names become parts of slot and origin names and appear in logs, so
 *		they are short and plain.  Each message names its kind of object in
 *		full, so that translators see whole sentences.
 */
void
de_check_name(DeNameKind kind, const char *name)
{
	bool		reg = (kind == DE_NAME_REGISTER);
	size_t		len;

	if (name == NULL)
	{
		if (reg)
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("register name must not be null"));
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("embassy name must not be null"));
	}

	len = strlen(name);
	if (len == 0)
	{
		if (reg)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("register name must not be empty"));
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("embassy name must not be empty"));
	}
	if (len >= NAMEDATALEN)
	{
		if (reg)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("register name \"%s\" is too long", name),
					errdetail("The name is %zu bytes long; at most %d bytes are allowed.",
							  len, NAMEDATALEN - 1));
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("embassy name \"%s\" is too long", name),
				errdetail("The name is %zu bytes long; at most %d bytes are allowed.",
						  len, NAMEDATALEN - 1));
	}

	for (const char *p = name; *p != '\0'; p++)
	{
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			(*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.')
			continue;
		if (reg)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("register name \"%s\" contains an invalid character",
						   name),
					errdetail("Names may contain only ASCII letters, digits, underscores (_), hyphens (-) and periods (.)."));
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("embassy name \"%s\" contains an invalid character",
					   name),
				errdetail("Names may contain only ASCII letters, digits, underscores (_), hyphens (-) and periods (.)."));
	}
}

/*
 * de_name_arg
 *		Argument argno of an SQL function as a checked name.
 */
char *
de_name_arg(FunctionCallInfo fcinfo, int argno, DeNameKind kind)
{
	char	   *name = NULL;

	if (!PG_ARGISNULL(argno))
		name = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	de_check_name(kind, name);
	return name;
}

/*
 * de_background_session_settings
 *		Session settings of a background worker's own SQL (see privilege.h).
 */
void
de_background_session_settings(void)
{
	SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off",
					PGC_SUSET, PGC_S_OVERRIDE);
}

/*
 * de_relation_owner
 *		The owner of a relation, from the syscache.
 */
Oid
de_relation_owner(Oid relid)
{
	HeapTuple	tuple;
	Oid			owner;

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * de_privileged_sql_begin
 *		Become the owner of relid, restricted, with a safe search_path, and
 *		connect to SPI.
 */
void
de_privileged_sql_begin(Oid relid, DePrivilegedSql *save)
{
	Oid			owner = de_relation_owner(relid);

	GetUserIdAndSecContext(&save->save_userid, &save->save_sec_context);
	SetUserIdAndSecContext(owner,
						   save->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);

	save->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

/*
 * de_privileged_sql_end
 *		Leave SPI (freeing what was allocated in it) and restore the
 *		search_path and the user.
 */
void
de_privileged_sql_end(DePrivilegedSql *save)
{
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	AtEOXact_GUC(true, save->save_nestlevel);
	SetUserIdAndSecContext(save->save_userid, save->save_sec_context);
}

/*
 * de_privileged_sql_exec
 *		One statement inside the bracket; see privilege.h.
 */
uint64
de_privileged_sql_exec(const char *sql, int expected, int nargs, Oid *types,
					   Datum *values, const char *nulls)
{
	int			ret;

	Assert(InSecurityRestrictedOperation());

	ret = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	if (ret != expected)
		elog(ERROR, "could not run \"%s\": %s", sql,
			 SPI_result_code_string(ret));
	return SPI_processed;
}
