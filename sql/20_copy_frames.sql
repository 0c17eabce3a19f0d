--
-- 20_copy_frames: the initial copy.  copy_frames() seals every replicated
-- table's rows, as of the caller's snapshot, into frames of an initial-copy
-- stream ending with COPY_END.  Runs in a database of its own so that the
-- set of tables is known.
--

SELECT current_database() AS regress_db \gset
CREATE DATABASE de_copy;
\c de_copy
CREATE EXTENSION data_embassy;
SELECT data_embassy.add_embassy('self', data_embassy.public_key()) IS NOT NULL AS pinned;

CREATE FUNCTION de_copy_records(VARIADIC opts text[] DEFAULT '{}')
RETURNS TABLE (seq bigint, rec text, relation text, detail jsonb)
LANGUAGE sql AS $$
	SELECT frame_seq, record_type, relation, detail
	FROM data_embassy.inspect_frames(
		(SELECT array_agg(fr ORDER BY n)
		 FROM data_embassy.copy_frames(data_embassy.public_key())
			  WITH ORDINALITY AS c(fr, n)),
		data_embassy.public_key())
	ORDER BY frame_seq, record_no
$$;

CREATE TYPE de_colour AS ENUM ('red', 'green');
CREATE TABLE de_people (id bigint PRIMARY KEY, name text, born date,
						colour de_colour);
CREATE TABLE de_places (code text, pos point);
CREATE TABLE de_empty (id integer);
CREATE TABLE de_toasted (id integer, big text);
ALTER TABLE de_toasted ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE de_dropped (a integer, gone text, b text);
ALTER TABLE de_dropped DROP COLUMN gone;
CREATE SCHEMA de_other;
CREATE TABLE de_other.de_items (n integer);
-- not copied
CREATE UNLOGGED TABLE de_unlogged (id integer);
CREATE VIEW de_view AS SELECT * FROM de_people;
CREATE MATERIALIZED VIEW de_matview AS SELECT * FROM de_people;

INSERT INTO de_people
SELECT g, 'person ' || g, '1950-01-01'::date + g,
	   CASE WHEN g % 2 = 0 THEN 'red' ELSE 'green' END::de_colour
FROM generate_series(1, 2000) g;
INSERT INTO de_places VALUES ('TLN', '(59.4,24.7)'), ('TRT', NULL);
INSERT INTO de_toasted
SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 3200) g;
INSERT INTO de_dropped VALUES (1, 'b');
INSERT INTO de_other.de_items SELECT generate_series(1, 10);
INSERT INTO de_unlogged VALUES (1);

-- record counts per table, and COPY_END
SELECT rec, relation, count(*), max(detail->>'rows') AS copy_end_rows
FROM de_copy_records() GROUP BY rec, relation ORDER BY rec, relation;

-- values
SELECT relation, detail->'new' AS new FROM de_copy_records()
WHERE rec = 'INSERT' AND relation IN ('public.de_places', 'public.de_dropped')
ORDER BY relation, new;
SELECT detail->'new' AS new FROM de_copy_records()
WHERE rec = 'INSERT' AND relation = 'public.de_people'
  AND (detail->'new'->>'id')::int IN (1, 2000);
SELECT detail FROM de_copy_records()
WHERE rec = 'RELATION' AND relation = 'public.de_dropped';
-- TOAST values travel in full
SELECT length(detail->'new'->>'big') AS big_len,
	   detail->'new'->>'big' = (SELECT big FROM de_toasted) AS same
FROM de_copy_records() WHERE relation = 'public.de_toasted' AND rec = 'INSERT';

-- several frames with a small batch size; all but the last say the copy
-- goes on; all of kind 'C'
SET data_embassy.batch_size = '16kB';
CREATE TEMP TABLE c AS
SELECT n, fr FROM data_embassy.copy_frames(data_embassy.public_key())
	WITH ORDINALITY AS x(fr, n);
SELECT count(*) > 3 AS several_frames FROM c;
SELECT h.kind, h.flags, n = (SELECT max(n) FROM c) AS last, count(*)
FROM c, data_embassy.frame_header(c.fr) h GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT rec, count(*), max(detail->>'rows') AS copy_end_rows
FROM data_embassy.inspect_frames((SELECT array_agg(fr ORDER BY n) FROM c),
								 data_embassy.public_key()) i(s, r, rec, l, x, rel, detail)
GROUP BY rec ORDER BY rec;
RESET data_embassy.batch_size;

-- in the select list, frames stream one per row
SELECT count(*) > 0 AS streamed
FROM (SELECT data_embassy.copy_frames(data_embassy.public_key()) AS fr) s;
-- stopping early is fine
SELECT length(fr) > 132 AS first_frame
FROM data_embassy.copy_frames(data_embassy.public_key()) fr LIMIT 1;

-- the copy reads with the caller's snapshot
BEGIN ISOLATION LEVEL REPEATABLE READ;
DELETE FROM de_people WHERE id > 3;
SELECT count(*) AS people FROM de_copy_records()
WHERE rec = 'INSERT' AND relation = 'public.de_people';
ROLLBACK;

-- refused: unpinned or malformed keys, a plain role
SELECT count(*) FROM data_embassy.copy_frames((repeat('cd', 31) || '4d' || repeat('ed', 32)));
SELECT count(*) FROM data_embassy.copy_frames('nope');
CREATE ROLE regress_de_copy_plain;
SET ROLE regress_de_copy_plain;
SELECT count(*) FROM data_embassy.copy_frames((repeat('cd', 31) || '4d' || repeat('ed', 32)));
RESET ROLE;
DROP ROLE regress_de_copy_plain;
-- an administrator may
CREATE ROLE regress_de_copy_admin IN ROLE data_embassy_admin;
SET ROLE regress_de_copy_admin;
SELECT count(*) > 0 AS frames FROM data_embassy.copy_frames(data_embassy.public_key());
RESET ROLE;
DROP ROLE regress_de_copy_admin;
-- so may a replication role, the one an embassy connects as
SELECT data_embassy.public_key() AS copy_key \gset
CREATE ROLE regress_de_copy_repl REPLICATION;
SET ROLE regress_de_copy_repl;
SELECT count(*) > 0 AS frames FROM data_embassy.copy_frames(:'copy_key');
RESET ROLE;
DROP ROLE regress_de_copy_repl;

\c :regress_db
DROP DATABASE de_copy;
