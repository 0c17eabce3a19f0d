--
-- 10_plugin_types: values of many types go through the output plugin,
-- are sealed to this instance's own key (pinned as 'self' by 02_pins) and
-- come back out of inspect_frames() unchanged.
--

CREATE TYPE de_mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN de_posint AS integer CHECK (VALUE > 0);
CREATE TYPE de_pair AS (a integer, b text);

CREATE TABLE de_types (
	id		integer PRIMARY KEY,
	i2		int2,
	i4		int4,
	i8		int8,
	num		numeric,
	num2	numeric(12,2),
	f4		float4,
	f8		float8,
	t		text,
	vc		varchar(20),
	bp		char(5),
	b		bytea,
	jb		jsonb,
	js		json,
	ia		integer[],
	ta		text[],
	ts		timestamptz,
	tsn		timestamp,
	d		date,
	tm		time,
	iv		interval,
	u		uuid,
	bo		boolean,
	ip		inet,
	r		int4range,
	mood	de_mood,
	moods	de_mood[],
	pos		de_posint,
	pair	de_pair,
	rc		regclass
);

-- no primary key: the whole old row identifies a row
CREATE TABLE de_nokey (a integer, b text, c numeric);
ALTER TABLE de_nokey REPLICA IDENTITY FULL;

SELECT 'init' FROM pg_create_logical_replication_slot('de_types', 'data_embassy');

INSERT INTO de_types VALUES
	(1, 32767, -2147483648, 9223372036854775807,
	 '12345678901234567890.123456789', -0.01, 1.5, -2.25e-300,
	 'Tõnismägi ☃ 東京', 'short', 'ab', '\x00ff10',
	 '{"a": [1, 2.5, null], "b": "õ", "c": {"d": true}}', ' {"x" : 1} ',
	 '{1,NULL,3}', '{"a b","c,d",NULL,"東"}',
	 '2024-02-29 12:34:56.789+02', '2000-01-01 00:00:00.000001',
	 '1999-12-31', '23:59:59.999999', '1 year 2 mons 3 days 04:05:06.7',
	 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, '192.168.0.1/24',
	 '[1,10)', 'happy', '{sad,ok}', 42, ROW(7, 'seven'), 'de_types'),
	(2, -32768, 0, -9223372036854775808,
	 'NaN', 0, 'NaN', 'NaN',
	 '', '', '', '',
	 '[]', 'null',
	 '{{1,2},{3,4}}', '{}',
	 'infinity', '-infinity',
	 '-infinity', '00:00', '-1 days',
	 '00000000-0000-0000-0000-000000000000', false, '::1',
	 'empty', 'sad', '{}', 1, ROW(NULL, NULL), 'pg_class'),
	(3, 1, 1, 1,
	 '-0.000001', 99.99, 'Infinity', 'Infinity',
	 repeat('x', 3000), 'x', 'x', decode(repeat('ab', 1000), 'hex'),
	 '{"n": 1e100}', '"s"',
	 '{}', '{""}',
	 '-infinity', 'infinity',
	 'infinity', '12:00', '0',
	 'ffffffff-ffff-ffff-ffff-ffffffffffff', true, '2001:db8::/32',
	 '(,5]', 'ok', '{happy,happy}', 2147483647, ROW(-1, ''), '-'),
	(4, NULL, NULL, NULL, NULL, NULL, '-Infinity', '-Infinity',
	 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
	(5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	 NULL, NULL, NULL, NULL, NULL);

INSERT INTO de_nokey VALUES (1, 'one', 1.1), (2, 'two', NULL), (NULL, NULL, NULL);
UPDATE de_nokey SET b = 'uno' WHERE a = 1;
DELETE FROM de_nokey WHERE a = 2;

CREATE TEMP TABLE f AS SELECT de_frames('de_types') AS frames;

-- the records, in order
SELECT rec, relation FROM f, de_records(f.frames);

-- how each column travels: binary for built-in types, enums and domains
-- over them; text for composites, arrays of enums and OID aliases
SELECT c->>'name' AS name, c->>'type' AS type, c->>'format' AS format,
	   (c->>'key')::boolean AS key
FROM f, de_records(f.frames) d, jsonb_array_elements(d.detail->'columns') c
WHERE d.rec = 'RELATION' AND d.relation = 'public.de_types';

-- every row comes back equal to the source row (json and jsonb aside:
-- populating them from a JSON string keeps the quotes, so compare text)
SELECT src.id,
	   to_jsonb(src) - '{js,jb}'::text[] = to_jsonb(back) - '{js,jb}'::text[]
		AS same,
	   src.js::text IS NOT DISTINCT FROM d.detail->'new'->>'js' AND
	   src.jb::text IS NOT DISTINCT FROM d.detail->'new'->>'jb' AS same_json
FROM de_types src, f, de_records(f.frames) d,
	 jsonb_populate_record(NULL::de_types, d.detail->'new') back
WHERE d.rec = 'INSERT' AND d.relation = 'public.de_types' AND back.id = src.id
ORDER BY src.id;

-- the values, as the types print them
SELECT (d.detail->'new'->>'id')::int AS id, c.key, c.value
FROM f, de_records(f.frames) d, jsonb_each(d.detail->'new') c
WHERE d.rec = 'INSERT' AND d.relation = 'public.de_types'
  AND (d.detail->'new'->>'id')::int IN (1, 2, 4)
ORDER BY 1, 2;

-- long values arrive whole
SELECT length(d.detail->'new'->>'t') AS t_len,
	   length(d.detail->'new'->>'b') AS b_hex_len
FROM f, de_records(f.frames) d
WHERE d.rec = 'INSERT' AND d.relation = 'public.de_types'
  AND d.detail->'new'->>'id' = '3';

-- without a primary key: REPLICA IDENTITY FULL sends the old row
SELECT rec, detail FROM f, de_records(f.frames)
WHERE relation = 'public.de_nokey';

SELECT pg_drop_replication_slot('de_types');
DROP TABLE f, de_types, de_nokey;
DROP TYPE de_pair;
DROP DOMAIN de_posint;
DROP TYPE de_mood;
