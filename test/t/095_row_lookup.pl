
# Finding the rows of UPDATEs and DELETEs (lookup.c): through a primary key,
# a replica identity index on other columns, a composite key, a key that
# changes, REPLICA IDENTITY FULL with and without an index, a partitioned
# table; rows written and changed again in the same transaction; and a row
# that a session at the embassy holds locked, which the worker waits for.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = q{
	CREATE TABLE pk (id int PRIMARY KEY, v text);
	CREATE TABLE ri (a int NOT NULL, b text NOT NULL, v text);
	CREATE UNIQUE INDEX ri_ab ON ri (b, a);
	ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_ab;
	CREATE TABLE comp (x int, y text COLLATE "C", v int, PRIMARY KEY (y, x));
	CREATE TABLE fullpk (id int PRIMARY KEY, v text);
	ALTER TABLE fullpk REPLICA IDENTITY FULL;
	CREATE TABLE fullnokey (a int, b text);
	ALTER TABLE fullnokey REPLICA IDENTITY FULL;
	CREATE TABLE part (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
	CREATE TABLE part_lo PARTITION OF part FOR VALUES FROM (0) TO (500);
	CREATE TABLE part_hi PARTITION OF part FOR VALUES FROM (500) TO (2000)};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);

$reg->safe_psql('postgres', q{
	INSERT INTO pk SELECT g, 'v' || g FROM generate_series(1, 1000) g;
	INSERT INTO ri SELECT g, 'b' || (g % 7), 'v' FROM generate_series(1, 1000) g;
	INSERT INTO comp SELECT g, 'y' || (g % 3), g FROM generate_series(1, 1000) g;
	INSERT INTO fullpk SELECT g, 'v' || g FROM generate_series(1, 300) g;
	INSERT INTO fullnokey SELECT g, 'b' || g FROM generate_series(1, 100) g;
	INSERT INTO part SELECT g, 'v' || g FROM generate_series(0, 999) g});
DataEmbassy::link_sites($reg, $emb, 'reg');
ok(DataEmbassy::wait_state($emb, 'reg', 'streaming'), 'streaming');

$reg->safe_psql('postgres', q{
	UPDATE pk SET v = 'u' WHERE id % 3 = 0;
	UPDATE pk SET id = id + 5000 WHERE id % 10 = 1;
	DELETE FROM pk WHERE id % 7 = 0;
	UPDATE ri SET v = 'changed' WHERE a % 2 = 0;
	UPDATE ri SET b = 'moved' WHERE a % 5 = 0;
	DELETE FROM ri WHERE a % 11 = 0;
	UPDATE comp SET v = -v WHERE x % 4 = 0;
	UPDATE comp SET y = 'z' || y WHERE x % 9 = 0;
	DELETE FROM comp WHERE x % 13 = 0;
	UPDATE fullpk SET v = NULL WHERE id % 2 = 0;
	DELETE FROM fullpk WHERE id % 5 = 0;
	UPDATE fullnokey SET b = 'x' WHERE a % 3 = 0;
	DELETE FROM fullnokey WHERE a % 4 = 0;
	UPDATE part SET v = 'moved' || id, id = id + 1000 WHERE id % 50 = 0 AND id < 500;
	DELETE FROM part WHERE id % 17 = 0;
	BEGIN;
	INSERT INTO pk SELECT g, 'new' FROM generate_series(10001, 10100) g;
	UPDATE pk SET v = 'again' WHERE id > 10000;
	UPDATE pk SET v = 'and again', id = id + 100 WHERE id > 10050;
	DELETE FROM pk WHERE id BETWEEN 10001 AND 10020;
	COMMIT});
DataEmbassy::wait_caught_up($reg, $emb, 'reg');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# A session at the embassy holds a row locked (reading is allowed): the
# worker waits for it, then applies.
my $locker = $emb->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('SELECT * FROM pk WHERE id = 2 FOR UPDATE');
$reg->safe_psql('postgres', q{
	UPDATE pk SET v = 'after the lock' WHERE id = 2;
	DELETE FROM pk WHERE id = 4});
ok( $emb->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_stat_activity
	WHERE backend_type = 'data_embassy apply worker' AND wait_event_type = 'Lock'}),
	'the worker waits for the locked row');
is($emb->safe_psql('postgres', 'SELECT v FROM pk WHERE id = 2'), 'v2',
	'not applied while locked');
$locker->query_safe('COMMIT');
$locker->quit;
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'applied once the lock is gone');
is($emb->safe_psql('postgres', 'SELECT v FROM pk WHERE id = 2'), 'after the lock',
	'the update arrived');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

$emb->stop;
$reg->stop;
done_testing();
