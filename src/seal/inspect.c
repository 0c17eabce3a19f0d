/*-------------------------------------------------------------------------
 *
 * inspect.c
 *		  Looking into frames by hand: inspect_frames() opens frames with
 *		  this site's private key and shows their records; frame_header()
 *		  shows the clear header of one frame without opening it.
 *
 * inspect_frames() opens the frames in the order given, as a receiver
 * would: a frame that is tampered with, truncated, repeated, out of order
 * or from another stream raises the opener's error, and since the result
 * is materialized in one call, the error returns nothing at all.  It has
 * no session key (that lived in the receiving worker's memory only), so it
 * checks tags, the chain and the signatures frames carry, but no session
 * MAC: a diagnostic, not proof that an unsigned frame is the register's.
 *
 * Values are shown as the register's type would print them: converted
 * with the receive (binary) or input (text) function of the type the
 * RELATION record names, then with its output function, as a JSON string.
 *
 * IDENTIFICATION
 *		  src/seal/inspect.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "parser/parse_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "seal/codec.h"
#include "data_embassy.h"
#include "seal/frame.h"
#include "seal/keys.h"

PG_FUNCTION_INFO_V1(data_embassy_inspect_frames);
PG_FUNCTION_INFO_V1(data_embassy_frame_header);

#define INSPECT_NCOLS			7
#define FRAME_HEADER_NCOLS		14

/* One column of a relation seen in a RELATION record. */
typedef struct InspectColumn
{
	char	   *name;
	char		format;			/* DE_COL_BINARY or DE_COL_TEXT */
	bool		resolved;		/* the named type exists here */
	Oid			ioparam;
	int32		typmod;
	FmgrInfo	infn;			/* receive or input function */
	FmgrInfo	outfn;
} InspectColumn;

typedef struct InspectRelation
{
	Oid			relid;			/* hash key: the register's OID */
	char	   *qualname;
	int			natts;
	InspectColumn *cols;
} InspectRelation;

typedef struct InspectState
{
	MemoryContext mcxt;			/* lives for the whole call */
	HTAB	   *rels;
	TransactionId xid;			/* of the transaction being shown */
} InspectState;

/* ---------- JSON helpers ---------- */

static void
json_key(StringInfo buf, bool *first, const char *key)
{
	if (!*first)
		appendStringInfoString(buf, ", ");
	*first = false;
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
}

static void
json_lsn(StringInfo buf, XLogRecPtr lsn)
{
	appendStringInfo(buf, "\"%X/%X\"", LSN_FORMAT_ARGS(lsn));
}

/* A key whose value is a transaction id. */
static void
json_xid(StringInfo buf, bool *first, const char *key, TransactionId xid)
{
	json_key(buf, first, key);
	appendStringInfo(buf, "%u", xid);
}

static void
json_hex(StringInfo buf, const char *data, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t		i;

	appendStringInfoString(buf, "\"\\\\x");
	for (i = 0; i < len; i++)
	{
		appendStringInfoChar(buf, hex[((unsigned char) data[i]) >> 4]);
		appendStringInfoChar(buf, hex[((unsigned char) data[i]) & 0x0f]);
	}
	appendStringInfoChar(buf, '"');
}

/* Text bytes as a JSON string when valid in the server encoding, else hex. */
static void
json_text_or_hex(StringInfo buf, const char *data, size_t len)
{
	if (pg_verify_mbstr(GetDatabaseEncoding(), data, (int) len, true))
	{
		char	   *s = pnstrdup(data, len);

		escape_json(buf, s);
		pfree(s);
	}
	else
		json_hex(buf, data, len);
}

/* ---------- relations ---------- */

static const char *
inspect_replident_name(char replident)
{
	switch (replident)
	{
		case REPLICA_IDENTITY_DEFAULT:
			return "default";
		case REPLICA_IDENTITY_NOTHING:
			return "nothing";
		case REPLICA_IDENTITY_FULL:
			return "full";
		case REPLICA_IDENTITY_INDEX:
			return "index";
	}
	return "unknown";
}

