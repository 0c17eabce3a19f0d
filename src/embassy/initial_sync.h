/*-------------------------------------------------------------------------
 *
 * initial_sync.h
 *		  The first run of a register at the embassy: its replication slot
 *		  and, with copy_data, the initial copy.
 *
 * IDENTIFICATION
 *		  src/embassy/initial_sync.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_INITIAL_SYNC_H
#define DE_INITIAL_SYNC_H

#include "embassy/apply.h"
#include "embassy/catalog.h"
#include "embassy/status.h"
#include "embassy/walconn.h"
#include "seal/frame.h"
#include "seal/keys.h"

/* What the initial sync needs from the apply worker that runs it. */
typedef struct DeInitialSync
{
	const char *register_name;
	DeRegister *reg;			/* the register's row; phase becomes
								 * DE_PHASE_STREAMING at the end */
	DeRegisterSlot *slot;		/* the worker's slot, for its state */
	DeApply    *apply;			/* applies the copy, in one transaction */
	DeWalConn  *stream_conn;	/* replication connection, identity checked */
	const uint8 *own_priv;		/* the embassy's key pair, and the */
	const char *own_key_text;	/* register's public key, to open frames */
	const DePublicKey *register_pub;
	MemoryContext cxt;			/* the worker's long-lived context */
	List	   *schemas;		/* replicated schemas; NIL: every schema */

	/* open and apply one sealed frame of the copy */
	void		(*apply_frame) (DeOpener *opener, const char *frame,
								size_t len);
	/* between frames: leave the process if the worker must stop */
	void		(*check_stop) (void);
	/* the consistent point sealed in the copy's HELLO, or 0 before it */
	XLogRecPtr	(*copy_start_lsn) (void);
} DeInitialSync;

/*
 * Create the register's replication slot (dropping one left by an earlier
 * unfinished run) and apply the initial copy (without copy_data, the
 * tables' descriptions only) read over a
 * second connection from the slot's exported snapshot, sealed for a fresh
 * session nonce.  Commits the copy, the origin at the slot's consistent
 * point (the one sealed in the copy's HELLO) and
 * registers.state = 'streaming' in one local transaction; raises on any
 * failure, leaving the register in its first run.
 */
extern void de_initial_sync(const DeInitialSync *sync);

/* Close the copy's connection, if one is open (on error or exit). */
extern void de_initial_sync_close(void);

#endif							/* DE_INITIAL_SYNC_H */
