--
-- 31_guard: the write guard refuses changes to the tables a register
-- replicates into (data_embassy.replicated_relations) and leaves every
-- other table alone.  The register's conninfo points at a socket that does
-- not exist, so its worker never changes the rows written here.
--
\set conninfo 'host=/nonexistent port=1 dbname=postgres'
\set VERBOSITY terse
SELECT data_embassy.add_register('g1', :'conninfo', repeat('ef', 32));

CREATE TABLE guard_replica (id int);
CREATE TABLE guard_local (id int);
CREATE TABLE guard_orphan (id int);
INSERT INTO guard_replica VALUES (1);
INSERT INTO data_embassy.replicated_relations
VALUES ('g1', 'guard_replica'::regclass);
-- a row without a register (only possible once NOT NULL is dropped) names
-- nothing to guard: its table stays writable, and the guard does not trip
-- over the null
ALTER TABLE data_embassy.replicated_relations
	ALTER COLUMN register DROP NOT NULL;
INSERT INTO data_embassy.replicated_relations
VALUES (NULL, 'guard_orphan'::regclass);

-- a fresh session loads the guarded set
\c
\set VERBOSITY terse
INSERT INTO guard_replica VALUES (2);
UPDATE guard_replica SET id = 3;
DELETE FROM guard_replica;
TRUNCATE guard_replica;
COPY guard_replica FROM stdin;
\.
SELECT id FROM guard_replica;
EXPLAIN (COSTS OFF) DELETE FROM guard_replica;
INSERT INTO guard_local VALUES (1);
INSERT INTO guard_orphan VALUES (1);
SELECT id FROM guard_orphan;

-- put the table back as the extension made it; the guard follows at once
DELETE FROM data_embassy.replicated_relations
WHERE register IS NULL OR register = 'g1';
ALTER TABLE data_embassy.replicated_relations
	ALTER COLUMN register SET NOT NULL;
INSERT INTO guard_replica VALUES (4);
SELECT id FROM guard_replica ORDER BY id;

SET client_min_messages = error;
SELECT data_embassy.drop_register('g1');
RESET client_min_messages;
DROP TABLE guard_replica, guard_local, guard_orphan;