/* Remember a relation and find the functions that show its values. */
static InspectRelation *
inspect_remember_relation(InspectState *state, DeRecord *rec)
{
	MemoryContext old = MemoryContextSwitchTo(state->mcxt);
	InspectRelation *rel;
	bool		found;
	int			i;

	rel = hash_search(state->rels, &rec->relid, HASH_ENTER, &found);
	rel->qualname = pstrdup(quote_qualified_identifier(rec->nspname,
													   rec->relname));
	rel->natts = rec->natts;
	rel->cols = palloc0(sizeof(InspectColumn) * Max(rec->natts, 1));

	for (i = 0; i < rec->natts; i++)
	{
		DeAttribute *att = &rec->atts[i];
		InspectColumn *col = &rel->cols[i];
		Oid			typid;
		int32		typmod;
		Oid			fn;
		bool		isvarlena;
		int16		typlen;
		bool		typbyval;
		char		typalign;
		char		typdelim;

		col->name = pstrdup(att->name);
		col->format = att->format;
		col->typmod = att->typmod;

		parseTypeString(att->typname, &typid, &typmod, true);
		if (!OidIsValid(typid))
			continue;
		get_type_io_data(typid,
						 att->format == DE_COL_BINARY ?
						 IOFunc_receive : IOFunc_input,
						 &typlen, &typbyval, &typalign, &typdelim,
						 &col->ioparam, &fn);
		if (!OidIsValid(fn))
			continue;
		fmgr_info_cxt(fn, &col->infn, state->mcxt);
		getTypeOutputInfo(typid, &fn, &isvarlena);
		fmgr_info_cxt(fn, &col->outfn, state->mcxt);
		col->resolved = true;
	}

	MemoryContextSwitchTo(old);
	return rel;
}

static InspectRelation *
inspect_find_relation(InspectState *state, Oid relid)
{
	return hash_search(state->rels, &relid, HASH_FIND, NULL);
}

/* ---------- values and tuples ---------- */

static void
inspect_value(StringInfo buf, InspectColumn *col, DeValue *v)
{
	switch (v->kind)
	{
		case DE_COL_NULL:
			appendStringInfoString(buf, "null");
			return;
		case DE_COL_UNCHANGED:
			appendStringInfoString(buf, "{\"unchanged_toast\": true}");
			return;
	}

	if (col != NULL && col->resolved && v->kind == col->format)
	{
		Datum		d;
		char	   *out;

		if (v->kind == DE_COL_BINARY)
		{
			StringInfoData in;

			/* receive functions expect the StringInfo convention: a NUL */
			in.data = palloc(v->len + 1);
			memcpy(in.data, v->data, v->len);
			in.data[v->len] = '\0';
			in.len = v->len;
			in.maxlen = v->len + 1;
			in.cursor = 0;
			d = ReceiveFunctionCall(&col->infn, &in, col->ioparam,
									col->typmod);
		}
		else
		{
			if (!pg_verify_mbstr(GetDatabaseEncoding(), v->data, v->len,
								 true))
			{
				json_hex(buf, v->data, v->len);
				return;
			}
			d = InputFunctionCall(&col->infn, pnstrdup(v->data, v->len),
								  col->ioparam, col->typmod);
		}
		out = OutputFunctionCall(&col->outfn, d);
		escape_json(buf, out);
		return;
	}

	/* a relation or type unknown here: show what travelled */
	if (v->kind == DE_COL_TEXT)
		json_text_or_hex(buf, v->data, v->len);
	else
		json_hex(buf, v->data, v->len);
}

static void
inspect_tuple(StringInfo buf, InspectRelation *rel, DeTuple *tup)
{
	bool		first = true;
	int			i;

	appendStringInfoChar(buf, '{');
	for (i = 0; i < tup->natts; i++)
	{
		InspectColumn *col = NULL;
		char		pos[32];

		if (rel != NULL && i < rel->natts)
		{
			col = &rel->cols[i];
			json_key(buf, &first, col->name);
		}
		else
		{
			snprintf(pos, sizeof(pos), "$%d", i + 1);
			json_key(buf, &first, pos);
		}
		inspect_value(buf, col, &tup->values[i]);
	}
	appendStringInfoChar(buf, '}');
}

static const char *
inspect_oldkind_name(char oldkind)
{
	switch (oldkind)
	{
		case DE_OLD_KEY:
			return "key";
		case DE_OLD_ROW:
			return "row";
		default:
			return "none";
	}
}

/* ---------- records ---------- */

/*
 * inspect_record
 *		Fill the lsn, xid, relation and detail of one record's row.
 */
