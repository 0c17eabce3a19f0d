--
-- 13_sequences: PostgreSQL 15 does not decode sequences, so the plugin
-- reports them in a SEQUENCES record inside a replicated transaction: the
-- last value each permanent sequence handed out, values of rolled-back
-- transactions included; sequences that never handed one out are left out.
-- Decoding through SQL flushes at every commit, as a caught-up walsender
-- does, and so reports at every commit where a sequence moved.
--
CREATE TABLE seq_people (id serial PRIMARY KEY, v text);
CREATE SEQUENCE seq_tickets START 1000 INCREMENT 10;
CREATE SEQUENCE seq_unused;
CREATE UNLOGGED SEQUENCE seq_unlogged;
SELECT nextval('seq_unlogged');
SELECT 'init' FROM pg_create_logical_replication_slot('seq_slot', 'data_embassy');

SELECT count(*) FROM (SELECT nextval('seq_tickets') FROM generate_series(1, 5)) s;
BEGIN;
SELECT count(*) FROM (SELECT nextval('seq_people_id_seq') FROM generate_series(1, 30)) s;
ROLLBACK;
INSERT INTO seq_people (v) VALUES ('a'), ('b');

SELECT record_type,
	   CASE record_type
		   WHEN 'SEQUENCES' THEN
			   (SELECT jsonb_agg(e ORDER BY e->>'name')
				FROM jsonb_array_elements(detail->'sequences') e)
		   WHEN 'INSERT' THEN detail
	   END AS detail
FROM data_embassy.inspect_frames(
	ARRAY(SELECT data FROM pg_logical_slot_get_binary_changes('seq_slot', NULL, NULL,
			'embassy_key', data_embassy.public_key())),
	data_embassy.public_key())
WHERE record_type IN ('BEGIN', 'INSERT', 'SEQUENCES', 'COMMIT')
ORDER BY frame_seq, record_no;

-- later reports carry only the sequences that moved since the last one
SELECT nextval('seq_tickets');
INSERT INTO seq_people (v) VALUES ('c');
INSERT INTO seq_people (id, v) VALUES (1000, 'no sequence moved');
SELECT record_type,
	   (SELECT jsonb_agg(e ORDER BY e->>'name')
		FROM jsonb_array_elements(detail->'sequences') e) AS sequences
FROM data_embassy.inspect_frames(
	ARRAY(SELECT data FROM pg_logical_slot_get_binary_changes('seq_slot', NULL, NULL,
			'embassy_key', data_embassy.public_key())),
	data_embassy.public_key())
WHERE record_type IN ('SEQUENCES', 'COMMIT')
ORDER BY frame_seq, record_no;

SELECT pg_drop_replication_slot('seq_slot');
DROP TABLE seq_people;
DROP SEQUENCE seq_tickets, seq_unused, seq_unlogged;
