--
-- 14_plugin_stream: transactions streamed before their commit (the
-- stream_in_progress option): blocks, subtransactions, rollbacks, the
-- commit, the sequences riding in a last block; and without the option,
-- the same transaction as a whole.
--

CREATE TABLE de_stream (id integer PRIMARY KEY, v text);
CREATE SEQUENCE de_stream_seq;
SELECT 'init' FROM pg_create_logical_replication_slot('de_stream', 'data_embassy');

-- records of a stream, in order, with what does not vary between runs
CREATE FUNCTION de_stream_records(frames bytea[])
RETURNS TABLE (n bigint, rec text, first boolean, whole boolean, id integer)
LANGUAGE sql AS $$
	SELECT row_number() OVER (ORDER BY frame_seq, record_no), record_type,
		   (detail->>'first')::boolean,
		   CASE WHEN record_type = 'STREAM_ABORT'
				THEN detail->>'xid' = detail->>'subxid' END,
		   coalesce(detail->'new'->>'id', detail->'old'->>'id')::integer
	FROM data_embassy.inspect_frames(frames, data_embassy.public_key())
$$;

-- a large transaction with a subtransaction rolled back in the middle
BEGIN;
INSERT INTO de_stream SELECT g, 'v' || g FROM generate_series(1, 3000) g;
SAVEPOINT s;
UPDATE de_stream SET v = 'gone' WHERE id <= 1000;
ROLLBACK TO s;
SELECT count(nextval('de_stream_seq')) FROM generate_series(1, 5);
DELETE FROM de_stream WHERE id > 2900;
COMMIT;

CREATE TEMP TABLE sf AS
SELECT de_frames('de_stream', 'stream_in_progress', 'on',
				 'decoding_work_mem', '64') AS frames;
CREATE TEMP TABLE sr AS SELECT r.* FROM sf, de_stream_records(sf.frames) r;

-- blocks open and close in turn; only the first is marked first
SELECT count(*) FILTER (WHERE rec = 'STREAM_START') > 2 AS several_blocks,
	   count(*) FILTER (WHERE rec = 'STREAM_START') =
	   count(*) FILTER (WHERE rec = 'STREAM_STOP') AS balanced,
	   count(*) FILTER (WHERE rec = 'STREAM_START' AND first) AS first_blocks,
	   count(*) FILTER (WHERE rec IN ('BEGIN', 'COMMIT')) AS begin_commit
FROM sr;
SELECT bool_and(nxt = CASE WHEN rec = 'STREAM_START' THEN 'STREAM_STOP'
						   ELSE 'STREAM_START' END) AS alternate
FROM (SELECT rec, lead(rec) OVER (ORDER BY n) AS nxt FROM sr
	  WHERE rec IN ('STREAM_START', 'STREAM_STOP')) s
WHERE nxt IS NOT NULL;
-- the changes, the subtransaction and its rollback, the sequences, the end
-- (how many updates were streamed before the rollback, and how many blocks
-- began inside the subtransaction, depends on the memory accounting)
SELECT rec, CASE WHEN rec IN ('UPDATE', 'SUBXACT') THEN count(*) > 0
				 ELSE NULL END AS some,
	   CASE WHEN rec NOT IN ('UPDATE', 'SUBXACT') THEN count(*) END AS count,
	   min(id), CASE WHEN rec <> 'UPDATE' THEN max(id) END AS max FROM sr
WHERE rec NOT IN ('STREAM_START', 'STREAM_STOP')
GROUP BY rec ORDER BY rec;
SELECT rec, whole FROM sr WHERE rec = 'STREAM_ABORT';
-- the abort comes after the last rolled back update and before the deletes
SELECT (SELECT n FROM sr WHERE rec = 'STREAM_ABORT') >
	   (SELECT max(n) FROM sr WHERE rec = 'UPDATE') AS after_updates,
	   (SELECT n FROM sr WHERE rec = 'STREAM_ABORT') <
	   (SELECT min(n) FROM sr WHERE rec = 'DELETE') AS before_deletes;
-- the last four records: the sequences' block, then the commit
SELECT rec FROM sr ORDER BY n DESC LIMIT 4;

-- a large transaction rolled back as a whole; decoded here after its
-- rollback, PostgreSQL stops streaming it at its first change (a
-- concurrent abort), so only the abort comes, and the block without
-- records costs nothing
BEGIN;
INSERT INTO de_stream SELECT g, 'w' || g FROM generate_series(10001, 13000) g;
ROLLBACK;
TRUNCATE sf, sr;
INSERT INTO sf SELECT de_frames('de_stream', 'stream_in_progress', 'on',
								'decoding_work_mem', '64');
INSERT INTO sr SELECT r.* FROM sf, de_stream_records(sf.frames) r;
SELECT rec, whole, count(*) FROM sr
WHERE rec NOT IN ('STREAM_START', 'STREAM_STOP', 'INSERT', 'RELATION')
GROUP BY rec, whole;
SELECT count(*) FILTER (WHERE rec = 'INSERT') > 0 AS streamed_some FROM sr;

-- without the option the same work comes as one whole transaction
BEGIN;
UPDATE de_stream SET v = 'again' WHERE id <= 2000;
COMMIT;
TRUNCATE sf, sr;
INSERT INTO sf SELECT de_frames('de_stream', 'decoding_work_mem', '64');
INSERT INTO sr SELECT r.* FROM sf, de_stream_records(sf.frames) r;
SELECT rec, count(*) FROM sr GROUP BY rec ORDER BY rec;

-- the option's value
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_stream', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'stream_in_progress', 'maybe');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_stream', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'stream_in_progress', 'on',
	'stream_in_progress', 'off');

SELECT 'dropped' FROM pg_drop_replication_slot('de_stream');
DROP FUNCTION de_stream_records(bytea[]);
DROP TABLE de_stream;
DROP SEQUENCE de_stream_seq;