static void
inspect_record(InspectState *state, DeRecord *rec, Datum *values,
			   bool *nulls)
{
	StringInfoData buf;
	InspectRelation *rel = NULL;
	bool		first = true;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');

	switch (rec->type)
	{
		case DE_REC_BEGIN:
			state->xid = rec->xid;
			values[3] = LSNGetDatum(rec->lsn);
			nulls[3] = false;
			json_key(&buf, &first, "final_lsn");
			json_lsn(&buf, rec->lsn);
			json_key(&buf, &first, "commit_time");
			escape_json(&buf, timestamptz_to_str(rec->commit_time));
			json_xid(&buf, &first, "xid", rec->xid);
			break;

		case DE_REC_STREAM_COMMIT:
			state->xid = rec->xid;
			json_xid(&buf, &first, "xid", rec->xid);
			/* FALLTHROUGH */
		case DE_REC_COMMIT:
			values[3] = LSNGetDatum(rec->lsn);
			nulls[3] = false;
			json_key(&buf, &first, "commit_lsn");
			json_lsn(&buf, rec->lsn);
			json_key(&buf, &first, "end_lsn");
			json_lsn(&buf, rec->end_lsn);
			json_key(&buf, &first, "commit_time");
			escape_json(&buf, timestamptz_to_str(rec->commit_time));
			break;

		case DE_REC_RELATION:
			rel = inspect_remember_relation(state, rec);
			json_key(&buf, &first, "nspname");
			escape_json(&buf, rec->nspname);
			json_key(&buf, &first, "relname");
			escape_json(&buf, rec->relname);
			json_key(&buf, &first, "replident");
			escape_json(&buf, inspect_replident_name(rec->replident));
			json_key(&buf, &first, "columns");
			appendStringInfoChar(&buf, '[');
			for (i = 0; i < rec->natts; i++)
			{
				DeAttribute *att = &rec->atts[i];
				bool		cfirst = true;

				if (i > 0)
					appendStringInfoString(&buf, ", ");
				appendStringInfoChar(&buf, '{');
				json_key(&buf, &cfirst, "name");
				escape_json(&buf, att->name);
				json_key(&buf, &cfirst, "type");
				escape_json(&buf, att->typname);
				json_key(&buf, &cfirst, "key");
				appendStringInfoString(&buf, att->is_key ? "true" : "false");
				json_key(&buf, &cfirst, "format");
				escape_json(&buf, att->format == DE_COL_BINARY ?
							"binary" : "text");
				appendStringInfoChar(&buf, '}');
			}
			appendStringInfoChar(&buf, ']');
			break;

		case DE_REC_INSERT:
			rel = inspect_find_relation(state, rec->relid);
			json_key(&buf, &first, "new");
			inspect_tuple(&buf, rel, &rec->newtup);
			break;

		case DE_REC_UPDATE:
		case DE_REC_DELETE:
			rel = inspect_find_relation(state, rec->relid);
			json_key(&buf, &first, "old_kind");
			escape_json(&buf, inspect_oldkind_name(rec->oldkind));
			if (rec->oldkind != DE_OLD_NONE)
			{
				json_key(&buf, &first, "old");
				inspect_tuple(&buf, rel, &rec->oldtup);
			}
			if (rec->type == DE_REC_UPDATE)
			{
				json_key(&buf, &first, "new");
				inspect_tuple(&buf, rel, &rec->newtup);
			}
			break;

		case DE_REC_TRUNCATE:
			json_key(&buf, &first, "relations");
			appendStringInfoChar(&buf, '[');
			for (i = 0; i < rec->nrelids; i++)
			{
				InspectRelation *r = inspect_find_relation(state,
														   rec->relids[i]);

				if (i > 0)
					appendStringInfoString(&buf, ", ");
				if (r != NULL)
					escape_json(&buf, r->qualname);
				else
					appendStringInfoString(&buf, "null");
			}
			appendStringInfoChar(&buf, ']');
			json_key(&buf, &first, "cascade");
			appendStringInfoString(&buf, rec->cascade ? "true" : "false");
			json_key(&buf, &first, "restart_identity");
			appendStringInfoString(&buf, rec->restart_seqs ? "true" : "false");
			break;

		case DE_REC_MESSAGE:
			values[3] = LSNGetDatum(rec->lsn);
			nulls[3] = false;
			json_key(&buf, &first, "prefix");
			escape_json(&buf, rec->prefix);
			json_key(&buf, &first, "transactional");
			appendStringInfoString(&buf, rec->transactional ? "true" : "false");
			json_key(&buf, &first, "content");
			json_text_or_hex(&buf, rec->content, rec->content_len);
			break;

		case DE_REC_STREAM_START:
			state->xid = rec->xid;
			json_xid(&buf, &first, "xid", rec->xid);
			json_key(&buf, &first, "first");
			appendStringInfoString(&buf, rec->first ? "true" : "false");
			break;

		case DE_REC_SUBXACT:
			json_xid(&buf, &first, "subxid", rec->xid);
			break;

		case DE_REC_STREAM_STOP:
			break;

		case DE_REC_STREAM_ABORT:
			state->xid = rec->xid;
			json_xid(&buf, &first, "xid", rec->xid);
			json_xid(&buf, &first, "subxid", rec->subxid);
			break;

		case DE_REC_HELLO:
			json_key(&buf, &first, "slot");
			escape_json(&buf, rec->slot);
			json_key(&buf, &first, "start_lsn");
			json_lsn(&buf, rec->lsn);
			json_key(&buf, &first, "flush_lsn");
			json_lsn(&buf, rec->end_lsn);
			json_key(&buf, &first, "confirmed_lsn");
			json_lsn(&buf, rec->confirmed_lsn);
			if (rec->history_status != DE_HISTORY_NOT_ASKED)
			{
				char		status[2] = {rec->history_status, '\0'};

				json_key(&buf, &first, "history_lsn");
				json_lsn(&buf, rec->history_lsn);
				json_key(&buf, &first, "history_status");
				escape_json(&buf, status);
				json_key(&buf, &first, "history_crc");
				appendStringInfo(&buf, "%u", rec->crc);
			}
			break;

		case DE_REC_HEARTBEAT:
			json_key(&buf, &first, "nonce");
			json_text_or_hex(&buf, (const char *) rec->nonce,
							 DE_HEARTBEAT_NONCE_LEN);
			json_key(&buf, &first, "lsn");
			json_lsn(&buf, rec->lsn);
			json_key(&buf, &first, "flush_lsn");
			json_lsn(&buf, rec->end_lsn);
			json_key(&buf, &first, "crc");
			appendStringInfo(&buf, "%u", rec->crc);
			break;

		case DE_REC_COPY_END:
			json_key(&buf, &first, "rows");
			appendStringInfo(&buf, UINT64_FORMAT, rec->rows);
			break;

		case DE_REC_SEQUENCES:
			json_key(&buf, &first, "sequences");
			appendStringInfoChar(&buf, '[');
			for (i = 0; i < rec->nsequences; i++)
			{
				if (i > 0)
					appendStringInfoString(&buf, ", ");
				appendStringInfoString(&buf, "{\"name\": ");
				escape_json(&buf, quote_qualified_identifier(rec->seq_nspnames[i],
															 rec->seq_relnames[i]));
				appendStringInfo(&buf, ", \"last_value\": " INT64_FORMAT "}",
								 rec->seq_values[i]);
			}
			appendStringInfoChar(&buf, ']');
			break;
	}

	appendStringInfoChar(&buf, '}');

	if (TransactionIdIsValid(state->xid) &&
		(rec->type != DE_REC_MESSAGE || rec->transactional))
	{
		values[4] = TransactionIdGetDatum(state->xid);
		nulls[4] = false;
	}
	if (rel != NULL)
	{
		values[5] = CStringGetTextDatum(rel->qualname);
		nulls[5] = false;
	}
	values[6] = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
	nulls[6] = false;

	if (rec->type == DE_REC_COMMIT || rec->type == DE_REC_STREAM_STOP ||
		rec->type == DE_REC_STREAM_ABORT || rec->type == DE_REC_STREAM_COMMIT)
		state->xid = InvalidTransactionId;
}

