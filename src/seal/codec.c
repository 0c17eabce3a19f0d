/*-------------------------------------------------------------------------
 *
 * codec.c
 *		  Change records: writers for the register side (plugin, initial
 *		  copy) and the reader the embassy and inspect_frames() use.
 *
 * The record layout is described in codec.h.  Both halves live here so
 * that they cannot drift apart.
 *
 * Values travel in the binary send format of built-in types (and of enums
 * and domains over them), else as text output.  Strings travel in the
 * register's server encoding: the codec writes the common string types
 * (text, varchar, bpchar, name, json) itself, without the conversion to
 * the client encoding their send functions would make, and it writes the
 * common fixed-size types itself too, which spares a palloc'd buffer per
 * value on this hot path.  Other types go through their send or output
 * functions.
 *
 * The reader trusts nothing: every count and length is checked against
 * the bytes left in the body before it is used, and nothing is allocated
 * from a count that has not been checked.  Values are not copied: they
 * point into the body.
 *
 * IDENTIFICATION
 *		  src/seal/codec.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "access/sysattr.h"
#include "access/transam.h"
#include "access/tupdesc.h"
#include "catalog/pg_type.h"
#include "libpq/pqformat.h"
#include "nodes/bitmapset.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/uuid.h"

#include "seal/codec.h"

/* ---------- writing helpers ---------- */

/*
 * Integers are written with pqformat.h's pq_sendint*() (big-endian, the
 * buffer grown as needed), or with pq_writeint*() after codec_reserve()
 * has made room for a whole fixed-size record at once.
 */

/* Make room for n more bytes (and the StringInfo's trailing NUL). */
static inline void
codec_reserve(StringInfo out, size_t n)
{
	if ((size_t) (out->maxlen - out->len) <= n)
		enlargeStringInfo(out, (int) n);
}

/* A string: 4-byte length, then the bytes. */
static inline void
codec_put_str(StringInfo out, const char *s, size_t len)
{
	codec_reserve(out, sizeof(uint32) + len);
	pq_writeint32(out, (uint32) len);
	memcpy(out->data + out->len, s, len);
	out->len += len;
}

/* A value: kind byte, 4-byte length, bytes. */
static inline void
codec_put_value(StringInfo out, char kind, const void *p, size_t len)
{
	if (len > PG_UINT32_MAX)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("value of %zu bytes is too large to replicate", len));
	codec_reserve(out, 1 + sizeof(uint32) + len);
	pq_writeint8(out, (uint8) kind);
	pq_writeint32(out, (uint32) len);
	memcpy(out->data + out->len, p, len);
	out->len += len;
}

/* Fixed-size big-endian binary values, as their send functions make them. */
static inline void
codec_put_value_u32(StringInfo out, uint32 v)
{
	uint32		be = pg_hton32(v);

	codec_put_value(out, DE_COL_BINARY, &be, sizeof(be));
}

static inline void
codec_put_value_u64(StringInfo out, uint64 v)
{
	uint64		be = pg_hton64(v);

	codec_put_value(out, DE_COL_BINARY, &be, sizeof(be));
}

/*
 * Is typoid an OID alias type (regclass...)?  Their binary form is a bare
 * OID, meaningless in another cluster; their text form is a name.
 */
static bool
codec_is_oid_alias(Oid typoid)
{
	switch (typoid)
	{
		case REGPROCOID:
		case REGPROCEDUREOID:
		case REGOPEROID:
		case REGOPERATOROID:
		case REGCLASSOID:
		case REGTYPEOID:
		case REGCONFIGOID:
		case REGDICTIONARYOID:
		case REGNAMESPACEOID:
		case REGROLEOID:
		case REGCOLLATIONOID:
			return true;
		default:
			return false;
	}
}

/*
 * Choose the wire format of a type: binary for built-in types (arrays of
 * built-in types included), enums and domains over either; text for
 * everything whose binary form embeds cluster-specific OIDs or that has
 * no binary form.
 */
