--
-- 11_plugin_records: every kind of change record, TOAST values changed and
-- unchanged, RELATION records sent again after the table changes, a
-- transaction spread over several frames, and the plugin's options.
--

CREATE TABLE de_parent (id integer PRIMARY KEY, name text);
CREATE TABLE de_child (id integer PRIMARY KEY,
					   parent integer REFERENCES de_parent);
CREATE TABLE de_full (a integer, b text);
ALTER TABLE de_full REPLICA IDENTITY FULL;
CREATE TABLE de_serial (id serial PRIMARY KEY, v text);
-- not replicated: temporary and unlogged tables
CREATE UNLOGGED TABLE de_unlogged (id integer);
CREATE TEMP TABLE de_temp (id integer);

SELECT 'init' FROM pg_create_logical_replication_slot('de_records', 'data_embassy');

-- INSERT, UPDATE (key unchanged, key changed, whole old row), DELETE
INSERT INTO de_parent VALUES (1, 'one'), (2, 'two');
INSERT INTO de_child VALUES (10, 1);
UPDATE de_parent SET name = 'uno' WHERE id = 1;
UPDATE de_parent SET id = 3 WHERE id = 2;
INSERT INTO de_full VALUES (1, 'a'), (2, NULL);
UPDATE de_full SET b = 'b' WHERE a = 2;
DELETE FROM de_full WHERE a = 1;
DELETE FROM de_child WHERE id = 10;
INSERT INTO de_unlogged VALUES (1);
INSERT INTO de_temp VALUES (1);

-- messages, in and out of a transaction
BEGIN;
INSERT INTO de_parent VALUES (4, 'four');
SELECT 'msg' FROM pg_logical_emit_message(true, 'de_test', 'in a transaction');
COMMIT;
SELECT 'msg' FROM pg_logical_emit_message(false, 'de_test', 'on its own');
SELECT 'msg' FROM pg_logical_emit_message(false, 'de_bytes', '\x00ff01'::bytea);
-- a transaction with nothing to replicate leaves no records
INSERT INTO de_unlogged VALUES (2);

-- TRUNCATE with CASCADE and with RESTART IDENTITY
INSERT INTO de_child VALUES (11, 1);
INSERT INTO de_serial (v) VALUES ('x'), ('y');
TRUNCATE de_parent CASCADE;
TRUNCATE de_serial RESTART IDENTITY;

-- the RELATION record comes again after the table changes
INSERT INTO de_full VALUES (3, 'c');
ALTER TABLE de_full ADD COLUMN c integer DEFAULT 7;
INSERT INTO de_full VALUES (4, 'd');
ALTER TABLE de_full DROP COLUMN b;
INSERT INTO de_full VALUES (5);

CREATE TEMP TABLE f AS SELECT de_frames('de_records') AS frames;
-- (the HELLO's positions vary from run to run: its keys, and whether its
-- positions agree, are shown)
SELECT rec, relation,
	   CASE WHEN rec = 'HELLO'
			THEN jsonb_build_object('keys', (SELECT array_agg(k ORDER BY k)
											 FROM jsonb_object_keys(detail) k),
									'slot', detail->'slot',
									'starts_at_confirmed',
									detail->'start_lsn' = detail->'confirmed_lsn')
			ELSE detail END AS detail
FROM f, de_records(f.frames);

-- TOAST: a 100 kB value, unchanged and changed
CREATE TABLE de_toast (id integer PRIMARY KEY, n integer, big text);
ALTER TABLE de_toast ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO de_toast
SELECT 1, 0, string_agg(md5(g::text), '') FROM generate_series(1, 3200) g;
SELECT cardinality(de_frames('de_records')) >= 0 AS consumed;
UPDATE de_toast SET n = 1;
UPDATE de_toast SET big = upper(big), n = 2;
DELETE FROM de_toast;

