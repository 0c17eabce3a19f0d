--
-- 04_keyless: replicated tables without a replica identity, at a register
-- where an embassy is pinned ('self', left by 02_pins) and the library is
-- preloaded.  UPDATE and DELETE of such tables are refused however they
-- are run; the view keyless_tables lists them; add_embassy() warns; the
-- plugin warns once per table per stream; set_keyless_identity_full()
-- gives new tables without a primary key REPLICA IDENTITY FULL.
--

CREATE TABLE de_kl_nopk (a integer, b text);
CREATE TABLE de_kl_pk (id integer PRIMARY KEY, b text);
CREATE TABLE de_kl_nothing (id integer PRIMARY KEY, b text);
ALTER TABLE de_kl_nothing REPLICA IDENTITY NOTHING;
CREATE TABLE de_kl_idx (id integer NOT NULL, b text);
CREATE UNIQUE INDEX de_kl_idx_id ON de_kl_idx (id);
ALTER TABLE de_kl_idx REPLICA IDENTITY USING INDEX de_kl_idx_id;
CREATE TABLE de_kl_full (a integer, b text);
ALTER TABLE de_kl_full REPLICA IDENTITY FULL;
CREATE TABLE de_kl_deferred (id integer PRIMARY KEY DEFERRABLE, b text);
CREATE TEMP TABLE de_kl_temp (a integer);
CREATE UNLOGGED TABLE de_kl_unlogged (a integer);

-- inserts are never refused
INSERT INTO de_kl_nopk VALUES (1, 'one'), (2, 'two'), (3, 'three');
INSERT INTO de_kl_pk VALUES (1, 'one');
INSERT INTO de_kl_nothing VALUES (1, 'one');
INSERT INTO de_kl_idx VALUES (1, 'one');
INSERT INTO de_kl_full VALUES (1, 'one');
INSERT INTO de_kl_deferred VALUES (1, 'one');
INSERT INTO de_kl_temp VALUES (1);
INSERT INTO de_kl_unlogged VALUES (1);

-- the list (a deferrable primary key is no replica identity)
SELECT * FROM data_embassy.keyless_tables ORDER BY schema, "table";

-- UPDATE and DELETE without a replica identity are refused
UPDATE de_kl_nopk SET b = 'uno' WHERE a = 1;
DELETE FROM de_kl_nopk WHERE a = 2;
UPDATE de_kl_nothing SET b = 'uno';
DELETE FROM de_kl_nothing;
UPDATE de_kl_deferred SET b = 'uno';
-- with a replica identity, or on tables that are not replicated, they run
UPDATE de_kl_pk SET b = 'uno';
UPDATE de_kl_idx SET b = 'uno';
UPDATE de_kl_full SET b = 'uno';
DELETE FROM de_kl_full WHERE a = 2;
UPDATE de_kl_temp SET a = 2;
UPDATE de_kl_unlogged SET a = 2;
UPDATE data_embassy.embassy_pins SET created_at = created_at WHERE false;
-- a statement that changes no row is refused too, as core does
UPDATE de_kl_nopk SET b = 'none' WHERE false;
-- EXPLAIN runs nothing; EXPLAIN ANALYZE does
EXPLAIN (COSTS OFF) UPDATE de_kl_nopk SET b = 'x';
EXPLAIN (COSTS OFF, ANALYZE) UPDATE de_kl_nopk SET b = 'x';

-- an identity index that is dropped leaves the table without identity
DROP INDEX de_kl_idx_id;
SELECT * FROM data_embassy.keyless_tables WHERE "table" = 'de_kl_idx';
UPDATE de_kl_idx SET b = 'dos';

-- statements run by a trigger, a foreign key action, a WITH query, MERGE
-- and INSERT ... ON CONFLICT DO UPDATE are refused the same way
CREATE FUNCTION de_kl_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	UPDATE de_kl_nopk SET b = NEW.b WHERE a = NEW.id;
	RETURN NEW;
END
$$;
CREATE TRIGGER de_kl_touch AFTER UPDATE ON de_kl_pk
	FOR EACH ROW EXECUTE FUNCTION de_kl_touch();
UPDATE de_kl_pk SET b = 'from a trigger';
SELECT b FROM de_kl_pk;
DROP TRIGGER de_kl_touch ON de_kl_pk;

CREATE TABLE de_kl_parent (id integer PRIMARY KEY);
CREATE TABLE de_kl_child (parent integer REFERENCES de_kl_parent
						  ON DELETE CASCADE ON UPDATE CASCADE);