static char
codec_column_format(Oid typoid)
{
	Oid			base = getBaseType(typoid);
	Oid			elem;
	Oid			sendfn;
	Oid			ioparam;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	char		typdelim;

	if (type_is_enum(base))
		return DE_COL_BINARY;
	if (base >= FirstGenbkiObjectId)
		return DE_COL_TEXT;
	if (get_typtype(base) == TYPTYPE_COMPOSITE)
		return DE_COL_TEXT;
	elem = get_element_type(base);
	if (OidIsValid(elem) &&
		(elem >= FirstGenbkiObjectId ||
		 get_typtype(elem) == TYPTYPE_COMPOSITE))
		return DE_COL_TEXT;
	if (codec_is_oid_alias(base) || codec_is_oid_alias(elem))
		return DE_COL_TEXT;

	/* some built-in types (aclitem...) have no binary form */
	get_type_io_data(base, IOFunc_send, &typlen, &typbyval, &typalign,
					 &typdelim, &ioparam, &sendfn);
	if (!OidIsValid(sendfn))
		return DE_COL_TEXT;
	if (OidIsValid(elem))
	{
		get_type_io_data(elem, IOFunc_send, &typlen, &typbyval, &typalign,
						 &typdelim, &ioparam, &sendfn);
		if (!OidIsValid(sendfn))
			return DE_COL_TEXT;
	}
	return DE_COL_BINARY;
}

/* ---------- relation output state ---------- */

/*
 * de_relout_build
 *		Work out, once per relation, which columns travel and how.
 */
void
de_relout_build(DeRelOut *ro, Relation rel, MemoryContext mcxt)
{
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext oldcxt;
	int			i;

	oldcxt = MemoryContextSwitchTo(mcxt);

	ro->relid = RelationGetRelid(rel);
	ro->natts = desc->natts;
	ro->nlive = 0;
	ro->desc = CreateTupleDescCopyConstr(desc);
	ro->cols = palloc0(sizeof(DeColumnOut) * Max(desc->natts, 1));
	ro->values = palloc(sizeof(Datum) * Max(desc->natts, 1));
	ro->isnull = palloc(sizeof(bool) * Max(desc->natts, 1));

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		DeColumnOut *col = &ro->cols[i];
		Oid			fnoid;
		bool		isvarlena;

		/*
		 * Stored generated columns travel like any other: the embassy keeps
		 * the values the register stored rather than computing its own (an
		 * expression may use tableoid, or a function that changed).
		 */
		if (att->attisdropped)
		{
			col->live = false;
			continue;
		}
		col->live = true;
		col->is_varlena = (att->attlen == -1);
		col->format = codec_column_format(att->atttypid);
		if (col->format == DE_COL_BINARY)
			getTypeBinaryOutputInfo(att->atttypid, &fnoid, &isvarlena);
		else
			getTypeOutputInfo(att->atttypid, &fnoid, &isvarlena);
		fmgr_info_cxt(fnoid, &col->outfn, mcxt);
		ro->nlive++;
	}

	MemoryContextSwitchTo(oldcxt);
}

/* ---------- record writers ---------- */

void
de_write_begin(StringInfo out, XLogRecPtr final_lsn, TimestampTz commit_time,
			   TransactionId xid)
{
	codec_reserve(out, 1 + 8 + 8 + 4);
	pq_writeint8(out, DE_REC_BEGIN);
	pq_writeint64(out, final_lsn);
	pq_writeint64(out, (uint64) commit_time);
	pq_writeint32(out, xid);
}

void
de_write_commit(StringInfo out, XLogRecPtr commit_lsn, XLogRecPtr end_lsn,
				TimestampTz commit_time)
{
	codec_reserve(out, 1 + 8 + 8 + 8);
	pq_writeint8(out, DE_REC_COMMIT);
	pq_writeint64(out, commit_lsn);
	pq_writeint64(out, end_lsn);
	pq_writeint64(out, (uint64) commit_time);
}

void
de_write_stream_start(StringInfo out, TransactionId xid, bool first)
{
	codec_reserve(out, 1 + 4 + 1);
	pq_writeint8(out, DE_REC_STREAM_START);
	pq_writeint32(out, xid);
	pq_writeint8(out, first ? 1 : 0);
}

void
de_write_subxact(StringInfo out, TransactionId xid)
{
	codec_reserve(out, 1 + 4);
	pq_writeint8(out, DE_REC_SUBXACT);
	pq_writeint32(out, xid);
}

void
de_write_stream_stop(StringInfo out)
{
	codec_reserve(out, 1);
	pq_writeint8(out, DE_REC_STREAM_STOP);
}

void
de_write_stream_abort(StringInfo out, TransactionId xid, TransactionId subxid)
{
	codec_reserve(out, 1 + 4 + 4);
	pq_writeint8(out, DE_REC_STREAM_ABORT);
	pq_writeint32(out, xid);
	pq_writeint32(out, subxid);
}

