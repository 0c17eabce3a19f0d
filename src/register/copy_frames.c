/*-------------------------------------------------------------------------
 *
 * copy_frames.c
 *		  copy_frames(embassy_key): the initial copy of every replicated
 *		  table as sealed frames of an initial-copy stream.
 *
 * The embassy imports the slot's exported snapshot and calls this
 * function; the tables and their rows are read with the caller's
 * snapshot, so the copy and the change stream that follows meet exactly.
 * The stream is RELATION then INSERT records, table after table, and a
 * last COPY_END record with the number of rows; a receiver that never sees
 * COPY_END has an incomplete copy.
 *
 * The function returns one frame per call (value-per-call mode), so memory
 * stays bounded by the frame size whatever the size of the tables.  Call
 * it in the select list to have frames streamed to the client as they are
 * sealed; in FROM, the executor materializes them first.
 *
 * Frame LSNs: every frame carries the confirmed position of the embassy's
 * slot (the point the change stream continues from), or 0 when that slot
 * does not exist in this database.
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
#include "access/xlogrecovery.h"
#include "catalog/pg_class.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "data_embassy.h"
#include "privilege.h"
#include "register/pins.h"
#include "register/plugin.h"
#include "seal/codec.h"
#include "seal/frame.h"
#include "seal/keys.h"

PG_FUNCTION_INFO_V1(data_embassy_copy_frames);

typedef struct CopyFramesState
{
	MemoryContext mcxt;			/* lives for the whole call */
	MemoryContext rel_cxt;		/* output state of the current table */
	MemoryContext row_cxt;		/* reset after every row */
	DeSealer   *sealer;
	Snapshot	snapshot;		/* registered copy of the caller's */
	XLogRecPtr	lsn;			/* the slot's confirmed position, or 0 */
	int			batch_bytes;

	Oid		   *relids;			/* tables to copy, in OID order */
	int			nrelids;
	int			next_rel;

	Relation	rel;			/* table being copied, or NULL */
	TableScanDesc scan;
	TupleTableSlot *slot;
	DeRelOut	ro;

	StringInfoData body;
	uint64		rows;
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

		if (!de_class_is_replicated(form->oid, form, de_nsp))
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
}

/* Confirmed position of the embassy's slot in this database, or 0. */
static XLogRecPtr
copy_slot_lsn(const uint8 *embassy_pub)
{
	char	   *slot_name = de_slot_name_for_key(embassy_pub, MyDatabaseId);
	ReplicationSlot *slot;
	XLogRecPtr	lsn = InvalidXLogRecPtr;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(slot_name, false);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		if (slot->data.database == MyDatabaseId)
			lsn = slot->data.confirmed_flush;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	pfree(slot_name);
	return lsn;
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
		state->scan = table_beginscan(rel, state->snapshot, 0, NULL);
		state->slot = table_slot_create(rel, NULL);
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
			de_write_copy_end(&state->body, state->rows);
			state->finished = true;
			flags = 0;
			break;
		}

		MemoryContextSwitchTo(state->row_cxt);
		found = table_scan_getnextslot(state->scan, ForwardScanDirection,
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
				   flags, state->lsn, state->lsn, source_lsn, &out);
	SET_VARSIZE(out.data, out.len);
	resetStringInfo(&state->body);

	return (bytea *) out.data;
}

/*
 * data_embassy_copy_frames
 *		copy_frames(embassy_key text) returns setof bytea.
 */
Datum
data_embassy_copy_frames(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	CopyFramesState *state;

	if (SRF_IS_FIRSTCALL())
	{
		ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
		char	   *keytext = text_to_cstring(PG_GETARG_TEXT_PP(0));
		DePublicKey embassy_key;
		uint8		session[DE_SESSION_LEN] = {0};
		uint8		priv[DE_KEY_LEN];
		uint8		pub[DE_KEY_LEN];
		MemoryContext old;

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
		de_key_from_text(keytext, "embassy_key", &embassy_key);
		de_pin_require(&embassy_key);

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
		state->snapshot = RegisterSnapshot(ActiveSnapshotSet() ?
										   GetActiveSnapshot() :
										   GetTransactionSnapshot());
		state->lsn = copy_slot_lsn(embassy_key.dh);

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
		{
			char	   *slot_name = de_slot_name_for_key(embassy_key.dh,
														 MyDatabaseId);

			de_write_hello(&state->body, slot_name, state->lsn,
						   GetFlushRecPtr(NULL));
		}
		copy_list_tables(state);

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
