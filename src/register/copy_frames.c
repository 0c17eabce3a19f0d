/*-------------------------------------------------------------------------
 *
 * copy_frames.c
 *		  copy_frames(embassy_key, session, slot_name, snapshot_name): the
 *		  initial copy of every replicated table as sealed frames of an
 *		  initial-copy stream, bound to the embassy's slot.
 *
 * The embassy creates its slot with CREATE_REPLICATION_SLOT ... (SNAPSHOT
 * 'export'), imports that snapshot on an ordinary connection and calls this
 * function; the tables and their rows are read with the caller's
 * snapshot, so the copy and the change stream that follows meet exactly.
 * The stream is a HELLO record (the slot's name and consistent point), then
 * RELATION and INSERT records, table after table, a SEQUENCES record and a
 * last COPY_END record with the number of rows; a receiver that never sees
 * COPY_END has an incomplete copy.
 *
 * Both the slot's creation and the snapshot import travel in the clear, so
 * the copy proves itself: it refuses to run unless the caller's transaction
 * runs in the snapshot that the walsender which created the embassy's slot
 * exported and still holds (the export file in pg_snapshots names that
 * walsender and lists the snapshot's xmin, xmax and running transactions,
 * compared here with the caller's), and every frame carries the session
 * key the embassy made for this one attempt and a MAC under it.  The HELLO seals the slot's
 * consistent point, which the embassy uses as its starting point.
 *
 * Sequences are not MVCC: their values are read when the copy reaches its
 * end, at or after the snapshot, so they are never below a value the copied
 * rows could hold, and a promotion right after the copy hands out no used
 * value.
 *
 * The function returns one frame per call (value-per-call mode), so memory
 * stays bounded by the frame size whatever the size of the tables.  Call
 * it in the select list to have frames streamed to the client as they are
 * sealed; in FROM, the executor materializes them first.
 *
 * Frame LSNs: every frame carries the slot's consistent point (the point
 * the change stream continues from).
 *
 * The six-argument form adds schemas (NULL: every schema; else only the
 * tables and sequences of these schemas) and with_rows.  Without rows the
 * copy describes every replicated table (its RELATION records), seals the
 * marker of schema_list.h after the HELLO, and sends the sequences and
 * COPY_END: an embassy added with copy_data => false learns, sealed, which
 * tables it replicates and guards them from that copy on.
 *
 * copy_table_frames(embassy_key, session, slot_name, snapshot_name, tables)
 * is the same function restricted to the tables whose OIDs are listed (each
 * must be replicated), for the embassy's resync_table: its slot is the
 * embassy's temporary one (the embassy's slot name with
 * DE_RESYNC_SLOT_SUFFIX), bound to its exported snapshot as above, and it
 * sends no SEQUENCES record (the stream keeps reporting them).  The sealed
 * RELATION records tell the embassy which tables it got.
 *
 * IDENTIFICATION
 *		  src/register/copy_frames.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xlog.h"
#include "access/xact.h"
#include "access/xlogrecovery.h"
#include "catalog/pg_class.h"
#include "executor/tuptable.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "lib/qunique.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/fd.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/spin.h"
#include "utils/backend_status.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "data_embassy.h"
#include "privilege.h"
#include "register/history.h"
#include "register/pins.h"
#include "register/plugin.h"
#include "register/sequences.h"
#include "schema_list.h"
#include "seal/codec.h"
#include "seal/frame.h"
#include "seal/keys.h"

PG_FUNCTION_INFO_V1(data_embassy_copy_frames);
PG_FUNCTION_INFO_V1(data_embassy_copy_table_frames);

static Datum copy_frames_srf(FunctionCallInfo fcinfo, bool table_form);

typedef struct CopyFramesState
{
	MemoryContext mcxt;			/* lives for the whole call */
	MemoryContext rel_cxt;		/* output state of the current table */
	MemoryContext row_cxt;		/* reset after every row */
	DeSealer   *sealer;
	Snapshot	snapshot;		/* registered copy of the caller's */
	XLogRecPtr	lsn;			/* the slot's consistent point */
	int			batch_bytes;
	List	   *schemas;		/* NIL: every schema */
	bool		with_rows;		/* false: RELATION records only */

	Oid		   *relids;			/* tables to copy, in OID order */
	int			nrelids;
	int			next_rel;

	Relation	rel;			/* table being copied, or NULL */
	TableScanDesc scan;
	TupleTableSlot *slot;
	DeRelOut	ro;

	StringInfoData body;
	uint64		rows;
	bool		sequences_written;	/* SEQUENCES is in the body */
	Oid		   *only;			/* copy_table_frames: the tables asked for */
	int			nonly;
	bool		finished;		/* COPY_END has been sealed */
	bool		cleaned;
} CopyFramesState;