void
de_write_stream_commit(StringInfo out, TransactionId xid,
					   XLogRecPtr commit_lsn, XLogRecPtr end_lsn,
					   TimestampTz commit_time)
{
	codec_reserve(out, 1 + 4 + 8 + 8 + 8);
	pq_writeint8(out, DE_REC_STREAM_COMMIT);
	pq_writeint32(out, xid);
	pq_writeint64(out, commit_lsn);
	pq_writeint64(out, end_lsn);
	pq_writeint64(out, (uint64) commit_time);
}

/*
 * de_write_relation
 *		Describe the live columns of a relation.  With REPLICA IDENTITY FULL
 *		every column is a key column, as pgoutput marks them.
 */
void
de_write_relation(StringInfo out, Relation rel, const DeRelOut *ro)
{
	TupleDesc	desc = RelationGetDescr(rel);
	char	   *nspname = get_namespace_name(RelationGetNamespace(rel));
	const char *relname = RelationGetRelationName(rel);
	char		replident = rel->rd_rel->relreplident;
	Bitmapset  *idattrs = NULL;
	int			i;

	if (nspname == NULL)
		elog(ERROR, "cache lookup failed for namespace %u",
			 RelationGetNamespace(rel));
	if (ro->nlive > PG_UINT16_MAX)
		elog(ERROR, "relation \"%s\" has too many columns", relname);

	if (replident != REPLICA_IDENTITY_FULL)
		idattrs = RelationGetIdentityKeyBitmap(rel);

	pq_sendint8(out, DE_REC_RELATION);
	pq_sendint32(out, RelationGetRelid(rel));
	codec_put_str(out, nspname, strlen(nspname));
	codec_put_str(out, relname, strlen(relname));
	pq_sendint8(out, (uint8) replident);
	pq_sendint16(out, (uint16) ro->nlive);

	for (i = 0; i < desc->natts && i < ro->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const DeColumnOut *col = &ro->cols[i];
		uint8		flags = 0;
		char	   *typname;

		if (!col->live)
			continue;
		if (replident == REPLICA_IDENTITY_FULL ||
			bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber,
						  idattrs))
			flags |= 1;
		typname = format_type_be_qualified(att->atttypid);

		pq_sendint8(out, flags);
		codec_put_str(out, NameStr(att->attname), strlen(NameStr(att->attname)));
		pq_sendint32(out, att->atttypid);
		pq_sendint32(out, (uint32) att->atttypmod);
		pq_sendint8(out, (uint8) col->format);
		codec_put_str(out, typname, strlen(typname));
		pfree(typname);
	}

	bms_free(idattrs);
	pfree(nspname);
}

/*
 * codec_put_binary_value
 *		One non-null value in binary format.  The common types are written
 *		directly; the rest go through the type's send function.
 */
static inline void
codec_put_binary_value(StringInfo out, DeColumnOut *col, Datum value)
{
	switch (col->outfn.fn_oid)
	{
		case F_INT4SEND:
		case F_OIDSEND:
		case F_DATE_SEND:
			codec_put_value_u32(out, DatumGetUInt32(value));
			return;
		case F_INT8SEND:
		case F_TIMESTAMP_SEND:
		case F_TIMESTAMPTZ_SEND:
		case F_TIME_SEND:
			codec_put_value_u64(out, (uint64) DatumGetInt64(value));
			return;
		case F_INT2SEND:
			{
				uint16		be = pg_hton16((uint16) DatumGetInt16(value));

				codec_put_value(out, DE_COL_BINARY, &be, sizeof(be));
				return;
			}
		case F_BOOLSEND:
			{
				uint8		b = DatumGetBool(value) ? 1 : 0;

				codec_put_value(out, DE_COL_BINARY, &b, 1);
				return;
			}
		case F_FLOAT4SEND:
			{
				float4		f = DatumGetFloat4(value);
				uint32		bits;

				memcpy(&bits, &f, sizeof(bits));
				codec_put_value_u32(out, bits);
				return;
			}
		case F_FLOAT8SEND:
			{
				float8		f = DatumGetFloat8(value);
				uint64		bits;

				memcpy(&bits, &f, sizeof(bits));
				codec_put_value_u64(out, bits);
				return;
			}
		case F_UUID_SEND:
			codec_put_value(out, DE_COL_BINARY,
							DatumGetUUIDP(value)->data, UUID_LEN);
			return;
		case F_NAMESEND:
			{
				Name		n = DatumGetName(value);

				codec_put_value(out, DE_COL_BINARY, NameStr(*n),
								strlen(NameStr(*n)));
				return;
			}
		case F_TEXTSEND:
		case F_VARCHARSEND:
		case F_BPCHARSEND:
		case F_BYTEASEND:
		case F_JSON_SEND:
			{
				struct varlena *v = PG_DETOAST_DATUM_PACKED(value);

				codec_put_value(out, DE_COL_BINARY, VARDATA_ANY(v),
								VARSIZE_ANY_EXHDR(v));
				if ((Pointer) v != DatumGetPointer(value))
					pfree(v);
				return;
			}
		default:
			{
				bytea	   *b = SendFunctionCall(&col->outfn, value);

				codec_put_value(out, DE_COL_BINARY, VARDATA(b),
								VARSIZE(b) - VARHDRSZ);
				pfree(b);
				return;
			}
	}
}