/*
 * data_embassy_inspect_frames
 *		inspect_frames(frames bytea[], register_key text) returns setof
 *		(frame_seq, record_no, record_type, lsn, xid, relation, detail).
 */
Datum
data_embassy_inspect_frames(PG_FUNCTION_ARGS)
{
	ArrayType  *frames = PG_GETARG_ARRAYTYPE_P(0);
	char	   *keytext = text_to_cstring(PG_GETARG_TEXT_PP(1));
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DePublicKey register_pub;
	uint8		priv[DE_KEY_LEN];
	uint8		pub[DE_KEY_LEN];
	Datum	   *elems;
	bool	   *elemnulls;
	int			nelems;
	DeFrameHeader hdr;
	DeOpener   *opener;
	InspectState state;
	HASHCTL		ctl;
	MemoryContext frame_cxt;
	StringInfoData plain;
	int			i;

	if (!superuser())
		ereport(ERROR,
				errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				errmsg("permission denied to inspect frames"),
				errhint("Only superusers may open frames with this site's private key."));

	de_key_from_text(keytext, "register_key", &register_pub);

	SetSingleFuncCall(fcinfo, 0);

	if (ARR_NDIM(frames) > 1)
		ereport(ERROR,
				errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				errmsg("frames must be a one-dimensional array"));
	deconstruct_array(frames, BYTEAOID, -1, false, TYPALIGN_INT,
					  &elems, &elemnulls, &nelems);
	for (i = 0; i < nelems; i++)
		if (elemnulls[i])
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("frame %d of the array is null", i + 1));
	if (nelems == 0)
		return (Datum) 0;

	/* the first frame says which kind of stream to open */
	{
		bytea	   *first = DatumGetByteaPP(elems[0]);

		de_frame_peek_header(VARDATA_ANY(first), VARSIZE_ANY_EXHDR(first),
							 &hdr);
	}

	de_identity_require(priv, pub);
	opener = de_opener_create(CurrentMemoryContext, priv, register_pub.dh,
							  register_pub.sign, NULL,
							  hdr.kind, false, 0, InvalidOid);
	de_secure_zero(priv, sizeof(priv));

	state.mcxt = CurrentMemoryContext;
	state.xid = InvalidTransactionId;
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(InspectRelation);
	ctl.hcxt = CurrentMemoryContext;
	state.rels = hash_create("data_embassy inspected relations", 32, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	initStringInfo(&plain);
	frame_cxt = AllocSetContextCreate(CurrentMemoryContext,
									  "data_embassy inspected frame",
									  ALLOCSET_DEFAULT_SIZES);

	for (i = 0; i < nelems; i++)
	{
		bytea	   *frame = DatumGetByteaPP(elems[i]);
		MemoryContext old;
		DeReader	reader;
		DeRecord	rec;
		int			record_no = 0;

		/* nothing of a frame is shown unless the whole frame opens */
		de_opener_open(opener, VARDATA_ANY(frame), VARSIZE_ANY_EXHDR(frame),
					   &hdr, &plain);

		old = MemoryContextSwitchTo(frame_cxt);
		de_reader_init(&reader, plain.data, plain.len);
		while (de_read_record(&reader, &rec))
		{
			Datum		values[INSPECT_NCOLS];
			bool		nulls[INSPECT_NCOLS];

			memset(nulls, true, sizeof(nulls));
			values[0] = Int64GetDatum((int64) hdr.seq);
			nulls[0] = false;
			values[1] = Int32GetDatum(++record_no);
			nulls[1] = false;
			values[2] = CStringGetTextDatum(de_record_type_name(rec.type));
			nulls[2] = false;

			inspect_record(&state, &rec, values, nulls);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
								 values, nulls);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(frame_cxt);
	}

	de_opener_free(opener);
	return (Datum) 0;
}