TRUNCATE f;
INSERT INTO f SELECT de_frames('de_records');
SELECT rec, relation,
	   detail->'new'->'n' AS n,
	   CASE WHEN jsonb_typeof(detail->'new'->'big') = 'string'
			THEN 'text of ' || length(detail->'new'->>'big') || ' bytes'
			ELSE detail->'new'->>'big' END AS new_big,
	   detail->>'old_kind' AS old_kind, detail->'old' AS old
FROM f, de_records(f.frames)
WHERE rec NOT IN ('BEGIN', 'COMMIT', 'RELATION');
SELECT detail->'new'->>'big' = (SELECT upper(string_agg(md5(g::text), ''))
								FROM generate_series(1, 3200) g) AS changed_value_whole
FROM f, de_records(f.frames)
WHERE rec = 'UPDATE' AND detail->'new'->>'n' = '2';

-- a large transaction spans several frames; all rows come back
CREATE TABLE de_big (id integer PRIMARY KEY, payload text);
SELECT cardinality(de_frames('de_records')) >= 0 AS consumed;
INSERT INTO de_big SELECT g, repeat(md5(g::text), 2) FROM generate_series(1, 5000) g;
TRUNCATE f;
INSERT INTO f SELECT de_frames('de_records', 'batch_size', '16kB');
SELECT cardinality(frames) > 5 AS several_frames FROM f;
-- every frame but the last ends inside the transaction (flag 1; flag 4,
-- signed, depends on the clock: the first frame, then at least once a
-- second)
SELECT h.seq = cardinality(f.frames) AS last, h.flags & 3 AS flags, count(*)
FROM f, unnest(f.frames) fr, data_embassy.frame_header(fr) h
GROUP BY 1, 2 ORDER BY 1, 2;
SELECT h.seq, (h.flags & 4) <> 0 AS signed
FROM f, unnest(f.frames) fr, data_embassy.frame_header(fr) h
WHERE h.seq = 1;
SELECT rec, count(*), count(DISTINCT detail->'new'->>'id') AS ids,
	   sum((detail->'new'->>'id')::int) AS id_sum
FROM f, de_records(f.frames) GROUP BY rec ORDER BY rec;

-- the setting does the same
SET data_embassy.batch_size = '16kB';
UPDATE de_big SET payload = 'p' WHERE id <= 2000;
TRUNCATE f;
INSERT INTO f SELECT de_frames('de_records');
SELECT cardinality(frames) > 2 AS several_frames FROM f;
SELECT rec, count(*) FROM f, de_records(f.frames) GROUP BY rec ORDER BY rec;
RESET data_embassy.batch_size;

-- options
INSERT INTO de_parent VALUES (5, 'five');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_records', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'colour', 'blue');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_records', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'batch_size', '12 parsecs');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_records', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'batch_size', '1kB');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_records', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'compression_level', 'high');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_records', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'compression_level', '99');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_records', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'decoding_work_mem', '1kB');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_records', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'embassy_key', data_embassy.public_key());
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_records', NULL, NULL);
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_records', NULL, NULL,
	'embassy_key', 'not a key');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_records', NULL, NULL,
	'embassy_key', (repeat('cd', 31) || '4d' || repeat('ed', 32)));
-- the plugin writes binary: the text functions refuse it
SELECT count(*) FROM pg_logical_slot_peek_changes('de_records', NULL, NULL,
	'embassy_key', data_embassy.public_key());
-- good options still work; decoding_work_mem lasts for the decoding call
SHOW logical_decoding_work_mem;
SELECT rec, detail FROM de_records(de_frames('de_records',
	'batch_size', '64', 'compression_level', '-5', 'decoding_work_mem', '1MB'))
WHERE rec = 'INSERT';
SHOW logical_decoding_work_mem;

SELECT pg_drop_replication_slot('de_records');
DROP TABLE f, de_child, de_parent, de_full, de_serial, de_unlogged, de_toast,
	de_big;