/*
 * List the replicated tables visible in the snapshot: the copy must not
 * see a table the exported snapshot does not.
 */
static void
copy_list_tables(CopyFramesState *state)
{
	Oid			de_nsp = de_schema_oid(false);
	Relation	pg_class;
	SysScanDesc scan;
	HeapTuple	tup;
	int			cap = 64;

	state->relids = palloc(sizeof(Oid) * cap);
	state->nrelids = 0;

	pg_class = table_open(RelationRelationId, AccessShareLock);
	scan = systable_beginscan(pg_class, InvalidOid, false, state->snapshot,
							  0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_class form = (Form_pg_class) GETSTRUCT(tup);

		if (!de_class_is_replicated(form->oid, form, de_nsp) ||
			!de_schema_list_contains_oid(state->schemas, form->relnamespace))
			continue;
		if (state->only != NULL &&
			bsearch(&form->oid, state->only, state->nonly, sizeof(Oid),
					oid_cmp) == NULL)
			continue;
		if (state->nrelids == cap)
		{
			cap *= 2;
			state->relids = repalloc(state->relids, sizeof(Oid) * cap);
		}
		state->relids[state->nrelids++] = form->oid;
	}
	systable_endscan(scan);
	table_close(pg_class, AccessShareLock);

	qsort(state->relids, state->nrelids, sizeof(Oid), oid_cmp);

	/* copy_table_frames: every table asked for must be replicated */
	if (state->only != NULL && state->nrelids != state->nonly)
	{
		for (int i = 0; i < state->nonly; i++)
			if (bsearch(&state->only[i], state->relids, state->nrelids,
						sizeof(Oid), oid_cmp) == NULL)
				ereport(ERROR,
						errcode(ERRCODE_UNDEFINED_TABLE),
						errmsg("table with OID %u is not a replicated table of this database",
							   state->only[i]),
						errdetail("It does not exist in the copy's snapshot, or it is not replicated to embassies."));
	}
}

/* A snapshot as the export file in pg_snapshots describes it. */
typedef struct CopyExportedSnapshot
{
	int			backend_id;		/* the exporter's virtual transaction */
	uint32		lxid;
	int			pid;			/* the exporter */
	Oid			dbid;
	TransactionId xmin;
	TransactionId xmax;
	int			xcnt;
	TransactionId *xip;
	bool		suboverflowed;
	int			subxcnt;
	TransactionId *subxip;
} CopyExportedSnapshot;

/* Refuse the copy: its snapshot is not the one exported for the slot. */
#define COPY_SNAPSHOT_ERRMSG(slot) \
	errmsg("initial copy does not run in the snapshot exported for replication slot \"%s\"", (slot))
#define COPY_SNAPSHOT_ERRHINT \
	errhint("Only the embassy can take the copy: right after creating its slot, it imports the slot's snapshot with SET TRANSACTION SNAPSHOT in a REPEATABLE READ transaction and calls this function.")

/* Order of transaction ids, for comparing sets. */
static int
copy_xid_cmp(const void *a, const void *b)
{
	TransactionId xa = *(const TransactionId *) a;
	TransactionId xb = *(const TransactionId *) b;

	return (xa > xb) - (xa < xb);
}

/*
 * copy_parse_session
 *		The embassy's session key (an X25519 public key): DE_SESSION_LEN
 *		bytes as hex digits.
 */
static void
copy_parse_session(const char *text, uint8 *session)
{
	if (strlen(text) != 2 * DE_SESSION_LEN ||
		strspn(text, "0123456789abcdefABCDEF") != 2 * DE_SESSION_LEN)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid session key \"%s\"", text),
				errdetail("A session key is %d hexadecimal digits.",
						  2 * DE_SESSION_LEN));
	(void) hex_decode(text, 2 * DE_SESSION_LEN, (char *) session);
}