/*
 * codec_put_tuple
 *		Write the live columns of already-deformed values.  unchanged_toast:
 *		an on-disk TOAST pointer means "unchanged" (decoded changes); false
 *		sends it in full (the initial copy).
 */
static void
codec_put_tuple(StringInfo out, DeRelOut *ro, Datum *values, bool *isnull,
				bool unchanged_toast)
{
	int			i;

	pq_sendint16(out, (uint16) ro->nlive);

	for (i = 0; i < ro->natts; i++)
	{
		DeColumnOut *col = &ro->cols[i];
		Datum		value = values[i];

		if (!col->live)
			continue;

		if (isnull[i])
		{
			pq_sendint8(out, DE_COL_NULL);
			continue;
		}

		if (col->is_varlena && unchanged_toast &&
			VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value)))
		{
			pq_sendint8(out, DE_COL_UNCHANGED);
			continue;
		}

		if (col->format == DE_COL_BINARY)
			codec_put_binary_value(out, col, value);
		else
		{
			char	   *s = OutputFunctionCall(&col->outfn, value);

			codec_put_value(out, DE_COL_TEXT, s, strlen(s));
			pfree(s);
		}
	}
}

/* Deform a decoded heap tuple and write it. */
static void
codec_put_heap_tuple(StringInfo out, DeRelOut *ro, HeapTuple tuple)
{
	heap_deform_tuple(tuple, ro->desc, ro->values, ro->isnull);
	codec_put_tuple(out, ro, ro->values, ro->isnull, true);
}

void
de_write_insert(StringInfo out, DeRelOut *ro, HeapTuple newtuple)
{
	pq_sendint8(out, DE_REC_INSERT);
	pq_sendint32(out, ro->relid);
	codec_put_heap_tuple(out, ro, newtuple);
}

void
de_write_update(StringInfo out, DeRelOut *ro, HeapTuple oldtuple,
				bool old_is_key, HeapTuple newtuple)
{
	pq_sendint8(out, DE_REC_UPDATE);
	pq_sendint32(out, ro->relid);
	if (oldtuple == NULL)
		pq_sendint8(out, DE_OLD_NONE);
	else
	{
		pq_sendint8(out, old_is_key ? DE_OLD_KEY : DE_OLD_ROW);
		codec_put_heap_tuple(out, ro, oldtuple);
	}
	codec_put_heap_tuple(out, ro, newtuple);
}

void
de_write_delete(StringInfo out, DeRelOut *ro, HeapTuple oldtuple,
				bool old_is_key)
{
	pq_sendint8(out, DE_REC_DELETE);
	pq_sendint32(out, ro->relid);
	pq_sendint8(out, old_is_key ? DE_OLD_KEY : DE_OLD_ROW);
	codec_put_heap_tuple(out, ro, oldtuple);
}

void
de_write_truncate(StringInfo out, int nrelids, const Oid *relids,
				  bool cascade, bool restart_seqs)
{
	uint8		flags = 0;
	int			i;

	if (cascade)
		flags |= DE_TRUNCATE_CASCADE;
	if (restart_seqs)
		flags |= DE_TRUNCATE_RESTART;

	codec_reserve(out, 1 + 1 + 4 + 4 * (size_t) nrelids);
	pq_writeint8(out, DE_REC_TRUNCATE);
	pq_writeint8(out, flags);
	pq_writeint32(out, (uint32) nrelids);
	for (i = 0; i < nrelids; i++)
		pq_writeint32(out, relids[i]);
}

void
de_write_message(StringInfo out, XLogRecPtr lsn, bool transactional,
				 const char *prefix, Size sz, const char *content)
{
	pq_sendint8(out, DE_REC_MESSAGE);
	pq_sendint8(out, transactional ? DE_MESSAGE_TRANSACTIONAL : 0);
	pq_sendint64(out, lsn);
	codec_put_str(out, prefix, strlen(prefix));
	codec_put_str(out, content, sz);
}

