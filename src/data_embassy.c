/*-------------------------------------------------------------------------
 *
 * data_embassy.c
 *		  Library entry point: settings, and on a server that preloads the
 *		  library, shared memory and the launcher.
 *
 * The same library is the output plugin on a register and the apply side
 * at an embassy.  A walsender loads it on demand without preloading, so
 * _PG_init defines the settings every process may use and returns quietly
 * when the library is not being preloaded.
 *
 * IDENTIFICATION
 *		  src/data_embassy.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/guc.h"

#include "data_embassy.h"
#include "embassy/guard.h"
#include "embassy/launcher.h"
#include "embassy/promote.h"
#include "embassy/status.h"
#include "register/keyless.h"

PG_MODULE_MAGIC;

int			de_batch_size_kb = 1024;
int			de_compression_level = 1;
int			de_max_registers = 8;
int			de_retry_interval_ms = 5000;
int			de_status_interval_ms = 1000;
int			de_heartbeat_interval_ms = 5000;
int			de_sequence_interval_ms = 1000;
int			de_decoding_work_mem_kb = 16384;
bool		de_stream_in_progress = true;

bool		de_preloaded = false;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("data_embassy.batch_size",
							"Sets the size a frame fills up to while the decoder is behind.",
							"Frames are flushed earlier at a commit that reaches the WAL flush position.",
							&de_batch_size_kb,
							1024, 16, 65536,
							PGC_USERSET,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("data_embassy.compression_level",
							"Sets the zstd compression level of frames.",
							"Negative levels are faster and compress less.",
							&de_compression_level,
							1, -50, 19,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("data_embassy.retry_interval",
							"Sets the time an apply worker waits before it restarts after a failure.",
							"The wait doubles with each consecutive failure, up to ten times this value.",
							&de_retry_interval_ms,
							5000, 100, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("data_embassy.status_interval",
							"Sets the interval between progress reports an apply worker sends to its register.",
							NULL,
							&de_status_interval_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("data_embassy.heartbeat_interval",
							"Sets how often an apply worker asks its register for a sealed heartbeat.",
							"The register seals the heartbeat's fresh nonce and its WAL position into the stream; the lag and failover views measure freshness from the latest one.",
							&de_heartbeat_interval_ms,
							5000, 100, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("data_embassy.decoding_work_mem",
							"Sets the logical_decoding_work_mem an apply worker asks its register's walsender to use.",
							"The walsender's reorder buffer holds this much of a large transaction before it spills to disk; 0 leaves the register's own setting.",
							&de_decoding_work_mem_kb,
							16384, 0, MAX_KILOBYTES,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("data_embassy.stream_in_progress",
							 "Makes apply workers receive large transactions before they commit on the register.",
							 "A transaction whose changes outgrow data_embassy.decoding_work_mem is streamed in blocks and applied as it arrives, instead of being spilled to disk by the register's walsender and sent after its commit.",
							 &de_stream_in_progress,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("data_embassy.sequence_interval",
							"Sets how often a register reports its sequences in the stream.",
							"The report rides in the next replicated transaction once this much time has passed since the last one.",
							&de_sequence_interval_ms,
							1000, 0, 3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("data_embassy.promote_sequence_margin",
							"Sets how far promote() advances each replicated sequence past its last replicated value.",
							"Covers values the register handed out after its last sequence report reached the embassy.",
							&de_promote_sequence_margin,
							1000, 0, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("data_embassy.test_promote_delay",
							"Makes promote() pause before it commits; for crash tests only.",
							NULL,
							&de_test_promote_delay_ms,
							0, 0, 3600 * 1000,
							PGC_SUSET,
							GUC_UNIT_MS | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);

	/*
	 * At a register, refuse UPDATE and DELETE that no embassy could apply, in
	 * every backend that loads the library (shared_preload_libraries,
	 * session_preload_libraries, or a call of one of its functions).
	 */
	if (!IsBinaryUpgrade)
		de_keyless_install();

	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
	{
		MarkGUCPrefixReserved("data_embassy");
		return;
	}

	DefineCustomIntVariable("data_embassy.max_registers",
							"Sets the maximum number of registers this embassy can replicate.",
							"Each register has one apply worker, which counts against max_worker_processes.",
							&de_max_registers,
							8, 1, 1024,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("data_embassy");

	de_preloaded = true;
	de_status_shmem_init_hooks();
	de_launcher_register();
	de_guard_install();
}

/*
 * de_require_preloaded
 *		Embassy-side functions need the shared memory and launcher that only
 *		exist when the library is preloaded.
 */
void
de_require_preloaded(void)
{
	if (!de_preloaded)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("data_embassy must be loaded via \"shared_preload_libraries\""),
				errhint("Add data_embassy to \"shared_preload_libraries\" and restart the server."));
}

Oid
de_schema_oid(bool missing_ok)
{
	Oid			nsp = get_namespace_oid(DE_SCHEMA_NAME, true);

	if (!OidIsValid(nsp) && !missing_ok)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("extension \"%s\" is not installed in database \"%s\"",
					   DE_EXTENSION_NAME, get_database_name(MyDatabaseId)));
	return nsp;
}