/*
 * copy_read_export
 *		Read and parse the export file of snapshot_name (the format written
 *		by ExportSnapshot).  A name that is not an exported snapshot's, or a
 *		file gone because its exporter moved on, is refused.
 */
static void
copy_read_export(const char *slot_name, const char *snapshot_name,
				 CopyExportedSnapshot *exp)
{
	char		path[MAXPGPATH];
	FILE	   *f;
	StringInfoData buf;
	char		chunk[1024];
	size_t		n;
	char	   *line;
	char	   *next;
	int			nxip = 0;
	int			nsubxip = 0;
	bool		have_vxid = false;
	bool		have_pid = false;
	bool		have_xmin = false;
	bool		have_xmax = false;

	/* as ImportSnapshot: the name is hex digits and dashes only */
	if (snapshot_name[0] == '\0' ||
		strlen(snapshot_name) >= 64 ||
		strspn(snapshot_name, "0123456789ABCDEF-") != strlen(snapshot_name))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("invalid snapshot identifier: \"%s\"", snapshot_name));

	snprintf(path, sizeof(path), "pg_snapshots/%s", snapshot_name);
	f = AllocateFile(path, PG_BINARY_R);
	if (f == NULL)
	{
		if (errno == ENOENT)
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					COPY_SNAPSHOT_ERRMSG(slot_name),
					errdetail("No snapshot \"%s\" is exported now: its walsender has moved on, or it never existed.",
							  snapshot_name),
					COPY_SNAPSHOT_ERRHINT);
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not open file \"%s\" for reading: %m", path));
	}
	initStringInfo(&buf);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		appendBinaryStringInfo(&buf, chunk, n);
	if (ferror(f))
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not read file \"%s\": %m", path));
	FreeFile(f);

	memset(exp, 0, sizeof(CopyExportedSnapshot));
	for (line = buf.data; line != NULL && *line != '\0'; line = next)
	{
		char	   *colon;
		char	   *value;

		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		colon = strchr(line, ':');
		if (colon == NULL)
			goto bad;
		*colon = '\0';
		value = colon + 1;

		if (strcmp(line, "vxid") == 0)
		{
			if (sscanf(value, "%d/%u", &exp->backend_id, &exp->lxid) != 2)
				goto bad;
			have_vxid = true;
		}
		else if (strcmp(line, "pid") == 0)
		{
			if (sscanf(value, "%d", &exp->pid) != 1)
				goto bad;
			have_pid = true;
		}
		else if (strcmp(line, "dbid") == 0)
		{
			if (sscanf(value, "%u", &exp->dbid) != 1)
				goto bad;
		}
		else if (strcmp(line, "xmin") == 0)
		{
			if (sscanf(value, "%u", &exp->xmin) != 1)
				goto bad;
			have_xmin = true;
		}
		else if (strcmp(line, "xmax") == 0)
		{
			if (sscanf(value, "%u", &exp->xmax) != 1)
				goto bad;
			have_xmax = true;
		}
		else if (strcmp(line, "xcnt") == 0)
		{
			if (sscanf(value, "%d", &exp->xcnt) != 1 || exp->xcnt < 0 ||
				exp->xcnt > GetMaxSnapshotXidCount())
				goto bad;
			exp->xip = palloc(sizeof(TransactionId) * (exp->xcnt + 1));
		}
		else if (strcmp(line, "xip") == 0)
		{
			if (exp->xip == NULL || nxip >= exp->xcnt ||
				sscanf(value, "%u", &exp->xip[nxip]) != 1)
				goto bad;
			nxip++;
		}
		else if (strcmp(line, "sof") == 0)
			exp->suboverflowed = (strcmp(value, "1") == 0);
		else if (strcmp(line, "sxcnt") == 0)
		{
			if (sscanf(value, "%d", &exp->subxcnt) != 1 || exp->subxcnt < 0 ||
				exp->subxcnt > GetMaxSnapshotSubxidCount())
				goto bad;
			exp->subxip = palloc(sizeof(TransactionId) * (exp->subxcnt + 1));
		}
		else if (strcmp(line, "sxp") == 0)
		{
			if (exp->subxip == NULL || nsubxip >= exp->subxcnt ||
				sscanf(value, "%u", &exp->subxip[nsubxip]) != 1)
				goto bad;
			nsubxip++;
		}
		/* iso, ro and rec do not decide what the copy sees */
	}
	if (!have_vxid || !have_pid || !have_xmin || !have_xmax ||
		nxip != exp->xcnt || nsubxip != exp->subxcnt)
		goto bad;
	pfree(buf.data);
	return;

