/*-------------------------------------------------------------------------
 *
 * history.c
 *		  Does this register's WAL still hold a record the embassy saw?
 *
 * Every sealed heartbeat carries the position and the CRC of its own WAL
 * record (a logical message holding the embassy's random nonce, so no two
 * are alike).  When the embassy starts a stream it names the latest such
 * position, and the output plugin reports, sealed in the stream's HELLO,
 * what its WAL holds there.  A register restored from an older backup, or
 * a server that answers in its name, has other WAL at that position (or
 * none yet) even when it has since written past the embassy's origin on
 * the same timeline: the CRC differs, or no valid record starts there.
 * WAL already removed says nothing either way; the embassy is told so.
 *
 * The record is read with the core's local reader, without waiting, and
 * only below the flush position, so this never blocks the walsender.
 *
 * IDENTIFICATION
 *		  src/register/history.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogutils.h"

#include "register/history.h"

/*
 * de_history_lookup
 *		What the WAL holds at lsn: DE_HISTORY_FOUND with the record's CRC in
 *		*crc, or why not.
 */
char
de_history_lookup(XLogRecPtr lsn, uint32 *crc)
{
	ReadLocalXLogPageNoWaitPrivate private_data;
	XLogReaderState *reader;
	XLogRecord *record;
	XLogSegNo	segno;
	char	   *errormsg = NULL;
	char		result;

	*crc = 0;
	if (lsn >= GetFlushRecPtr(NULL))
		return DE_HISTORY_AHEAD;

	XLByteToSeg(lsn, segno, wal_segment_size);
	if (segno <= XLogGetLastRemovedSegno())
		return DE_HISTORY_GONE;

	memset(&private_data, 0, sizeof(private_data));
	reader = XLogReaderAllocate(wal_segment_size, NULL,
								XL_ROUTINE(.page_read = read_local_xlog_page_no_wait,
										   .segment_open = wal_segment_open,
										   .segment_close = wal_segment_close),
								&private_data);
	if (reader == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OUT_OF_MEMORY),
				errmsg("out of memory"),
				errdetail("Failed while allocating a WAL reading processor."));

	XLogBeginRead(reader, lsn);
	record = XLogReadRecord(reader, &errormsg);
	if (record != NULL && reader->ReadRecPtr == lsn)
	{
		*crc = record->xl_crc;
		result = DE_HISTORY_FOUND;
	}
	else if (private_data.end_of_wal)
		result = DE_HISTORY_AHEAD;
	else
		result = DE_HISTORY_NO_RECORD;

	XLogReaderFree(reader);
	return result;
}
