/*-------------------------------------------------------------------------
 *
 * relmap.h
 *		  The relation map of one register at the embassy: the register's
 *		  relations, by their OID there, and the local tables they map to.
 *
 * This is the embassy's counterpart of PostgreSQL's
 * replication/logical/relation.c.  A RELATION record fills an entry with
 * the register's description of a relation (de_relmap_update()).  The
 * local side (table OID, column map, type input and receive functions,
 * replica identity, NOT NULL columns, how rows are compared and named in
 * messages) is resolved by schema and table name when a change first
 * needs it in a local transaction (de_relmap_open_local()), and kept until
 * a relcache invalidation of the local table or a new RELATION record.
 *
 * Ownership.  The map and its entries live in the memory context given to
 * de_relmap_create(); each entry has a context of its own (entry->cxt) for
 * the remote description, with a child (entry->map_cxt) for the local
 * side.  Entries stay where they are in memory until de_relmap_reset():
 * callers may keep pointers to them for a whole transaction.  The field
 * "state" belongs to apply.c (the relation's executor state in the open
 * local transaction); the map never looks at it, and it must be NULL
 * before the entry is described anew or the map reset.
 *
 * Errors.  A change for a relation without a RELATION record, or a
 * RELATION record that names a column twice, is a protocol violation
 * (ERRCODE_PROTOCOL_VIOLATION).  A missing local table is
 * ERRCODE_UNDEFINED_TABLE, a missing column ERRCODE_UNDEFINED_COLUMN, a
 * built-in type that differs ERRCODE_DATATYPE_MISMATCH, a target that is
 * not a user table ERRCODE_WRONG_OBJECT_TYPE (or CheckSubscriptionRelkind()'s
 * own error), and a table whose rows cannot be found for UPDATE and DELETE
 * ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE.
 *
 * IDENTIFICATION
 *		  src/embassy/relmap.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_RELMAP_H
#define DE_RELMAP_H

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "executor/tuptable.h"
#include "storage/lockdefs.h"
#include "utils/relcache.h"

#include "embassy/lookup.h"
#include "seal/codec.h"

typedef struct DeRelMap DeRelMap;

/* How one remote column is converted into its local column. */
typedef struct DeRelMapColumn
{
	int			localatt;		/* offset in the local tuple descriptor */
	Oid			typid;			/* local type */
	Oid			typioparam;
	int32		typmod;			/* local atttypmod */
	FmgrInfo	infunc;			/* input function (text format) */
	FmgrInfo	recvfunc;		/* receive function; InvalidOid if none */
} DeRelMapColumn;

/* One relation of the register, by the register's OID. */
typedef struct DeRelMapEntry
{
	Oid			remoteid;		/* hash key */
	MemoryContext cxt;			/* remote description, and map_cxt */

	/* remote description from the RELATION record */
	char	   *nspname;
	char	   *relname;
	char		replident;
	int			natts;
	DeAttribute *atts;

	/* local side, valid while local_valid */
	bool		local_valid;
	Oid			localrelid;
	MemoryContext map_cxt;
	DeRelMapColumn *cols;		/* per remote column */
	int			local_natts;
	int		   *attrmap;		/* local offset -> remote index, or -1 */
	bool		updatable;
	int			nnotnull;		/* local NOT NULL columns */
	int		   *notnull;		/* their local offsets */
	int			nkeyatts;		/* local columns that identify a row */
	int		   *keyatts;		/* their local offsets, for messages */
	FmgrInfo   *keyout;			/* their output functions */
	DeRowCompare *rowcmp;		/* REPLICA IDENTITY FULL: how rows compare */

	/* apply.c's: open in the current local transaction, or NULL */
	struct ApplyRelState *state;
} DeRelMapEntry;

/*
 * An empty map for the register named register_name (for messages),
 * allocated in mcxt.  Every map of the process is kept up to date by one
 * relcache invalidation callback.
 */
extern DeRelMap *de_relmap_create(MemoryContext mcxt,
								  const char *register_name);

/*
 * Forget every entry (a new stream sends its RELATION records again).
 * No entry may have a state.
 */
extern void de_relmap_reset(DeRelMap *map);

/* The entry of remoteid, or NULL when no RELATION record described it. */
extern DeRelMapEntry *de_relmap_find(DeRelMap *map, Oid remoteid);

/*
 * The entry a change record refers to; ERRCODE_PROTOCOL_VIOLATION when no
 * RELATION record described it.
 */
extern DeRelMapEntry *de_relmap_get(DeRelMap *map, Oid remoteid);

/*
 * Describe a relation anew from its RELATION record (creating the entry
 * when new).  The entry's state must be NULL; its local side is resolved
 * again at the next change.
 */
extern DeRelMapEntry *de_relmap_update(DeRelMap *map, DeRecord *rec);

/*
 * Find the local table of the entry's schema and name and lock it with
 * lockmode; ERRCODE_UNDEFINED_TABLE when there is none.  A table other
 * than the one mapped so far makes the mapping invalid.
 */
extern Oid	de_relmap_lock_local(DeRelMapEntry *entry, LOCKMODE lockmode);

/*
 * Open the entry's local table relid (locked by de_relmap_lock_local()),
 * check that it may be written as a replica, and map its columns unless
 * the mapping is still valid.  The caller closes the relation (the lock
 * stays to the end of the transaction).
 */
extern Relation de_relmap_open_local(DeRelMap *map, DeRelMapEntry *entry,
									 Oid relid);

/* Drop every entry's state pointer: the local transaction is over. */
extern void de_relmap_forget_states(DeRelMap *map);

/*
 * The index UPDATE and DELETE find rows by: the replica identity index,
 * else the primary key; InvalidOid when there is neither.
 */
extern Oid	de_relmap_identity_index(Relation rel);

/*
 * Raise the error of core's check_relation_updatable() when rows of the
 * entry's table (rel, mapped) cannot be found for UPDATE and DELETE.
 */
extern void de_relmap_not_updatable(DeRelMapEntry *entry, Relation rel)
			pg_attribute_noreturn();

static inline void
de_relmap_check_updatable(DeRelMapEntry *entry, Relation rel)
{
	if (!entry->updatable)
		de_relmap_not_updatable(entry, rel);
}

/*
 * How rows of the entry's table (rel, mapped) compare, for REPLICA
 * IDENTITY FULL without an index: made at the first use, kept with the
 * mapping.
 */
extern DeRowCompare *de_relmap_rowcmp(DeRelMapEntry *entry, Relation rel);

/*
 * Append "(a, b)=(1, x)" to buf: the identity columns of the row in slot
 * (the local layout of the entry's table), or nothing when that is not
 * known.  Values are cut at 64 bytes, on a character boundary.  Only
 * output functions run, as for PostgreSQL's own key descriptions.
 */
extern void de_relmap_describe_row(DeRelMapEntry *entry, TupleTableSlot *slot,
								   StringInfo buf);

#endif							/* DE_RELMAP_H */