INSERT INTO de_kl_parent VALUES (1), (2);
INSERT INTO de_kl_child VALUES (1);
DELETE FROM de_kl_parent WHERE id = 1;
UPDATE de_kl_parent SET id = 10 WHERE id = 1;
-- a parent row no child refers to: the cascade statement still runs
DELETE FROM de_kl_parent WHERE id = 2;

WITH d AS (DELETE FROM de_kl_nopk RETURNING *) SELECT count(*) FROM d;
WITH d AS (UPDATE de_kl_nopk SET b = 'w' RETURNING *) SELECT count(*) FROM d;
WITH i AS (INSERT INTO de_kl_nopk VALUES (4, 'four') RETURNING *)
SELECT count(*) FROM i;

MERGE INTO de_kl_nopk t USING (VALUES (1)) AS v(a) ON t.a = v.a
	WHEN MATCHED THEN UPDATE SET b = 'merged';
MERGE INTO de_kl_nopk t USING (VALUES (1)) AS v(a) ON t.a = v.a
	WHEN MATCHED THEN DELETE;
MERGE INTO de_kl_nopk t USING (VALUES (5)) AS v(a) ON t.a = v.a
	WHEN NOT MATCHED THEN INSERT VALUES (v.a, 'five');

CREATE TABLE de_kl_uniq (k integer UNIQUE, v integer);
INSERT INTO de_kl_uniq VALUES (1, 1) ON CONFLICT (k) DO NOTHING;
INSERT INTO de_kl_uniq VALUES (1, 2) ON CONFLICT (k) DO UPDATE SET v = 2;

-- partitions are the replicated tables, checked through their parent
CREATE TABLE de_kl_part (a integer, b text) PARTITION BY RANGE (a);
CREATE TABLE de_kl_part1 PARTITION OF de_kl_part FOR VALUES FROM (0) TO (100);
CREATE TABLE de_kl_upart (k integer, v integer) PARTITION BY RANGE (k);
CREATE TABLE de_kl_upart1 PARTITION OF de_kl_upart FOR VALUES FROM (0) TO (100);
CREATE UNIQUE INDEX ON de_kl_upart (k);
INSERT INTO de_kl_part VALUES (1, 'one');
UPDATE de_kl_part SET b = 'uno';
DELETE FROM de_kl_part;
INSERT INTO de_kl_upart VALUES (1, 1) ON CONFLICT (k) DO UPDATE SET v = 2;
ALTER TABLE de_kl_part1 REPLICA IDENTITY FULL;
UPDATE de_kl_part SET b = 'uno';

-- without pins nothing is refused; the flag follows every write to the
-- pins, within the transaction and after it.  The plugin decodes what was
-- done meanwhile and warns once per table per stream, even when the table
-- changes in between (its cached relation is rebuilt).
SELECT 'init' FROM pg_create_logical_replication_slot('de_keyless', 'data_embassy');
CREATE TEMP TABLE de_kl_saved AS SELECT * FROM data_embassy.embassy_pins;
BEGIN;
DELETE FROM data_embassy.embassy_pins;
UPDATE de_kl_nopk SET b = 'free' WHERE a = 1;
ROLLBACK;
UPDATE de_kl_nopk SET b = 'free' WHERE a = 1;
DELETE FROM data_embassy.embassy_pins;
UPDATE de_kl_nopk SET b = 'free' WHERE a = 1;
UPDATE de_kl_nopk SET b = 'free again' WHERE a = 1;
ALTER TABLE de_kl_nopk ADD COLUMN c integer;
UPDATE de_kl_nopk SET c = 1;
DELETE FROM de_kl_nopk WHERE a = 3;
DELETE FROM de_kl_nopk WHERE a = 1;
INSERT INTO data_embassy.embassy_pins SELECT * FROM de_kl_saved;
UPDATE de_kl_nopk SET b = 'refused again';
SELECT rec, relation FROM de_records(de_frames('de_keyless'))
WHERE rec IN ('UPDATE', 'DELETE');
SELECT pg_drop_replication_slot('de_keyless');

-- add_embassy() names the tables (count, then the first five)
SELECT data_embassy.add_embassy('kl-embassy', (repeat('3d', 32) || repeat('ed', 32)));
SELECT data_embassy.drop_embassy('kl-embassy');
DROP TABLE de_kl_nothing, de_kl_idx, de_kl_deferred, de_kl_child,
	de_kl_uniq, de_kl_upart;