bad:
	ereport(ERROR,
			errcode(ERRCODE_DATA_CORRUPTED),
			errmsg("invalid snapshot data in file \"%s\"", path));
}

/*
 * copy_exporter_created_slot
 *		Is the backend of this pid a walsender of this database whose last
 *		command created slot_name, exporting its snapshot?  An exported
 *		snapshot lives only until its walsender's next command, so this
 *		binds the snapshot to the slot's creation.
 */
static bool
copy_exporter_created_slot(int pid, const char *slot_name, char **activity)
{
	int			nbackends = pgstat_fetch_stat_numbackends();
	int			i;

	*activity = NULL;
	for (i = 1; i <= nbackends; i++)
	{
		LocalPgBackendStatus *local = pgstat_fetch_stat_local_beentry(i);
		PgBackendStatus *be;
		char	   *text;
		char	   *p;
		char	   *upper;
		StringInfoData name;

		if (local == NULL)
			continue;
		be = &local->backendStatus;
		if (be->st_procpid != pid)
			continue;
		if (be->st_backendType != B_WAL_SENDER ||
			be->st_databaseid != MyDatabaseId)
			return false;

		/* "" when the walsender reports no command */
		text = pgstat_clip_activity(be->st_activity_raw);
		*activity = text;

		/* CREATE_REPLICATION_SLOT name ... (SNAPSHOT 'export') */
		p = text;

		while (*p == ' ')
			p++;
		if (pg_strncasecmp(p, "CREATE_REPLICATION_SLOT", 23) != 0 ||
			p[23] != ' ')
			return false;
		p += 23;
		while (*p == ' ')
			p++;
		initStringInfo(&name);
		if (*p == '"')
		{
			for (p++; *p != '\0'; p++)
			{
				if (*p == '"')
				{
					if (p[1] != '"')
						break;
					p++;
				}
				appendStringInfoChar(&name, *p);
			}
			if (*p != '"')
				return false;
			p++;
		}
		else
		{
			for (; *p != '\0' && *p != ' '; p++)
				appendStringInfoChar(&name, pg_ascii_tolower((unsigned char) *p));
		}
		if (strcmp(name.data, slot_name) != 0)
			return false;

		upper = pstrdup(p);
		for (p = upper; *p != '\0'; p++)
			*p = pg_ascii_toupper((unsigned char) *p);
		return strstr(upper, "SNAPSHOT 'EXPORT'") != NULL ||
			strstr(upper, "EXPORT_SNAPSHOT") != NULL;
	}
	return false;
}

/*
 * copy_same_xids
 *		Do two lists of transaction ids hold the same set?
 */
static bool
copy_same_xids(const TransactionId *a, int na, const TransactionId *b, int nb)
{
	TransactionId *sa;
	TransactionId *sb;
	bool		same;

	if (na != nb)
		return false;
	if (na == 0)
		return true;
	sa = palloc(sizeof(TransactionId) * na);
	sb = palloc(sizeof(TransactionId) * nb);
	memcpy(sa, a, sizeof(TransactionId) * na);
	memcpy(sb, b, sizeof(TransactionId) * nb);
	qsort(sa, na, sizeof(TransactionId), copy_xid_cmp);
	qsort(sb, nb, sizeof(TransactionId), copy_xid_cmp);
	same = memcmp(sa, sb, sizeof(TransactionId) * na) == 0;
	pfree(sa);
	pfree(sb);
	return same;
}

/*
 * copy_bind_to_slot
 *		Refuse the copy unless the caller's transaction runs in the snapshot
 *		exported by the walsender that created the embassy's slot, and that
 *		walsender still holds it.  Returns the slot's consistent point (its
 *		confirmed position, read under its mutex).
 */
