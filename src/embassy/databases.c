/*-------------------------------------------------------------------------
 *
 * databases.c
 *		  The list of databases that may hold registers, and the queue of
 *		  databases whose registers table the launcher must read again.
 *
 * The launcher is connected to no database and cannot see which databases
 * installed the extension, so every database where a register was added is
 * listed in the file $PGDATA/data_embassy/databases, one OID a line, read
 * into shared memory once per server start.  A scan that finds the
 * extension gone takes its database off the list again.
 *
 * Writing the file.  The list is changed in shared memory under
 * DeShared->lock; the file is written afterwards, without that lock, so
 * that no fsync happens while the launcher, the workers and the views wait
 * for it.  Writers are serialized by DeShared->file_lock, and each copies
 * the list from shared memory only once it holds that lock: whoever writes
 * last writes the newest list, so an older list can never replace a newer
 * one on disk.  The file is replaced atomically (a temporary file, fsync,
 * durable_rename), and a caller returns only once its change, or a newer
 * list that includes it, is on disk.
 *
 * IDENTIFICATION
 *		  src/embassy/databases.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "lib/stringinfo.h"
#include "storage/fd.h"
#include "storage/lwlock.h"

#include "data_embassy.h"
#include "embassy/databases.h"
#include "embassy/status.h"
#include "seal/keys.h"

#define DE_DATABASES_FILE		DE_KEY_DIR "/databases"
#define DE_DATABASES_TMP_FILE	DE_KEY_DIR "/databases.tmp"

static void databases_write(const Oid *databases, int ndatabases);

/* Position of oid among the n of oids, or -1. */
static int
oid_index(const Oid *oids, int n, Oid oid)
{
	int			i;

	for (i = 0; i < n; i++)
		if (oids[i] == oid)
			return i;
	return -1;
}

/*
 * de_database_index_locked
 *		Position of dboid in DeShared->databases, or -1.
 */
int
de_database_index_locked(Oid dboid)
{
	Assert(LWLockHeldByMe(DeShared->lock));

	return oid_index(DeShared->databases, DeShared->ndatabases, dboid);
}

/*
 * de_databases_load_locked
 *		Read the file of databases into shared memory, once per server
 *		start.  The caller holds DeShared->lock exclusively.
 */
void
de_databases_load_locked(void)
{
	FILE	   *file;
	char		line[64];

	Assert(LWLockHeldByMeInMode(DeShared->lock, LW_EXCLUSIVE));

	if (DeShared->databases_loaded)
		return;

	file = AllocateFile(DE_DATABASES_FILE, "r");
	if (file == NULL)
	{
		if (errno != ENOENT)
			ereport(ERROR,
					errcode_for_file_access(),
					errmsg("could not open file \"%s\": %m",
						   DE_DATABASES_FILE));
		DeShared->ndatabases = 0;
		DeShared->databases_loaded = true;
		return;
	}

	DeShared->ndatabases = 0;
	while (fgets(line, sizeof(line), file) != NULL)
	{
		char	   *end;
		unsigned long value;

		errno = 0;
		value = strtoul(line, &end, 10);
		if (errno != 0 || end == line || (*end != '\n' && *end != '\0') ||
			value == 0 || value > PG_UINT32_MAX)
		{
			ereport(WARNING,
					errcode(ERRCODE_DATA_CORRUPTED),
					errmsg("ignoring invalid line in file \"%s\"",
						   DE_DATABASES_FILE));
			continue;
		}
		if (de_database_index_locked((Oid) value) >= 0)
			continue;
		if (DeShared->ndatabases >= DE_MAX_DATABASES)
			break;
		DeShared->databases[DeShared->ndatabases++] = (Oid) value;
	}
	if (ferror(file))
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not read file \"%s\": %m", DE_DATABASES_FILE));
	FreeFile(file);

	DeShared->databases_loaded = true;
}

/*
 * databases_write
 *		Replace the file of databases with the given list, atomically and
 *		durably.  The caller holds DeShared->file_lock, not DeShared->lock.
 */
static void
databases_write(const Oid *databases, int ndatabases)
{
	StringInfoData buf;
	int			fd;
	int			i;

	Assert(LWLockHeldByMeInMode(DeShared->file_lock, LW_EXCLUSIVE));
	Assert(!LWLockHeldByMe(DeShared->lock));

	initStringInfo(&buf);
	for (i = 0; i < ndatabases; i++)
		appendStringInfo(&buf, "%u\n", databases[i]);

	if (MakePGDirectory(DE_KEY_DIR) < 0 && errno != EEXIST)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not create directory \"%s\": %m", DE_KEY_DIR));

	fd = OpenTransientFile(DE_DATABASES_TMP_FILE,
						   O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not create file \"%s\": %m",
					   DE_DATABASES_TMP_FILE));

	errno = 0;
	if (write(fd, buf.data, buf.len) != buf.len)
	{
		/* if write didn't set errno, assume problem is no disk space */
		if (errno == 0)
			errno = ENOSPC;
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not write file \"%s\": %m",
					   DE_DATABASES_TMP_FILE));
	}
	if (pg_fsync(fd) != 0)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not fsync file \"%s\": %m",
					   DE_DATABASES_TMP_FILE));
	if (CloseTransientFile(fd) != 0)
		ereport(ERROR,
				errcode_for_file_access(),
				errmsg("could not close file \"%s\": %m",
					   DE_DATABASES_TMP_FILE));

	(void) durable_rename(DE_DATABASES_TMP_FILE, DE_DATABASES_FILE, ERROR);

	pfree(buf.data);
}