void
de_write_insert_values(StringInfo out, DeRelOut *ro, Datum *values,
					   bool *isnull)
{
	pq_sendint8(out, DE_REC_INSERT);
	pq_sendint32(out, ro->relid);
	codec_put_tuple(out, ro, values, isnull, false);
}

void
de_write_copy_end(StringInfo out, uint64 rows)
{
	pq_sendint8(out, DE_REC_COPY_END);
	pq_sendint64(out, rows);
}

void
de_write_hello(StringInfo out, const char *slot, XLogRecPtr start_lsn,
			   XLogRecPtr flush_lsn, XLogRecPtr confirmed_lsn,
			   XLogRecPtr history_lsn, char history_status,
			   uint32 history_crc)
{
	pq_sendint8(out, DE_REC_HELLO);
	codec_put_str(out, slot, strlen(slot));
	pq_sendint64(out, start_lsn);
	pq_sendint64(out, flush_lsn);
	pq_sendint64(out, confirmed_lsn);
	pq_sendint64(out, history_lsn);
	pq_sendint8(out, (uint8) history_status);
	pq_sendint32(out, history_crc);
}

void
de_write_heartbeat(StringInfo out, const uint8 *nonce, XLogRecPtr lsn,
				   XLogRecPtr flush_lsn, uint32 crc)
{
	pq_sendint8(out, DE_REC_HEARTBEAT);
	pq_sendbytes(out, (const char *) nonce, DE_HEARTBEAT_NONCE_LEN);
	pq_sendint64(out, lsn);
	pq_sendint64(out, flush_lsn);
	pq_sendint32(out, crc);
}

void
de_write_sequences(StringInfo out, int n, char **nspnames, char **relnames,
				   const int64 *last_values)
{
	int			i;

	pq_sendint8(out, DE_REC_SEQUENCES);
	pq_sendint32(out, (uint32) n);
	for (i = 0; i < n; i++)
	{
		codec_put_str(out, nspnames[i], strlen(nspnames[i]));
		codec_put_str(out, relnames[i], strlen(relnames[i]));
		pq_sendint64(out, (uint64) last_values[i]);
	}
}

/* ---------- reading ---------- */

void
de_reader_init(DeReader *reader, char *data, size_t len)
{
	reader->data = data;
	reader->len = len;
	reader->pos = 0;
}

/*
 * Report a malformed body.  "field" names the field being read as codec.h
 * does (for a run of fields checked at once, the first of them); "start"
 * is the offset of the record it belongs to.
 */
static void
codec_malformed(DeReader *reader, size_t start, char type, const char *field,
				size_t need)
{
	ereport(ERROR,
			errcode(ERRCODE_DATA_CORRUPTED),
			errmsg("malformed change record at offset %zu of a frame body",
				   start),
			errdetail("The %s record needs %zu bytes from field \"%s\" on, at offset %zu, but the body has %zu left.",
					  de_record_type_name(type), need, field, reader->pos,
					  reader->len - reader->pos));
}

/* Report a field whose value is not one the layout allows. */
static void
codec_invalid(size_t start, char type, const char *field, unsigned int value)
{
	ereport(ERROR,
			errcode(ERRCODE_DATA_CORRUPTED),
			errmsg("malformed change record at offset %zu of a frame body",
				   start),
			errdetail("Field \"%s\" of the %s record has the invalid value %u.",
					  field, de_record_type_name(type), value));
}

/* Make sure n bytes are left; "field" names them for the error. */
static inline void
codec_need(DeReader *reader, size_t start, char type, const char *field,
		   size_t n)
{
	if (reader->len - reader->pos < n)
		codec_malformed(reader, start, type, field, n);
}

/*
 * Field readers.  They run only after codec_need() has checked the bytes,
 * so they check nothing themselves.  pqformat.h's pq_getmsgint*() are not
 * used: they check every field again, report a short message as a
 * protocol violation without naming the record, and take int lengths,
 * while a frame body is checked per record and reported as corrupted data.
 */
static inline uint8
codec_get_u8(DeReader *reader)
{
	return (uint8) reader->data[reader->pos++];
}

static inline uint16
codec_get_u16(DeReader *reader)
{
	uint16		v;

	memcpy(&v, reader->data + reader->pos, sizeof(v));
	reader->pos += sizeof(v);
	return pg_ntoh16(v);
}

static inline uint32
codec_get_u32(DeReader *reader)
{
	uint32		v;

	memcpy(&v, reader->data + reader->pos, sizeof(v));
	reader->pos += sizeof(v);
	return pg_ntoh32(v);
}

static inline uint64
codec_get_u64(DeReader *reader)
{
	uint64		v;

	memcpy(&v, reader->data + reader->pos, sizeof(v));
	reader->pos += sizeof(v);
	return pg_ntoh64(v);
}