static XLogRecPtr
copy_bind_to_slot(const uint8 *embassy_pub, const char *slot_name,
				  const char *snapshot_name, Snapshot snap, bool resync)
{
	char	   *own_slot = de_slot_name_for_key(embassy_pub, MyDatabaseId);
	ReplicationSlot *slot;
	bool		found = false;
	bool		logical = false;
	Oid			slot_db = InvalidOid;
	pid_t		active_pid = 0;
	XLogRecPtr	consistent = InvalidXLogRecPtr;
	CopyExportedSnapshot exp;
	char		prefix[32];
	PGPROC	   *proc;
	char	   *activity;

	/* copy_table_frames: the embassy's temporary slot of a table resync */
	if (resync)
		own_slot = psprintf("%s%s", own_slot, DE_RESYNC_SLOT_SUFFIX);
	if (strcmp(slot_name, own_slot) != 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("replication slot \"%s\" does not belong to this embassy",
					   slot_name),
				errdetail("The slot of this embassy in this database is \"%s\".",
						  own_slot));

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(slot_name, false);
	if (slot != NULL)
	{
		found = true;
		SpinLockAcquire(&slot->mutex);
		logical = SlotIsLogical(slot);
		slot_db = slot->data.database;
		active_pid = slot->active_pid;
		consistent = slot->data.confirmed_flush;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);

	if (!found)
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("replication slot \"%s\" does not exist", slot_name));
	if (!logical || slot_db != MyDatabaseId)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("replication slot \"%s\" is not a logical slot of this database",
					   slot_name));

	if (!IsolationUsesXactSnapshot())
		ereport(ERROR,
				errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				COPY_SNAPSHOT_ERRMSG(slot_name),
				errdetail("The copy runs in a transaction of isolation level READ COMMITTED, not REPEATABLE READ."),
				COPY_SNAPSHOT_ERRHINT);

	copy_read_export(slot_name, snapshot_name, &exp);

	/* ExportSnapshot names the file after its exporter's transaction */
	snprintf(prefix, sizeof(prefix), "%08X-%08X-",
			 (uint32) exp.backend_id, exp.lxid);
	proc = BackendPidGetProc(exp.pid);
	if (strncmp(snapshot_name, prefix, strlen(prefix)) != 0 ||
		exp.dbid != MyDatabaseId || proc == NULL ||
		proc->backendId != exp.backend_id || proc->lxid != exp.lxid)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				COPY_SNAPSHOT_ERRMSG(slot_name),
				errdetail("Snapshot \"%s\" was not exported by a transaction of this database that is still running.",
						  snapshot_name),
				COPY_SNAPSHOT_ERRHINT);

	/* PostgreSQL 15 releases a slot once CREATE_REPLICATION_SLOT is done */
	if (active_pid != 0 && active_pid != exp.pid)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_IN_USE),
				COPY_SNAPSHOT_ERRMSG(slot_name),
				errdetail("The slot is in use by process %d: its snapshot is no longer the one to copy.",
						  (int) active_pid),
				COPY_SNAPSHOT_ERRHINT);

	if (!copy_exporter_created_slot(exp.pid, slot_name, &activity))
	{
		if (activity == NULL)
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					COPY_SNAPSHOT_ERRMSG(slot_name),
					errdetail("Snapshot \"%s\" was exported by process %d, which is not a walsender of this database.",
							  snapshot_name, exp.pid),
					COPY_SNAPSHOT_ERRHINT);
		if (activity[0] == '\0')
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					COPY_SNAPSHOT_ERRMSG(slot_name),
					errdetail("Snapshot \"%s\" was exported by walsender %d, which does not report the command it ran.",
							  snapshot_name, exp.pid),
					errhint("The copy checks that the walsender's last command created the slot: track_activities must be on for the embassy's replication role."));
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				COPY_SNAPSHOT_ERRMSG(slot_name),
				errdetail("Snapshot \"%s\" was exported by process %d, whose last command did not create the slot: \"%s\".",
						  snapshot_name, exp.pid, activity),
				COPY_SNAPSHOT_ERRHINT);
	}

	/* the caller's snapshot must be that one: an import stripped or replaced */
	if (snap->xmin != exp.xmin || snap->xmax != exp.xmax ||
		!copy_same_xids(snap->xip, snap->xcnt, exp.xip, exp.xcnt) ||
		snap->suboverflowed != exp.suboverflowed ||
		(!exp.suboverflowed &&
		 !copy_same_xids(snap->subxip, snap->subxcnt, exp.subxip,
						 exp.subxcnt)))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				COPY_SNAPSHOT_ERRMSG(slot_name),
				errdetail("The transaction's snapshot (xmin %u, xmax %u, %u running) is not snapshot \"%s\" (xmin %u, xmax %u, %d running): its import was stripped or replaced.",
						  snap->xmin, snap->xmax, snap->xcnt, snapshot_name,
						  exp.xmin, exp.xmax, exp.xcnt),
				COPY_SNAPSHOT_ERRHINT);

	pfree(own_slot);
	return consistent;
}

