--
-- 20_copy_frames: the initial copy's guard.  copy_frames() seals the rows
-- only inside the snapshot the embassy's replication slot exported, in the
-- transaction that imported it (see src/register/copy_frames.c): a single
-- instance without a walsender can only show the refusals.  The copy's
-- contents are shown end to end by the TAP tests (010, 175: every table
-- compared after a copy; 175: the refusals through a real walsender).
-- Runs in a database of its own.
--

SELECT current_database() AS regress_db \gset
CREATE DATABASE de_copy;
\c de_copy
CREATE EXTENSION data_embassy;
SELECT data_embassy.add_embassy('self', data_embassy.public_key()) IS NOT NULL AS pinned;
SELECT slot_name AS slot FROM data_embassy.embassy_pins WHERE name = 'self' \gset
CREATE TABLE de_people (id bigint PRIMARY KEY, name text);
INSERT INTO de_people SELECT g, 'person ' || g FROM generate_series(1, 20) g;

-- (the slot's name depends on this instance's key: SQLSTATEs only)
\set VERBOSITY sqlstate
-- no slot by that name, in a fresh snapshot
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM data_embassy.copy_frames(data_embassy.public_key(),
	repeat('0', 64), :'slot', '00000003-00000002-1');
ROLLBACK;
-- a snapshot name that is not one, or a path
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM data_embassy.copy_frames(data_embassy.public_key(),
	repeat('0', 64), :'slot', '../../postgresql.conf');
ROLLBACK;
-- a snapshot this session exported itself: not a walsender's
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_export_snapshot() AS snap \gset
SELECT count(*) FROM data_embassy.copy_frames(data_embassy.public_key(),
	repeat('0', 64), :'slot', :'snap');
ROLLBACK;
\set VERBOSITY default
-- a session key that is not 64 hexadecimal digits
SELECT count(*) FROM data_embassy.copy_frames(data_embassy.public_key(),
	'abc', :'slot', '00000003-00000002-1');

-- refused: unpinned or malformed keys, a plain role
SELECT count(*) FROM data_embassy.copy_frames((repeat('cd', 31) || '4d' || repeat('ed', 32)),
	repeat('0', 64), :'slot', '00000003-00000002-1');
SELECT count(*) FROM data_embassy.copy_frames('nope',
	repeat('0', 64), :'slot', '00000003-00000002-1');
CREATE ROLE regress_de_copy_plain;
SET ROLE regress_de_copy_plain;
SELECT count(*) FROM data_embassy.copy_frames((repeat('cd', 31) || '4d' || repeat('ed', 32)),
	repeat('0', 64), :'slot', '00000003-00000002-1');
RESET ROLE;
DROP ROLE regress_de_copy_plain;

\c :regress_db
DROP DATABASE de_copy;