/*
 * data_embassy_frame_header
 *		The clear header of one frame, not authenticated.
 */
Datum
data_embassy_frame_header(PG_FUNCTION_ARGS)
{
	bytea	   *frame = PG_GETARG_BYTEA_PP(0);
	DeFrameHeader hdr;
	TupleDesc	tupdesc;
	Datum		values[FRAME_HEADER_NCOLS];
	bool		nulls[FRAME_HEADER_NCOLS];
	char		sysid[32];
	char		kind[2];
	bytea	   *prev;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	de_frame_peek_header(VARDATA_ANY(frame), VARSIZE_ANY_EXHDR(frame), &hdr);

	memset(nulls, false, sizeof(nulls));
	snprintf(sysid, sizeof(sysid), UINT64_FORMAT, hdr.sysid);
	kind[0] = hdr.kind;
	kind[1] = '\0';
	prev = palloc(VARHDRSZ + DE_HASH_LEN);
	SET_VARSIZE(prev, VARHDRSZ + DE_HASH_LEN);
	memcpy(VARDATA(prev), hdr.prev_hash, DE_HASH_LEN);

	values[0] = Int32GetDatum(hdr.version);
	values[1] = CStringGetTextDatum(kind);
	values[2] = Int32GetDatum(hdr.flags);
	values[3] = DirectFunctionCall3(numeric_in, CStringGetDatum(sysid),
									ObjectIdGetDatum(InvalidOid),
									Int32GetDatum(-1));
	values[4] = ObjectIdGetDatum(hdr.dboid);
	values[5] = CStringGetTextDatum(de_bytes_to_hex(hdr.eph_pub));
	values[6] = Int64GetDatum((int64) hdr.seq);
	values[7] = LSNGetDatum(hdr.start_lsn);
	values[8] = LSNGetDatum(hdr.end_lsn);
	values[9] = LSNGetDatum(hdr.commit_lsn);
	values[10] = LSNGetDatum(hdr.source_lsn);
	values[11] = Int32GetDatum((int32) hdr.plain_len);
	values[12] = Int32GetDatum((int32) hdr.sealed_len);
	values[13] = PointerGetDatum(prev);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