/*
 * copy_only_tables
 *		copy_table_frames(..., tables oid[]): copy only these tables.  The
 *		RELATION records the embassy receives, sealed, say which were copied.
 */
static void
copy_only_tables(CopyFramesState *state, ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	if (ARR_NDIM(arr) > 1 || ARR_ELEMTYPE(arr) != OIDOID)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("tables must be a one-dimensional array of OIDs"));
	deconstruct_array(arr, OIDOID, sizeof(Oid), true, TYPALIGN_INT,
					  &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("tables must name at least one table"));
	state->only = palloc(sizeof(Oid) * n);
	for (i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("tables must not contain null"));
		state->only[i] = DatumGetObjectId(elems[i]);
	}
	qsort(state->only, n, sizeof(Oid), oid_cmp);
	state->nonly = qunique(state->only, n, sizeof(Oid), oid_cmp);
}

/* End the scan of the current table. */
static void
copy_close_table(CopyFramesState *state)
{
	if (state->scan != NULL)
		table_endscan(state->scan);
	state->scan = NULL;
	if (state->slot != NULL)
		ExecDropSingleTupleTableSlot(state->slot);
	state->slot = NULL;
	if (state->rel != NULL)
		table_close(state->rel, NoLock);	/* keep the lock to the end */
	state->rel = NULL;
	MemoryContextReset(state->rel_cxt);
	memset(&state->ro, 0, sizeof(DeRelOut));
}

/*
 * Open the next table that still exists and describe it.  Returns false
 * when there are no more tables.
 */
static bool
copy_open_next_table(CopyFramesState *state)
{
	MemoryContext old;

	while (state->next_rel < state->nrelids)
	{
		Oid			relid = state->relids[state->next_rel++];
		Relation	rel = try_table_open(relid, AccessShareLock);

		if (rel == NULL)
			continue;			/* dropped since the snapshot */

		old = MemoryContextSwitchTo(state->mcxt);
		state->rel = rel;
		de_relout_build(&state->ro, rel, state->rel_cxt);
		if (state->with_rows)
		{
			state->scan = table_beginscan(rel, state->snapshot, 0, NULL);
			state->slot = table_slot_create(rel, NULL);
		}
		MemoryContextSwitchTo(old);

		de_write_relation(&state->body, rel, &state->ro);
		return true;
	}
	return false;
}

/* Release everything; also called when the query stops early. */
static void
copy_cleanup(Datum arg)
{
	CopyFramesState *state = (CopyFramesState *) DatumGetPointer(arg);

	if (state->cleaned)
		return;
	state->cleaned = true;
	copy_close_table(state);
	if (state->snapshot != NULL)
		UnregisterSnapshot(state->snapshot);
	state->snapshot = NULL;
	if (state->sealer != NULL)
		de_sealer_free(state->sealer);
	state->sealer = NULL;
}

/*
 * copy_next_frame
 *		Fill a body up to the batch size and seal it; the frame is returned
 *		as a bytea in the caller's memory context.
 */
