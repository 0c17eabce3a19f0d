/*-------------------------------------------------------------------------
 *
 * data_embassy.h
 *		  Settings and small helpers shared by every part of data_embassy.
 *
 * IDENTIFICATION
 *		  src/data_embassy.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DATA_EMBASSY_H
#define DATA_EMBASSY_H

#define DE_EXTENSION_NAME	"data_embassy"
#define DE_SCHEMA_NAME		"data_embassy"
#define DE_ADMIN_ROLE		"data_embassy_admin"
#define DE_PLUGIN_NAME		"data_embassy"

/*
 * resync_table's temporary slot on the register: the embassy's slot name
 * with this suffix (copy_table_frames accepts no other).
 */
#define DE_RESYNC_SLOT_SUFFIX	"_resync"

/* GUCs (data_embassy.c) */
extern int	de_batch_size_kb;	/* data_embassy.batch_size */
extern int	de_compression_level;	/* data_embassy.compression_level */
extern int	de_max_registers;	/* data_embassy.max_registers */
extern int	de_retry_interval_ms;	/* data_embassy.retry_interval */
extern int	de_status_interval_ms;	/* data_embassy.status_interval */
extern int	de_heartbeat_interval_ms;	/* data_embassy.heartbeat_interval */
extern int	de_sequence_interval_ms;	/* data_embassy.sequence_interval */
extern int	de_decoding_work_mem_kb;	/* data_embassy.decoding_work_mem */
extern bool de_stream_in_progress;	/* data_embassy.stream_in_progress */

/* True in a process of a server that preloaded the library. */
extern bool de_preloaded;

/* Raise ERROR unless the library was preloaded (embassy-side functions). */
extern void de_require_preloaded(void);

/* OID of the extension's schema, or InvalidOid if not installed here. */
extern Oid	de_schema_oid(bool missing_ok);

#endif							/* DATA_EMBASSY_H */
