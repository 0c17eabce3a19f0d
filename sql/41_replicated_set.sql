--
-- 41_replicated_set: what a register replicates to one embassy.  Register
-- side: the output plugin's "schemas" option (add_register's schemas
-- argument, as the embassy sends it) leaves the other schemas' tables and
-- sequences out of the stream, and copy_frames()'s six-argument form
-- checks its arguments.  Embassy side: add_register's schemas argument and
-- add_replicated_table() with their bad inputs.  The copy's contents with
-- schemas and without rows are shown end to end by TAP 160 and 165.
--

CREATE SCHEMA rs_in;
CREATE SCHEMA rs_out;
CREATE SCHEMA "RS Odd";
CREATE TABLE rs_in.t (id integer PRIMARY KEY, v text);
CREATE TABLE rs_out.t (id integer PRIMARY KEY, v text);
CREATE TABLE "RS Odd".t (id integer PRIMARY KEY, v text);
CREATE SEQUENCE rs_in.q;
CREATE SEQUENCE rs_out.q;
SELECT 'init' FROM pg_create_logical_replication_slot('de_rs', 'data_embassy');

BEGIN;
INSERT INTO rs_in.t VALUES (1, 'in');
INSERT INTO rs_out.t VALUES (1, 'out');
INSERT INTO "RS Odd".t VALUES (1, 'odd');
SELECT nextval('rs_in.q'), nextval('rs_out.q');
COMMIT;

-- only the listed schemas travel: tables and sequences
CREATE TEMP TABLE rs_frames AS
SELECT de_frames('de_rs', 'schemas', '"rs_in","RS Odd"') AS frames;
SELECT rec, relation FROM rs_frames, de_records(rs_frames.frames)
WHERE rec IN ('RELATION', 'INSERT') ORDER BY 1, 2;
SELECT s->>'name' AS sequence
FROM rs_frames, de_records(rs_frames.frames) r,
	 jsonb_array_elements(r.detail->'sequences') s
WHERE rec = 'SEQUENCES' ORDER BY 1;

-- bad values of the option
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_rs', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'schemas', '');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_rs', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'schemas', '"unterminated');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_rs', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'schemas', 'a,,b');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('de_rs', NULL, NULL,
	'embassy_key', data_embassy.public_key(), 'schemas', 'a', 'schemas', 'b');
SELECT 'dropped' FROM pg_drop_replication_slot('de_rs');

-- copy_frames(), six arguments: NULLs and bad schemas, before anything else
SELECT count(*) FROM data_embassy.copy_frames(NULL, repeat('0', 32), 'x', 'y',
	NULL, true);
SELECT count(*) FROM data_embassy.copy_frames(data_embassy.public_key(),
	repeat('0', 32), 'x', 'y', NULL, NULL);
SELECT count(*) FROM data_embassy.copy_frames(data_embassy.public_key(),
	repeat('0', 32), 'x', 'y', '{}', true);
SELECT count(*) FROM data_embassy.copy_frames(data_embassy.public_key(),
	repeat('0', 32), 'x', 'y', '{a,NULL}', true);

-- embassy side: add_register(schemas => ...)
\set conninfo 'host=/nonexistent port=1 dbname=postgres'
SELECT (repeat('ab', 31) || '2b' || repeat('ed', 32)) AS rkey \gset
SELECT (repeat('ac', 31) || '2b' || repeat('ed', 32)) AS rkey2 \gset
SELECT data_embassy.add_register('rs', :'conninfo', :'rkey', schemas => '{}');
SELECT data_embassy.add_register('rs', :'conninfo', :'rkey', schemas => '{rs_in,NULL}');
SELECT data_embassy.add_register('rs', :'conninfo', :'rkey', schemas => '{rs_in,nowhere}');
SELECT data_embassy.add_register('rs', :'conninfo', :'rkey', schemas => '{rs_in,rs_in}');
SELECT data_embassy.add_register('rs', :'conninfo', :'rkey', schemas => '{pg_catalog}');
SELECT data_embassy.add_register('rs', :'conninfo', :'rkey', schemas => '{information_schema}');
SELECT data_embassy.add_register('rs', :'conninfo', :'rkey', schemas => '{data_embassy}');
SELECT data_embassy.add_register('rs', :'conninfo', :'rkey', schemas => '{{rs_in},{rs_out}}');
SELECT data_embassy.add_register('rs', :'conninfo', :'rkey', schemas => ARRAY[repeat('x', 64)]);
SELECT count(*) AS nothing_stored FROM data_embassy.registers;
SELECT data_embassy.add_register('rs', :'conninfo', :'rkey',
	schemas => '{rs_in,"RS Odd"}');
SELECT data_embassy.add_register('rs_all', :'conninfo', :'rkey2');
SELECT name, schemas FROM data_embassy.registers ORDER BY name;

-- add_replicated_table(): bad inputs
CREATE VIEW rs_in.v AS SELECT 1 AS one;
CREATE TEMP TABLE rs_temp (id integer);
SELECT data_embassy.add_replicated_table(NULL, 'rs_in.t');
SELECT data_embassy.add_replicated_table('rs', NULL);
SELECT data_embassy.add_replicated_table('nobody', 'rs_in.t');
SELECT data_embassy.add_replicated_table('rs', 'rs_in.v');
SELECT data_embassy.add_replicated_table('rs', 'rs_temp');
SELECT data_embassy.add_replicated_table('rs', 'data_embassy.registers');
SELECT data_embassy.add_replicated_table('rs', 'pg_catalog.pg_class');
SELECT data_embassy.add_replicated_table('rs', 'rs_out.t');
SELECT data_embassy.add_replicated_table('rs', 99999::oid::regclass);
-- a declared table is guarded at once; declaring again is a notice; a
-- table is the replica of one register only
SELECT data_embassy.add_replicated_table('rs', 'rs_in.t');
SELECT data_embassy.add_replicated_table('rs', '"RS Odd".t');
SELECT relid::regclass, register FROM data_embassy.replicated_relations ORDER BY 1;
INSERT INTO rs_in.t VALUES (2, 'local');
SELECT data_embassy.add_replicated_table('rs', 'rs_in.t');
SELECT data_embassy.add_replicated_table('rs_all', 'rs_in.t');
-- a plain role may not
SELECT 'rs_out.t'::regclass::oid AS out_oid \gset
CREATE ROLE regress_rs_plain;
SET ROLE regress_rs_plain;
SELECT data_embassy.add_replicated_table('rs', :out_oid);
RESET ROLE;
DROP ROLE regress_rs_plain;
-- a promoted register has nothing to declare
SELECT count(*) FROM data_embassy.promote('rs_all', accept_data_loss => true);
SELECT data_embassy.add_replicated_table('rs_all', 'rs_out.t');

SELECT data_embassy.drop_register('rs');
SELECT data_embassy.drop_register('rs_all');
SELECT count(*) AS replicas_left FROM data_embassy.replicated_relations;
DROP VIEW rs_in.v;
DROP SCHEMA rs_in, rs_out, "RS Odd" CASCADE;