static bytea *
copy_next_frame(CopyFramesState *state)
{
	MemoryContext callcxt = CurrentMemoryContext;
	StringInfoData out;
	uint16		flags = DE_FRAME_TXN_OPEN;
	XLogRecPtr	source_lsn;

	/* the body may already hold the HELLO, or the next table's RELATION */
	while (state->body.len < state->batch_bytes)
	{
		bool		found;

		CHECK_FOR_INTERRUPTS();

		if (state->rel == NULL && !copy_open_next_table(state))
		{
			/*
			 * the sequences as they are now, at or after the snapshot (not
			 * for a resync of some tables: the stream reports them)
			 */
			if (!state->sequences_written && state->only == NULL)
			{
				DeSeqReporter *seqs;

				seqs = de_seqreport_create(state->row_cxt,
										   de_schema_oid(false));
				de_seqreport_set_schemas(seqs, state->schemas);
				(void) de_seqreport_write(seqs, &state->body);
				MemoryContextReset(state->row_cxt);
				state->sequences_written = true;
				continue;		/* the body may be full now */
			}
			de_write_copy_end(&state->body, state->rows);
			state->finished = true;
			flags = 0;
			break;
		}

		MemoryContextSwitchTo(state->row_cxt);
		found = state->with_rows &&
			table_scan_getnextslot(state->scan, ForwardScanDirection,
								   state->slot);
		if (found)
		{
			slot_getallattrs(state->slot);
			de_write_insert_values(&state->body, &state->ro,
								   state->slot->tts_values,
								   state->slot->tts_isnull);
			state->rows++;
		}
		MemoryContextSwitchTo(callcxt);
		MemoryContextReset(state->row_cxt);

		if (!found)
			copy_close_table(state);
	}

	source_lsn = RecoveryInProgress() ? GetXLogReplayRecPtr(NULL) :
		GetFlushRecPtr(NULL);

	/* the frame goes straight into a bytea: reserve its header */
	initStringInfo(&out);
	out.len = VARHDRSZ;
	de_sealer_seal(state->sealer, state->body.data, (uint32) state->body.len,
				   flags, state->lsn, state->lsn, source_lsn,
				   state->finished, &out);
	SET_VARSIZE(out.data, out.len);
	resetStringInfo(&state->body);

	return (bytea *) out.data;
}

/*
 * data_embassy_copy_frames
 *		copy_frames(embassy_key text, session text, slot_name text,
 *		snapshot_name text [, schemas text[], with_rows boolean]) returns
 *		setof bytea.
 */
Datum
data_embassy_copy_frames(PG_FUNCTION_ARGS)
{
	return copy_frames_srf(fcinfo, false);
}

/*
 * data_embassy_copy_table_frames
 *		copy_table_frames(embassy_key text, session text, slot_name text,
 *		snapshot_name text, tables oid[]) returns setof bytea.
 */
Datum
data_embassy_copy_table_frames(PG_FUNCTION_ARGS)
{
	return copy_frames_srf(fcinfo, true);
}