/* A string field as a palloc'd, NUL-terminated copy. */
static char *
codec_get_name(DeReader *reader, size_t start, char type, const char *field)
{
	uint32		len;
	char	   *s;

	codec_need(reader, start, type, field, sizeof(uint32));
	len = codec_get_u32(reader);
	codec_need(reader, start, type, field, len);
	if (memchr(reader->data + reader->pos, '\0', len) != NULL)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("malformed change record at offset %zu of a frame body",
					   start),
				errdetail("Field \"%s\" of the %s record contains a zero byte.",
						  field, de_record_type_name(type)));
	s = palloc(len + 1);
	memcpy(s, reader->data + reader->pos, len);
	s[len] = '\0';
	reader->pos += len;
	return s;
}

/* A tuple: values point into the body. */
static void
codec_get_tuple(DeReader *reader, size_t start, char type, DeTuple *tup)
{
	int			natts;
	int			i;

	codec_need(reader, start, type, "natts", sizeof(uint16));
	natts = codec_get_u16(reader);
	/* every value takes at least its kind byte */
	codec_need(reader, start, type, "kind", natts);

	tup->natts = natts;
	tup->values = palloc(sizeof(DeValue) * Max(natts, 1));

	for (i = 0; i < natts; i++)
	{
		DeValue    *v = &tup->values[i];

		codec_need(reader, start, type, "kind", 1);
		v->kind = (char) codec_get_u8(reader);
		switch (v->kind)
		{
			case DE_COL_NULL:
			case DE_COL_UNCHANGED:
				v->len = 0;
				v->data = NULL;
				break;
			case DE_COL_BINARY:
			case DE_COL_TEXT:
				codec_need(reader, start, type, "len",
						   sizeof(uint32));
				v->len = codec_get_u32(reader);
				codec_need(reader, start, type, "bytes", v->len);
				v->data = reader->data + reader->pos;
				reader->pos += v->len;
				break;
			default:
				codec_invalid(start, type, "kind",
							  (unsigned char) v->kind);
		}
	}
}

static char
codec_get_oldkind(DeReader *reader, size_t start, char type, bool allow_none)
{
	char		k;

	codec_need(reader, start, type, "oldkind", 1);
	k = (char) codec_get_u8(reader);
	if (k != DE_OLD_KEY && k != DE_OLD_ROW && !(allow_none && k == DE_OLD_NONE))
		codec_invalid(start, type, "oldkind", (unsigned char) k);
	return k;
}

static void
codec_get_relation(DeReader *reader, size_t start, DeRecord *rec)
{
	const char	type = DE_REC_RELATION;
	int			i;

	codec_need(reader, start, type, "relid", sizeof(uint32));
	rec->relid = codec_get_u32(reader);
	rec->nspname = codec_get_name(reader, start, type, "nspname");
	rec->relname = codec_get_name(reader, start, type, "relname");
	codec_need(reader, start, type, "replident",
			   1 + sizeof(uint16));
	rec->replident = (char) codec_get_u8(reader);
	rec->natts = codec_get_u16(reader);

	/* flags, name length, type OID, typmod, format, type name length */
	codec_need(reader, start, type, "flags",
			   (size_t) rec->natts * (1 + 4 + 4 + 4 + 1 + 4));
	rec->atts = palloc0(sizeof(DeAttribute) * Max(rec->natts, 1));

	for (i = 0; i < rec->natts; i++)
	{
		DeAttribute *att = &rec->atts[i];
		uint8		flags;

		codec_need(reader, start, type, "flags", 1);
		flags = codec_get_u8(reader);
		if (flags & ~1)
			codec_invalid(start, type, "flags", flags);
		att->is_key = (flags & 1) != 0;
		att->name = codec_get_name(reader, start, type, "name");
		codec_need(reader, start, type, "typoid",
				   sizeof(uint32) * 2 + 1);
		att->typoid = codec_get_u32(reader);
		att->typmod = (int32) codec_get_u32(reader);
		att->format = (char) codec_get_u8(reader);
		if (att->format != DE_COL_BINARY && att->format != DE_COL_TEXT)
			codec_invalid(start, type, "format",
						  (unsigned char) att->format);
		att->typname = codec_get_name(reader, start, type, "typename");
	}
}

/*
 * de_read_record
 *		Read the next record; false at the clean end of the body.
 */