/*
 * de_databases_persist
 *		Write the list as it is in shared memory now.  Copying it only once
 *		the file lock is held makes the last writer write the newest list.
 */
void
de_databases_persist(void)
{
	Oid			databases[DE_MAX_DATABASES];
	int			n;

	Assert(!LWLockHeldByMe(DeShared->lock));

	LWLockAcquire(DeShared->file_lock, LW_EXCLUSIVE);

	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	de_databases_load_locked();
	n = DeShared->ndatabases;
	memcpy(databases, DeShared->databases, sizeof(Oid) * n);
	LWLockRelease(DeShared->lock);

	databases_write(databases, n);

	LWLockRelease(DeShared->file_lock);
}

/*
 * de_databases_add
 *		Add dboid to the list of databases, in shared memory and on disk.
 *
 * Listed in shared memory first: a database listed there but not yet on
 * disk only gets scanned, which finds its registers or forgets it again.
 */
void
de_databases_add(Oid dboid)
{
	LWLockAcquire(DeShared->lock, LW_EXCLUSIVE);
	de_databases_load_locked();
	if (de_database_index_locked(dboid) >= 0)
	{
		LWLockRelease(DeShared->lock);
		return;
	}
	if (DeShared->ndatabases >= DE_MAX_DATABASES)
	{
		LWLockRelease(DeShared->lock);
		ereport(ERROR,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("too many databases hold data_embassy registers"),
				errdetail("At most %d databases of a cluster can hold registers.",
						  DE_MAX_DATABASES));
	}
	DeShared->databases[DeShared->ndatabases++] = dboid;
	LWLockRelease(DeShared->lock);

	de_databases_persist();
}

/*
 * de_databases_remove_locked
 *		Take dboid off the list of databases and the rescan queue, in shared
 *		memory.  Its slots are freed by the launcher (or as soon as their
 *		worker is gone).  The caller holds DeShared->lock exclusively and
 *		persists the list after releasing it when this returns true.
 */
bool
de_databases_remove_locked(Oid dboid)
{
	int			i;

	Assert(LWLockHeldByMeInMode(DeShared->lock, LW_EXCLUSIVE));

	de_rescan_unqueue_locked(dboid);
	i = de_database_index_locked(dboid);
	if (i < 0)
		return false;

	memmove(&DeShared->databases[i], &DeShared->databases[i + 1],
			sizeof(Oid) * (DeShared->ndatabases - i - 1));
	DeShared->ndatabases--;
	return true;
}

/*
 * de_rescan_queue_locked
 *		Ask for the registers of dboid to be read again.  The caller holds
 *		DeShared->lock exclusively.  Cannot fail.
 */
void
de_rescan_queue_locked(Oid dboid)
{
	Assert(LWLockHeldByMeInMode(DeShared->lock, LW_EXCLUSIVE));

	if (oid_index(DeShared->rescan, DeShared->nrescan, dboid) >= 0)
		return;
	if (DeShared->nrescan < DE_MAX_DATABASES)
		DeShared->rescan[DeShared->nrescan++] = dboid;
}

/*
 * de_rescan_queue_all_locked
 *		Rescan every listed database; the caller holds DeShared->lock
 *		exclusively.
 */
void
de_rescan_queue_all_locked(void)
{
	int			i;

	Assert(LWLockHeldByMeInMode(DeShared->lock, LW_EXCLUSIVE));

	for (i = 0; i < DeShared->ndatabases; i++)
		de_rescan_queue_locked(DeShared->databases[i]);
}

/*
 * de_rescan_unqueue_locked
 *		Take dboid off the rescan queue; the caller holds DeShared->lock
 *		exclusively.
 */
void
de_rescan_unqueue_locked(Oid dboid)
{
	int			i;

	Assert(LWLockHeldByMeInMode(DeShared->lock, LW_EXCLUSIVE));

	i = oid_index(DeShared->rescan, DeShared->nrescan, dboid);
	if (i >= 0)
		DeShared->rescan[i] = DeShared->rescan[--DeShared->nrescan];
}

/*
 * de_rescan_queued_locked
 *		Is dboid waiting for a scan?  The caller holds DeShared->lock.
 */
bool
de_rescan_queued_locked(Oid dboid)
{
	Assert(LWLockHeldByMe(DeShared->lock));

	return oid_index(DeShared->rescan, DeShared->nrescan, dboid) >= 0;
}
