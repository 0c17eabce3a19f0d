--
-- 12_tamper: frames keep their content secret, and a frame that was
-- altered, cut short, swapped, repeated, taken from another stream or
-- sealed by another register is refused, with nothing of it returned.
--

-- open frames as a receiver would; say what went wrong, with its SQLSTATE
CREATE FUNCTION de_open(frames bytea[], register_key text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	n bigint;
BEGIN
	SELECT count(*) INTO n
	FROM data_embassy.inspect_frames(frames,
			coalesce(register_key, data_embassy.public_key()));
	RETURN 'opened: ' || n || ' records';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

CREATE TABLE de_secret (id integer PRIMARY KEY, note text);
SELECT 'init' FROM pg_create_logical_replication_slot('de_tamper', 'data_embassy');

-- stream A: several frames
INSERT INTO de_secret VALUES (0, 'SECRET-PLAINTEXT-MARKER-42');
INSERT INTO de_secret
SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 1500) g;
CREATE TEMP TABLE a AS SELECT de_frames('de_tamper', 'batch_size', '16kB') AS f;
SELECT cardinality(f) >= 4 AS enough_frames FROM a;

-- stream B: another decoding call makes another stream
INSERT INTO de_secret VALUES (-1, 'another stream');
CREATE TEMP TABLE b AS SELECT de_frames('de_tamper') AS f;

-- the plaintext is nowhere in the frames, but the frames do hold it
SELECT bool_and(position(convert_to('SECRET-PLAINTEXT-MARKER-42', 'UTF8') IN fr) = 0)
	AS not_in_clear,
	bool_and(position(convert_to('another stream', 'UTF8') IN fr) = 0)
	AS b_not_in_clear
FROM (SELECT unnest(f) FROM a UNION ALL SELECT unnest(f) FROM b) s(fr);
SELECT count(*) AS found
FROM a, data_embassy.inspect_frames(a.f, data_embassy.public_key()) i
WHERE i.detail->'new'->>'note' = 'SECRET-PLAINTEXT-MARKER-42';

-- the untouched streams open
SELECT de_open(f) FROM a;
SELECT de_open(f) FROM b;
-- so does a later part of a stream on its own
SELECT de_open(f[2:3]) FROM a;

-- one flipped bit, in the sealed body and in the header
SELECT de_open(f[1:1] || set_byte(f[2], 200, get_byte(f[2], 200) # 1) || f[3:])
FROM a;
-- the last byte: of the signature of frame 1 (a stream's first frame is
-- always signed); the last bytes of an unsigned frame are its session MAC,
-- which only the worker that made the session can check (TAP 070)
SELECT de_open(set_byte(f[1], length(f[1]) - 1,
						get_byte(f[1], length(f[1]) - 1) # 128) || f[2:2])
FROM a;
SELECT de_open(f[1:1] || set_byte(f[2], 70, get_byte(f[2], 70) # 1) || f[3:])
FROM a;
-- a frame from another stream
SELECT de_open(a.f[1:2] || b.f[1:1]) FROM a, b;
SELECT de_open(b.f[1:1] || a.f[2:2]) FROM a, b;
-- swapped, repeated, skipped
SELECT de_open(ARRAY[f[1], f[3], f[2]]) FROM a;
SELECT de_open(ARRAY[f[1], f[2], f[2]]) FROM a;
SELECT de_open(ARRAY[f[1], f[1]]) FROM a;
SELECT de_open(ARRAY[f[1], f[3]]) FROM a;
-- cut short, or with bytes added
SELECT de_open(ARRAY[f[1], substring(f[2] FROM 1 FOR length(f[2]) - 10)]) FROM a;
SELECT de_open(ARRAY[f[1], substring(f[2] FROM 1 FOR 100)]) FROM a;
SELECT de_open(ARRAY[f[1], f[2] || '\x00'::bytea]) FROM a;
SELECT de_open(ARRAY['\x00'::bytea]);
SELECT de_open(ARRAY[convert_to(repeat('not a frame ', 20), 'UTF8')]);
-- sealed by another register (or opened with the wrong register key)
SELECT de_open(f, (repeat('ab', 31) || '2b' || repeat('ed', 32))) FROM a;
SELECT de_open(f, 'bad key') FROM a;

-- nothing of a bad frame is returned, not even the good frames before it
SELECT count(*) FROM a, data_embassy.inspect_frames(ARRAY[a.f[1], a.f[3]],
	data_embassy.public_key());

-- the clear header; the body stays sealed
SELECT version, kind, flags, seq, plain_len > 0 AS has_body,
	   prev_hash = '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea AS first,
	   stream_key <> data_embassy.public_key() AS ephemeral_stream_key,
	   database_oid = (SELECT oid FROM pg_database WHERE datname = current_database()) AS this_db,
	   system_identifier = (SELECT system_identifier FROM pg_control_system()) AS this_cluster
FROM a, unnest(a.f) WITH ORDINALITY u(fr, n), data_embassy.frame_header(fr)
WHERE n <= 2 ORDER BY n;
SELECT sum(plain_len) > 2 * sum(sealed_len) AS compressed
FROM a, unnest(a.f) fr, data_embassy.frame_header(fr);
SELECT count(DISTINCT stream_key) AS streams
FROM (SELECT unnest(f) FROM a UNION ALL SELECT unnest(f) FROM b) s(fr),
	 data_embassy.frame_header(fr);
SELECT data_embassy.frame_header('\x0102'::bytea);

-- inspect_frames needs a superuser
CREATE ROLE regress_de_tamper_admin IN ROLE data_embassy_admin;
GRANT SELECT ON a TO regress_de_tamper_admin;
GRANT EXECUTE ON FUNCTION data_embassy.inspect_frames(bytea[], text)
	TO regress_de_tamper_admin;
SET ROLE regress_de_tamper_admin;
SELECT count(*) FROM a, data_embassy.inspect_frames(a.f, data_embassy.public_key());
RESET ROLE;
DROP OWNED BY regress_de_tamper_admin;
DROP ROLE regress_de_tamper_admin;

SELECT pg_drop_replication_slot('de_tamper');
DROP TABLE a, b, de_secret;
DROP FUNCTION de_open(bytea[], text);