SELECT data_embassy.add_embassy('kl-embassy', (repeat('3d', 32) || repeat('ed', 32)));
SELECT data_embassy.drop_embassy('kl-embassy');
DROP TABLE de_kl_nopk;
SELECT data_embassy.add_embassy('kl-embassy', (repeat('3d', 32) || repeat('ed', 32)));
SELECT data_embassy.drop_embassy('kl-embassy');

-- automatic REPLICA IDENTITY FULL: off by default
CREATE TABLE de_kl_auto0 (a integer);
SELECT relreplident FROM pg_class WHERE oid = 'de_kl_auto0'::regclass;
SELECT data_embassy.set_keyless_identity_full(true);
SELECT evtenabled FROM pg_event_trigger
WHERE evtname = 'data_embassy_keyless_identity_full';
CREATE TABLE de_kl_auto1 (a integer);
CREATE TABLE de_kl_auto2 (a integer PRIMARY KEY);
CREATE TABLE "De KL ""auto"" 3" AS SELECT 1 AS a;
CREATE TEMP TABLE de_kl_auto4 (a integer);
CREATE UNLOGGED TABLE de_kl_auto5 (a integer);
CREATE TABLE de_kl_auto6 (a integer) PARTITION BY LIST (a);
CREATE TABLE de_kl_auto7 PARTITION OF de_kl_auto6 FOR VALUES IN (1);
CREATE TABLE de_kl_auto8 (a integer);
ALTER TABLE de_kl_auto8 REPLICA IDENTITY NOTHING;
-- losing the primary key
ALTER TABLE de_kl_auto2 DROP CONSTRAINT de_kl_auto2_pkey;
-- ALTER TABLE on a table made before: it is caught too
ALTER TABLE de_kl_auto0 ADD COLUMN b text;
SELECT c.relname, c.relreplident FROM pg_class c
WHERE c.relname LIKE 'de_kl_auto%' OR c.relname LIKE 'De KL%'
ORDER BY c.relname;
UPDATE de_kl_auto1 SET a = 2;
-- the SQL it runs is qualified: a hostile search_path changes nothing
CREATE SCHEMA de_kl_evil;
CREATE FUNCTION de_kl_evil.evil_eq(oid, oid) RETURNS boolean
	LANGUAGE sql AS $$ SELECT 1/0 = 1 $$;
CREATE OPERATOR de_kl_evil.= (LEFTARG = oid, RIGHTARG = oid,
							  FUNCTION = de_kl_evil.evil_eq);
SET search_path = de_kl_evil, pg_catalog, public;
SELECT 1::oid = 1::oid;
CREATE TABLE public.de_kl_auto9 (a integer);
RESET search_path;
SELECT relreplident FROM pg_class WHERE oid = 'de_kl_auto9'::regclass;
DROP SCHEMA de_kl_evil CASCADE;

-- administrators only
CREATE ROLE regress_de_kl_plain;
CREATE ROLE regress_de_kl_admin IN ROLE data_embassy_admin;
SET ROLE regress_de_kl_plain;
SELECT data_embassy.set_keyless_identity_full(false);
SET ROLE regress_de_kl_admin;
SELECT data_embassy.set_keyless_identity_full(NULL);
SELECT data_embassy.set_keyless_identity_full(false);
RESET ROLE;
SELECT evtenabled FROM pg_event_trigger
WHERE evtname = 'data_embassy_keyless_identity_full';
CREATE TABLE de_kl_auto10 (a integer);
SELECT relreplident FROM pg_class WHERE oid = 'de_kl_auto10'::regclass;

-- the view: pg_monitor and administrators read it, others do not
CREATE ROLE regress_de_kl_monitor IN ROLE pg_monitor;
SET ROLE regress_de_kl_plain;
SELECT count(*) FROM data_embassy.keyless_tables;
SET ROLE regress_de_kl_monitor;
SELECT * FROM data_embassy.keyless_tables ORDER BY schema, "table";
SET ROLE regress_de_kl_admin;
SELECT count(*) FROM data_embassy.keyless_tables;
RESET ROLE;

-- the event trigger function is for the event trigger manager only
SELECT data_embassy.keyless_identity_full();

DROP ROLE regress_de_kl_plain, regress_de_kl_admin, regress_de_kl_monitor;
DROP TABLE de_kl_pk, de_kl_full, de_kl_temp, de_kl_unlogged, de_kl_parent,
	de_kl_part, de_kl_auto0, de_kl_auto1, de_kl_auto2, "De KL ""auto"" 3",
	de_kl_auto4, de_kl_auto5, de_kl_auto6, de_kl_auto8, de_kl_auto9,
	de_kl_auto10;
DROP FUNCTION de_kl_touch();
SELECT * FROM data_embassy.keyless_tables;
