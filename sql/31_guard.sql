--
-- 31_guard: the write guard refuses changes to the tables a register
-- replicates into (data_embassy.replicated_relations) and leaves every
-- other table alone.  The register's conninfo points at a socket that does
-- not exist, so its worker never changes the rows written here.
--
\set conninfo 'host=/nonexistent port=1 dbname=postgres'
\set VERBOSITY terse
SELECT data_embassy.add_register('g1', :'conninfo', (repeat('ef', 31) || '6f' || repeat('ed', 32)));

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

-- what TRUNCATE and ALTER TABLE reach beyond the names they are given
CREATE TABLE guard_parent (id int PRIMARY KEY);
CREATE TABLE guard_child () INHERITS (guard_parent);
CREATE TABLE guard_ref (id int PRIMARY KEY);
CREATE TABLE guard_fk (id int REFERENCES guard_ref);
CREATE SEQUENCE guard_seq;
INSERT INTO data_embassy.replicated_relations
VALUES ('g1', 'guard_child'::regclass), ('g1', 'guard_fk'::regclass);
INSERT INTO data_embassy.replicated_sequences
VALUES ('g1', 'guard_seq'::regclass, 10);
\c
\set VERBOSITY terse
-- through an inheritance parent, and through CASCADE
TRUNCATE guard_parent;
TRUNCATE ONLY guard_parent;
TRUNCATE guard_ref CASCADE;
-- a rewrite of every row with an expression of its own
ALTER TABLE guard_child ALTER COLUMN id TYPE bigint USING id + 1;
ALTER TABLE guard_parent ALTER COLUMN id TYPE bigint USING id * 2;
-- a plain type change (what follows a change at the register) is allowed
ALTER TABLE guard_fk ALTER COLUMN id TYPE int;
-- a replicated sequence cannot be altered
ALTER SEQUENCE guard_seq INCREMENT BY -1;
ALTER SEQUENCE guard_seq CYCLE;
DELETE FROM data_embassy.replicated_relations
WHERE relid IN ('guard_child'::regclass, 'guard_fk'::regclass);
DELETE FROM data_embassy.replicated_sequences;
DROP TABLE guard_parent, guard_child, guard_fk, guard_ref;
DROP SEQUENCE guard_seq;

-- put the table back as the extension made it; the guard follows at once
DELETE FROM data_embassy.replicated_relations
WHERE register IS NULL OR register = 'g1';
ALTER TABLE data_embassy.replicated_relations
	ALTER COLUMN register SET NOT NULL;
INSERT INTO guard_replica VALUES (4);
SELECT id FROM guard_replica ORDER BY id;

-- promote() moves replicated sequences past the register's values, but
-- never past their maximum (a warning says so), and lifts the guard
CREATE SEQUENCE guard_big MAXVALUE 100;
SELECT setval('guard_big', 95);
INSERT INTO data_embassy.replicated_sequences
VALUES ('g1', 'guard_big'::regclass, 90);
\c
\set VERBOSITY default
ALTER SEQUENCE guard_big MAXVALUE 200;
SELECT register, applied_lsn FROM data_embassy.promote('g1');
SELECT last_value FROM guard_big;
-- the promotion is recorded, and the record outlives drop_register
SELECT register, promoted_lsn, source_lsn, unreplicated_bytes,
	   promoted_by = current_user AS by_me
FROM data_embassy.promotions;
-- (the launcher shows the promoted register within seconds)
DO $$
DECLARE
	r record;
BEGIN
	FOR i IN 1..300 LOOP
		SELECT register, state, unreplicated_bytes INTO r
		FROM data_embassy.failover_status WHERE register = 'g1';
		EXIT WHEN FOUND;
		PERFORM pg_sleep(0.1);
	END LOOP;
	RAISE NOTICE 'failover_status: %, unreplicated_bytes unknown: %',
		r.state, r.unreplicated_bytes IS NULL;
END
$$;
ALTER SEQUENCE guard_big MAXVALUE 200;
INSERT INTO guard_replica VALUES (5);
DROP SEQUENCE guard_big;
\set VERBOSITY terse

SET client_min_messages = error;
SELECT data_embassy.drop_register('g1');
RESET client_min_messages;
SELECT register FROM data_embassy.promotions;
DROP TABLE guard_replica, guard_local, guard_orphan;

-- a database whose transactions are read-only by default: the launcher's
-- workers still read and write their own state
DO $$
BEGIN
	EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on',
				   current_database());
END
$$;
\c
SET default_transaction_read_only = off;
SELECT data_embassy.add_register('ro', 'host=/nonexistent port=1 dbname=postgres',
								 (repeat('ef', 31) || '6f' || repeat('ed', 32)));
DO $$
DECLARE
	listed boolean := false;
BEGIN
	FOR i IN 1..300 LOOP
		SELECT EXISTS (SELECT FROM data_embassy.lag WHERE register = 'ro')
		INTO listed;
		EXIT WHEN listed;
		PERFORM pg_sleep(0.1);
		PERFORM pg_stat_clear_snapshot();
	END LOOP;
	RAISE NOTICE 'register listed under default_transaction_read_only: %', listed;
END
$$;
SET client_min_messages = error;
SELECT data_embassy.drop_register('ro');
RESET client_min_messages;
DO $$
BEGIN
	EXECUTE format('ALTER DATABASE %I RESET default_transaction_read_only',
				   current_database());
END
$$;
