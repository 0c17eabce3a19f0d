--
-- 34_resync_table: resync_table()'s refusals on one instance, and the
-- request it records.  The register's conninfo points at a socket that does
-- not exist, so its worker never copies anything; the copy itself is shown
-- end to end by TAP test 190.  Register side: copy_table_frames() takes
-- only the embassy's resync slot, bound like copy_frames().
--

SELECT (repeat('ab', 31) || '2b' || repeat('ed', 32)) AS rkey1 \gset
SELECT (repeat('ab', 31) || '3b' || repeat('ed', 32)) AS rkey2 \gset
\set conninfo 'host=/nonexistent port=1 dbname=postgres'
CREATE TABLE rt_replica (id integer PRIMARY KEY);
CREATE TABLE rt_other (id integer PRIMARY KEY);
CREATE TABLE rt_local (id integer);
SELECT data_embassy.add_register('rt1', :'conninfo', :'rkey1');
SELECT data_embassy.add_register('rt2', :'conninfo', :'rkey2');

-- nulls and names that are not there
SELECT data_embassy.resync_table(NULL, 'rt_replica');
SELECT data_embassy.resync_table('rt1', NULL);
SELECT data_embassy.resync_table('no_such', 'rt_replica');
SELECT data_embassy.resync_table('rt1', 'no_such');
SELECT data_embassy.resync_table('rt1', 4000000000::oid::regclass);

-- a register still in its first run has no table to copy again
SELECT data_embassy.resync_table('rt1', 'rt_replica');

-- as if the registers had streamed into rt_replica and rt_other
UPDATE data_embassy.registers SET state = 'streaming';
INSERT INTO data_embassy.replicated_relations (register, relid, remote_relid)
VALUES ('rt1', 'rt_replica'::regclass, 16385),
	   ('rt2', 'rt_other'::regclass, 16386);

-- a table the register does not replicate, or another register does
SELECT data_embassy.resync_table('rt1', 'rt_local');
SELECT data_embassy.resync_table('rt1', 'rt_other');

-- only admins
CREATE ROLE regress_rt_plain;
SET ROLE regress_rt_plain;
SELECT data_embassy.resync_table('rt1', 'rt_replica');
RESET ROLE;
DROP ROLE regress_rt_plain;

-- recorded; asked again, a notice
SELECT data_embassy.resync_table('rt1', 'rt_replica');
SELECT register, relation, state, sync_lsn FROM data_embassy.table_resyncs;
SELECT data_embassy.resync_table('rt1', 'rt_replica');
SELECT relid::regclass, sync_state, sync_lsn FROM data_embassy.replicated_relations
ORDER BY 1;

-- paused or promoted registers are refused
SELECT data_embassy.pause_register('rt2');
SELECT data_embassy.resync_table('rt2', 'rt_other');
SELECT data_embassy.resume_register('rt2');
UPDATE data_embassy.registers SET state = 'promoted' WHERE name = 'rt2';
SELECT data_embassy.resync_table('rt2', 'rt_other');

SELECT data_embassy.drop_register('rt1');
SELECT data_embassy.drop_register('rt2');
SELECT count(*) AS relations_left FROM data_embassy.replicated_relations;
DROP TABLE rt_replica, rt_other, rt_local;

-- register side: copy_table_frames takes only this embassy's resync slot
-- (this instance is pinned as embassy "self" by 02_pins)
SELECT slot_name AS slot FROM data_embassy.embassy_pins WHERE name = 'self' \gset
\set VERBOSITY sqlstate
-- the embassy's own slot is for copy_frames (22023: not this embassy's)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM data_embassy.copy_table_frames(data_embassy.public_key(),
	repeat('0', 64), :'slot', '00000003-00000002-1', ARRAY[1]::oid[]);
ROLLBACK;
-- its resync slot is accepted by name, and then must exist (42704)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM data_embassy.copy_table_frames(data_embassy.public_key(),
	repeat('0', 64), :'slot' || '_resync', '00000003-00000002-1', ARRAY[1]::oid[]);
ROLLBACK;
\set VERBOSITY default