bool
de_read_record(DeReader *reader, DeRecord *rec)
{
	size_t		start = reader->pos;
	char		type;

	if (reader->pos >= reader->len)
		return false;

	memset(rec, 0, sizeof(DeRecord));
	type = (char) codec_get_u8(reader);
	rec->type = type;

	switch (type)
	{
		case DE_REC_BEGIN:
			codec_need(reader, start, type, "final_lsn", 8 + 8 + 4);
			rec->lsn = codec_get_u64(reader);
			rec->commit_time = (TimestampTz) codec_get_u64(reader);
			rec->xid = codec_get_u32(reader);
			break;

		case DE_REC_COMMIT:
			codec_need(reader, start, type, "commit_lsn", 8 + 8 + 8);
			rec->lsn = codec_get_u64(reader);
			rec->end_lsn = codec_get_u64(reader);
			rec->commit_time = (TimestampTz) codec_get_u64(reader);
			break;

		case DE_REC_RELATION:
			codec_get_relation(reader, start, rec);
			break;

		case DE_REC_INSERT:
			codec_need(reader, start, type, "relid",
					   sizeof(uint32));
			rec->relid = codec_get_u32(reader);
			rec->oldkind = DE_OLD_NONE;
			codec_get_tuple(reader, start, type, &rec->newtup);
			break;

		case DE_REC_UPDATE:
			codec_need(reader, start, type, "relid",
					   sizeof(uint32));
			rec->relid = codec_get_u32(reader);
			rec->oldkind = codec_get_oldkind(reader, start, type, true);
			if (rec->oldkind != DE_OLD_NONE)
				codec_get_tuple(reader, start, type, &rec->oldtup);
			codec_get_tuple(reader, start, type, &rec->newtup);
			break;

		case DE_REC_DELETE:
			codec_need(reader, start, type, "relid",
					   sizeof(uint32));
			rec->relid = codec_get_u32(reader);
			rec->oldkind = codec_get_oldkind(reader, start, type, false);
			codec_get_tuple(reader, start, type, &rec->oldtup);
			break;

		case DE_REC_TRUNCATE:
			{
				uint8		flags;
				uint32		nrelids;
				int			i;

				codec_need(reader, start, type, "flags", 1 + 4);
				flags = codec_get_u8(reader);
				if (flags & ~(DE_TRUNCATE_CASCADE | DE_TRUNCATE_RESTART))
					codec_invalid(start, type, "flags", flags);
				rec->cascade = (flags & DE_TRUNCATE_CASCADE) != 0;
				rec->restart_seqs = (flags & DE_TRUNCATE_RESTART) != 0;
				nrelids = codec_get_u32(reader);
				codec_need(reader, start, type, "relid",
						   (size_t) nrelids * sizeof(uint32));
				rec->nrelids = (int) nrelids;
				rec->relids = palloc(sizeof(Oid) * Max(nrelids, 1));
				for (i = 0; i < (int) nrelids; i++)
					rec->relids[i] = codec_get_u32(reader);
				break;
			}

		case DE_REC_MESSAGE:
			{
				uint8		flags;

				codec_need(reader, start, type, "flags", 1 + 8);
				flags = codec_get_u8(reader);
				if (flags & ~DE_MESSAGE_TRANSACTIONAL)
					codec_invalid(start, type, "flags", flags);
				rec->transactional = (flags & DE_MESSAGE_TRANSACTIONAL) != 0;
				rec->lsn = codec_get_u64(reader);
				rec->prefix = codec_get_name(reader, start, type, "prefix");
				codec_need(reader, start, type, "content",
						   sizeof(uint32));
				rec->content_len = codec_get_u32(reader);
				codec_need(reader, start, type, "content",
						   rec->content_len);
				rec->content = reader->data + reader->pos;
				reader->pos += rec->content_len;
				break;
			}

		case DE_REC_COPY_END:
			codec_need(reader, start, type, "rows", 8);
			rec->rows = codec_get_u64(reader);
			break;

		case DE_REC_SEQUENCES:
			{
				uint32		n;
				int			i;

				codec_need(reader, start, type, "count",
						   sizeof(uint32));
				n = codec_get_u32(reader);
				/* each entry takes at least two lengths and a value */
				codec_need(reader, start, type, "nspname",
						   (size_t) n * (4 + 4 + 8));
				rec->nsequences = (int) n;
				rec->seq_nspnames = palloc(sizeof(char *) * Max(n, 1));
				rec->seq_relnames = palloc(sizeof(char *) * Max(n, 1));
				rec->seq_values = palloc(sizeof(int64) * Max(n, 1));
				for (i = 0; i < (int) n; i++)
				{
					rec->seq_nspnames[i] = codec_get_name(reader, start, type,
														  "nspname");
					rec->seq_relnames[i] = codec_get_name(reader, start, type,
														  "relname");
					codec_need(reader, start, type, "last_value", 8);
					rec->seq_values[i] = (int64) codec_get_u64(reader);
				}
				break;
			}

		case DE_REC_HELLO:
			rec->slot = codec_get_name(reader, start, type, "slot");
			codec_need(reader, start, type, "start_lsn", 8 + 8 + 8 + 8 + 1 + 4);
			rec->lsn = codec_get_u64(reader);
			rec->end_lsn = codec_get_u64(reader);
			rec->confirmed_lsn = codec_get_u64(reader);
			rec->history_lsn = codec_get_u64(reader);
			rec->history_status = (char) codec_get_u8(reader);
			rec->crc = codec_get_u32(reader);
			break;

		case DE_REC_HEARTBEAT:
			codec_need(reader, start, type, "nonce",
					   DE_HEARTBEAT_NONCE_LEN + 8 + 8 + 4);
			memcpy(rec->nonce, reader->data + reader->pos,
				   DE_HEARTBEAT_NONCE_LEN);
			reader->pos += DE_HEARTBEAT_NONCE_LEN;
			rec->lsn = codec_get_u64(reader);
			rec->end_lsn = codec_get_u64(reader);
			rec->crc = codec_get_u32(reader);
			break;

		case DE_REC_STREAM_START:
			{
				uint8		first;

				codec_need(reader, start, type, "xid", 4 + 1);
				rec->xid = codec_get_u32(reader);
				first = codec_get_u8(reader);
				if (first > 1)
					codec_invalid(start, type, "first", first);
				rec->first = first == 1;
				if (!TransactionIdIsNormal(rec->xid))
					codec_invalid(start, type, "xid", rec->xid);
				break;
			}

		case DE_REC_SUBXACT:
			codec_need(reader, start, type, "xid", 4);
			rec->xid = codec_get_u32(reader);
			if (!TransactionIdIsNormal(rec->xid))
				codec_invalid(start, type, "xid", rec->xid);
			break;

		case DE_REC_STREAM_STOP:
			break;

		case DE_REC_STREAM_ABORT:
			codec_need(reader, start, type, "xid", 4 + 4);
			rec->xid = codec_get_u32(reader);
			rec->subxid = codec_get_u32(reader);
			if (!TransactionIdIsNormal(rec->xid))
				codec_invalid(start, type, "xid", rec->xid);
			if (!TransactionIdIsNormal(rec->subxid))
				codec_invalid(start, type, "subxid", rec->subxid);
			break;

		case DE_REC_STREAM_COMMIT:
			codec_need(reader, start, type, "xid", 4 + 8 + 8 + 8);
			rec->xid = codec_get_u32(reader);
			rec->lsn = codec_get_u64(reader);
			rec->end_lsn = codec_get_u64(reader);
			rec->commit_time = (TimestampTz) codec_get_u64(reader);
			if (!TransactionIdIsNormal(rec->xid))
				codec_invalid(start, type, "xid", rec->xid);
			break;

		default:
			ereport(ERROR,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("malformed change record at offset %zu of a frame body",
						   start),
					errdetail("Unknown record type %u.",
							  (unsigned int) (unsigned char) type));
	}

	return true;
}

const char *
de_record_type_name(char type)
{
	switch (type)
	{
		case DE_REC_BEGIN:
			return "BEGIN";
		case DE_REC_COMMIT:
			return "COMMIT";
		case DE_REC_RELATION:
			return "RELATION";
		case DE_REC_INSERT:
			return "INSERT";
		case DE_REC_UPDATE:
			return "UPDATE";
		case DE_REC_DELETE:
			return "DELETE";
		case DE_REC_TRUNCATE:
			return "TRUNCATE";
		case DE_REC_MESSAGE:
			return "MESSAGE";
		case DE_REC_COPY_END:
			return "COPY_END";
		case DE_REC_SEQUENCES:
			return "SEQUENCES";
		case DE_REC_HELLO:
			return "HELLO";
		case DE_REC_HEARTBEAT:
			return "HEARTBEAT";
		case DE_REC_STREAM_START:
			return "STREAM_START";
		case DE_REC_SUBXACT:
			return "SUBXACT";
		case DE_REC_STREAM_STOP:
			return "STREAM_STOP";
		case DE_REC_STREAM_ABORT:
			return "STREAM_ABORT";
		case DE_REC_STREAM_COMMIT:
			return "STREAM_COMMIT";
		default:
			return "unknown";
	}
}