static Datum
copy_frames_srf(FunctionCallInfo fcinfo, bool table_form)
{
	FuncCallContext *funcctx;
	CopyFramesState *state;

	if (SRF_IS_FIRSTCALL())
	{
		ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
		char	   *keytext;
		char	   *slot_name;
		char	   *snapshot_name;
		DePublicKey embassy_key;
		uint8		session[DE_SESSION_LEN];
		uint8		priv[DE_KEY_LEN];
		uint8		pub[DE_KEY_LEN];
		Snapshot	snap;
		XLogRecPtr	consistent;
		MemoryContext old;
		List	   *schemas = NIL;
		bool		with_rows = true;
		int			i;

		/*
		 * A role that may replicate already sees every change of every table
		 * through logical decoding; the frames are sealed for a pinned
		 * embassy only.
		 */
		if (!has_rolreplication(GetUserId()) && !de_is_admin(GetUserId()))
			ereport(ERROR,
					errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					errmsg("permission denied to copy tables to an embassy"),
					errhint("Only superusers, roles with the REPLICATION attribute and members of role \"%s\" may do this.",
							DE_ADMIN_ROLE));
		/* the six-argument form is not STRICT: schemas may be NULL */
		for (i = 0; i < Min(PG_NARGS(), 4); i++)
			if (PG_ARGISNULL(i))
				ereport(ERROR,
						errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("argument %d of copy_frames() must not be null",
							   i + 1));
		if (!table_form && PG_NARGS() > 5)
		{
			if (PG_ARGISNULL(5))
				ereport(ERROR,
						errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("with_rows must not be null"));
			with_rows = PG_GETARG_BOOL(5);
		}
		/* checked now, kept below in the call's memory */
		if (!table_form && PG_NARGS() > 4 && !PG_ARGISNULL(4))
			(void) de_schema_list_from_array(PG_GETARG_ARRAYTYPE_P(4),
											 "schemas");
		keytext = text_to_cstring(PG_GETARG_TEXT_PP(0));
		slot_name = text_to_cstring(PG_GETARG_TEXT_PP(2));
		snapshot_name = text_to_cstring(PG_GETARG_TEXT_PP(3));
		de_key_from_text(keytext, "embassy_key", &embassy_key);
		de_pin_require(&embassy_key);
		copy_parse_session(text_to_cstring(PG_GETARG_TEXT_PP(1)), session);

		/* in REPEATABLE READ, the transaction's snapshot for every query */
		snap = GetTransactionSnapshot();
		consistent = copy_bind_to_slot(embassy_key.dh, slot_name,
									   snapshot_name, snap, table_form);

		funcctx = SRF_FIRSTCALL_INIT();
		old = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);

		state = palloc0(sizeof(CopyFramesState));
		state->mcxt = funcctx->multi_call_memory_ctx;
		state->rel_cxt = AllocSetContextCreate(state->mcxt,
											   "data_embassy copy relation",
											   ALLOCSET_SMALL_SIZES);
		state->row_cxt = AllocSetContextCreate(state->mcxt,
											   "data_embassy copy row",
											   ALLOCSET_DEFAULT_SIZES);
		state->batch_bytes = de_batch_size_kb * 1024;
		if (!table_form && PG_NARGS() > 4 && !PG_ARGISNULL(4))
			schemas = de_schema_list_from_array(PG_GETARG_ARRAYTYPE_P(4),
												"schemas");
		state->schemas = schemas;
		state->with_rows = with_rows;
		state->snapshot = RegisterSnapshot(snap);
		state->lsn = consistent;
		if (table_form)
			copy_only_tables(state, PG_GETARG_ARRAYTYPE_P(4));

		de_identity_require(priv, pub);
		state->sealer = de_sealer_create(state->mcxt, priv, pub,
										 embassy_key.dh, session,
										 GetSystemIdentifier(), MyDatabaseId,
										 GetWALInsertionTimeLine(),
										 DE_FRAME_KIND_COPY,
										 de_compression_level, state->lsn);
		de_secure_zero(priv, sizeof(priv));

		initStringInfo(&state->body);
		enlargeStringInfo(&state->body, state->batch_bytes + 8192);
		de_write_hello(&state->body, slot_name, state->lsn,
					   GetFlushRecPtr(NULL), state->lsn,
					   InvalidXLogRecPtr, DE_HISTORY_NOT_ASKED, 0);
		if (!with_rows)
			de_write_message(&state->body, state->lsn, false,
							 DE_COPY_MODE_PREFIX,
							 strlen(DE_COPY_MODE_NO_ROWS),
							 DE_COPY_MODE_NO_ROWS);
		copy_list_tables(state);
		{
			char		count[16];
			int			n = snprintf(count, sizeof(count), "%d",
									 state->nrelids);

			de_write_message(&state->body, state->lsn, false,
							 DE_COPY_TABLES_PREFIX, n, count);
		}

		if (rsinfo != NULL && IsA(rsinfo, ReturnSetInfo))
			RegisterExprContextCallback(rsinfo->econtext, copy_cleanup,
										PointerGetDatum(state));

		funcctx->user_fctx = state;
		MemoryContextSwitchTo(old);
	}

	funcctx = SRF_PERCALL_SETUP();
	state = (CopyFramesState *) funcctx->user_fctx;

	if (state->finished)
	{
		ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

		/* the state goes with the multi-call context: forget the callback */
		copy_cleanup(PointerGetDatum(state));
		if (rsinfo != NULL && IsA(rsinfo, ReturnSetInfo))
			UnregisterExprContextCallback(rsinfo->econtext, copy_cleanup,
										  PointerGetDatum(state));
		SRF_RETURN_DONE(funcctx);
	}

	SRF_RETURN_NEXT(funcctx, PointerGetDatum(copy_next_frame(state)));
}
