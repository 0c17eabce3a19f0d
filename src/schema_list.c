/*-------------------------------------------------------------------------
 *
 * schema_list.c
 *		  The schemas a register replicates to one embassy: checking the
 *		  list, carrying it to the register, matching schemas against it.
 *		  The contract is in schema_list.h.
 *
 * IDENTIFICATION
 *		  src/schema_list.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/varlena.h"

#include "schema_list.h"

/* Is name in the list (a plain lookup: NIL holds nothing here)? */
static bool
schema_list_has(List *schemas, const char *name)
{
	ListCell   *lc;

	foreach(lc, schemas)
	{
		if (strcmp((const char *) lfirst(lc), name) == 0)
			return true;
	}
	return false;
}

/*
 * de_schema_list_from_array
 *		Check a text[] of schema names and return it as a List.
 */
List *
de_schema_list_from_array(ArrayType *arr, const char *argname)
{
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	List	   *result = NIL;
	int			i;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("%s must be a one-dimensional array", argname));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &nelems);
	if (nelems == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("%s must not be empty", argname),
				errhint("Pass NULL to replicate every schema."));

	for (i = 0; i < nelems; i++)
	{
		char	   *name;

		if (nulls[i])
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("%s must not contain null values", argname));
		name = TextDatumGetCString(elems[i]);
		if (name[0] == '\0')
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("%s must not contain an empty schema name",
						   argname));
		if (strlen(name) >= NAMEDATALEN)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("schema name \"%s\" in %s is too long", name,
						   argname),
					errdetail("A schema name is at most %d bytes long.",
							  NAMEDATALEN - 1));
		if (schema_list_has(result, name))
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("schema \"%s\" is listed twice in %s", name,
						   argname));
		result = lappend(result, name);
	}
	return result;
}

/*
 * de_schema_list_to_array
 *		The list as a text[]; NULL for NIL.
 */
ArrayType *
de_schema_list_to_array(List *schemas)
{
	Datum	   *elems;
	ListCell   *lc;
	int			n = 0;

	if (schemas == NIL)
		return NULL;
	elems = palloc(sizeof(Datum) * list_length(schemas));
	foreach(lc, schemas)
		elems[n++] = CStringGetTextDatum((char *) lfirst(lc));
	return construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT);
}

/*
 * de_schema_list_to_option
 *		"a","B c" as the plugin option carries it (quote_identifier each).
 */
char *
de_schema_list_to_option(List *schemas)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, schemas)
	{
		const char *name = lfirst(lc);

		if (buf.len > 0)
			appendStringInfoChar(&buf, ',');
		/* quoted always, so that no name is folded to lower case */
		appendStringInfoChar(&buf, '"');
		for (; *name != '\0'; name++)
		{
			if (*name == '"')
				appendStringInfoChar(&buf, '"');
			appendStringInfoChar(&buf, *name);
		}
		appendStringInfoChar(&buf, '"');
	}
	return buf.data;
}

/*
 * de_schema_list_from_option
 *		Parse the plugin option's value.
 */
List *
de_schema_list_from_option(const char *optname, const char *value)
{
	char	   *copy = pstrdup(value);
	List	   *names;
	List	   *result = NIL;
	ListCell   *lc;

	if (!SplitIdentifierString(copy, ',', &names) || names == NIL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid value for option \"%s\": \"%s\"",
					   optname, value),
				errhint("List schema names as quoted identifiers separated by commas."));
	foreach(lc, names)
	{
		char	   *name = lfirst(lc);

		if (name[0] == '\0')
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid value for option \"%s\": \"%s\"",
						   optname, value),
					errdetail("A schema name is empty."));
		if (!schema_list_has(result, name))
			result = lappend(result, pstrdup(name));
	}
	return result;
}

/*
 * de_schema_list_contains
 *		NIL holds every schema.
 */
bool
de_schema_list_contains(List *schemas, const char *nspname)
{
	if (schemas == NIL)
		return true;
	return nspname != NULL && schema_list_has(schemas, nspname);
}

bool
de_schema_list_contains_oid(List *schemas, Oid nspid)
{
	if (schemas == NIL)
		return true;
	return de_schema_list_contains(schemas, get_namespace_name(nspid));
}
