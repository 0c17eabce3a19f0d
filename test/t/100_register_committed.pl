
# Copyright (c) data_embassy developers

# The embassy applies what the register committed, shaped like PostgreSQL's
# own regression database: rows that a CHECK constraint at the embassy
# would refuse (a NOT VALID constraint's older rows, a constraint only the
# embassy has), in the initial copy and in the stream, through the
# multi-insert and the single-row paths; REPLICA IDENTITY FULL tables whose
# columns have no equality operator (point, box, polygon, circle, line,
# lseg, path, xml, arrays of points) receiving UPDATEs and DELETEs; a
# primary key that contains a stored generated column; generated columns
# that come out differently when computed here (tableoid, an expression
# that differs).  After each step the tables are identical and the worker
# is streaming without error.  NOT NULL is still enforced, with a message
# that names the register's table, the row and the column.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

# Tables the same on both sites.
my $common = q{
	CREATE TABLE geo (id int, p point, b box, poly polygon, c circle,
		l line, s lseg, pa path, x xml, pts point[], note text);
	ALTER TABLE geo REPLICA IDENTITY FULL;
	CREATE TABLE gpk (a int, b int GENERATED ALWAYS AS (a * 2) STORED,
		v text, PRIMARY KEY (a, b));
	CREATE TABLE gtab (id int PRIMARY KEY,
		t int GENERATED ALWAYS AS (tableoid::int) STORED, v text);
	CREATE TABLE nn (k text PRIMARY KEY, v text);
};

# The register's CHECK constraints come after rows that break them
# (NOT VALID); the embassy has them valid, and one more of its own.
$reg->safe_psql('postgres', $common . q{
	CREATE TABLE chk (id int PRIMARY KEY, v int);
	CREATE TABLE chk1 (id int PRIMARY KEY, v int);
	INSERT INTO chk VALUES (1, -5), (2, 10);
	INSERT INTO chk1 VALUES (1, -5), (2, 10);
	ALTER TABLE chk ADD CONSTRAINT chk_pos CHECK (v > 0) NOT VALID;
	ALTER TABLE chk1 ADD CONSTRAINT chk1_pos CHECK (v > 0) NOT VALID;
	CREATE TABLE gexpr (id int PRIMARY KEY,
		g text GENERATED ALWAYS AS (upper(v)) STORED, v text);
});
$emb->safe_psql('postgres', q{
	-- table OIDs at the embassy differ from the register's
	CREATE TABLE filler1 (a int); CREATE TABLE filler2 (a int);
	DROP TABLE filler1, filler2;
} . $common . q{
	CREATE TABLE chk (id int PRIMARY KEY,
		v int CONSTRAINT chk_pos CHECK (v > 0)
			  CONSTRAINT embassy_strict CHECK (v < 1000));
	CREATE TABLE chk1 (id int PRIMARY KEY,
		v int CONSTRAINT chk1_pos CHECK (v > 0)
			  CONSTRAINT embassy_strict1 CHECK (v < 1000));
	-- a row trigger that fires in the apply worker: one row at a time
	CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql
		AS $$BEGIN RETURN NULL; END$$;
	CREATE TRIGGER chk1_noop AFTER INSERT OR UPDATE ON chk1
		FOR EACH ROW EXECUTE FUNCTION noop();
	ALTER TABLE chk1 ENABLE ALWAYS TRIGGER chk1_noop;
	CREATE TABLE gexpr (id int PRIMARY KEY,
		g text GENERATED ALWAYS AS (lower(v)) STORED, v text);
});

# Rows for the initial copy.
$reg->safe_psql('postgres', q{
	INSERT INTO geo
	SELECT g, point(g, -g), box(point(g, g), point(0, 0)),
		polygon(box(point(g, 0), point(0, g))), circle(point(g, 1), g),
		line(point(0, 0), point(1, g)), lseg(point(0, g), point(g, 0)),
		path(polygon(box(point(g, 0), point(0, g)))),
		xmlelement(name r, xmlattributes(g AS n), 'v' || g),
		ARRAY[point(g, g), point(-g, 0)], 'copy'
	FROM generate_series(1, 40) g;
	INSERT INTO geo (id, note) VALUES (0, 'all null');
	INSERT INTO gpk (a, v) SELECT g, 'v' || g FROM generate_series(1, 50) g;
	INSERT INTO gtab (id, v) SELECT g, 'v' || g FROM generate_series(1, 20) g;
	INSERT INTO gexpr (id, v) SELECT g, 'Mixed' || g FROM generate_series(1, 20) g;
});

# Is the worker streaming, with no error?
sub check_streaming
{
	my ($what) = @_;
	my $row = DataEmbassy::lag_row($emb, 'r');
	is($row->{state}, 'streaming', "$what: streaming");
	is($row->{last_error}, '', "$what: no last_error");
	return;
}

DataEmbassy::link_sites($reg, $emb, 'r', copy_data => 1);
DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => 'initial copy done');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
check_streaming('after the initial copy');
is($emb->safe_psql('postgres', 'SELECT v FROM chk WHERE id = 1'), '-5',
	'a row older than a NOT VALID constraint arrived by the copy');

# The stream: rows only the embassy's CHECK constraints refuse, several in
# one transaction (multi-insert) and in the table that takes one row at a
# time, inserted and updated.
$reg->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO chk VALUES (3, 5000), (4, 7), (5, 1000);
	INSERT INTO chk1 VALUES (3, 5000), (4, 7), (5, 1000);
	UPDATE chk SET v = 2000 WHERE id = 2;
	UPDATE chk1 SET v = 2000 WHERE id = 2;
	COMMIT;
	INSERT INTO chk VALUES (6, 99999);
	INSERT INTO chk1 VALUES (6, 99999);
});
DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => 'CHECK exceptions streamed');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
check_streaming('after rows the embassy CHECK constraints refuse');

# REPLICA IDENTITY FULL over types without equality: updates and deletes,
# including rows with NULLs and rows that are duplicates of each other.
$reg->safe_psql('postgres', q{
	INSERT INTO geo SELECT * FROM geo WHERE id IN (1, 2);
	UPDATE geo SET note = 'updated ' || id WHERE id % 3 = 0;
	UPDATE geo SET p = point(id * 10, 0.5), poly = NULL WHERE id % 5 = 0;
	UPDATE geo SET x = '<changed/>', pts = ARRAY[point(0, 0)] WHERE id % 7 = 0;
	UPDATE geo SET note = 'was null' WHERE id = 0;
	DELETE FROM geo WHERE id % 4 = 0;
	DELETE FROM geo WHERE id = 0;
	DELETE FROM geo WHERE ctid = (SELECT min(ctid) FROM geo WHERE id = 1);
	UPDATE geo SET note = 'one of two' WHERE ctid = (SELECT min(ctid) FROM geo WHERE id = 2);
});
DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => 'FULL identity changes applied');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
check_streaming('after FULL identity updates and deletes');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM geo WHERE id = 1'), '1',
	'one of two identical rows deleted');

# A primary key with a stored generated column: updates of other columns
# and of the key.  Generated values the embassy would compute differently.
$reg->safe_psql('postgres', q{
	UPDATE gpk SET v = 'u' || a WHERE a % 2 = 0;
	UPDATE gpk SET a = a + 1000 WHERE a % 5 = 0;
	DELETE FROM gpk WHERE a % 7 = 0;
	INSERT INTO gpk (a, v) VALUES (5000, 'new');
	UPDATE gtab SET v = 'u' WHERE id % 2 = 0;
	UPDATE gtab SET id = id + 100 WHERE id % 3 = 0;
	INSERT INTO gtab (id, v) VALUES (500, 'streamed');
	UPDATE gexpr SET v = 'Changed' || id WHERE id % 2 = 0;
	INSERT INTO gexpr (id, v) VALUES (500, 'Streamed');
});
DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => 'generated columns streamed');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
check_streaming('after changes to tables with generated columns');
my $reg_oid = $reg->safe_psql('postgres', q{SELECT 'gtab'::regclass::int});
my $emb_oid = $emb->safe_psql('postgres', q{SELECT 'gtab'::regclass::int});
isnt($emb_oid, $reg_oid, 'the table has another OID at the embassy');
is( $emb->safe_psql('postgres',
		"SELECT count(*) FROM gtab WHERE t = $reg_oid"),
	$reg->safe_psql('postgres', 'SELECT count(*) FROM gtab'),
	'tableoid-based values are the register\'s');
is($emb->safe_psql('postgres', 'SELECT g FROM gexpr WHERE id = 500'),
	'STREAMED', 'a generated value is the register\'s, not recomputed');

# NOT NULL is enforced: a NULL the embassy cannot store stops the worker
# with a message naming the column, the register's table and the row, its
# key cut at 64 bytes.
$emb->safe_psql('postgres', 'ALTER TABLE nn ALTER v SET NOT NULL');
my $logpos = -s $emb->logfile;
my $longkey = 'k' x 100;
$reg->safe_psql('postgres', qq{
	INSERT INTO nn VALUES ('short', 'x');
	INSERT INTO nn VALUES ('$longkey', NULL);
});
ok(DataEmbassy::wait_state($emb, 'r', 'error'), 'a NULL the embassy refuses: state error');
like(DataEmbassy::lag_row($emb, 'r')->{last_error},
	qr/null value in column "v" of relation "nn" violates not-null constraint/,
	'last_error names the column and the constraint');
my $log = '';
for (my $i = 0; $i < $PostgreSQL::Test::Utils::timeout_default * 10; $i++)
{
	$log = substr(slurp_file($emb->logfile), $logpos);
	last if $log =~ /processing \w+ record of register/;
	select(undef, undef, undef, 0.1);
}
my $cut = 'k' x 64;
like($log,
	qr/DETAIL:  Register "r" committed a null value in column "v" of its table "public\.nn", in the row \(k\)=\(${cut}\.\.\.\)\./,
	'the detail names the register, its table and the row key, cut');
like($log,
	qr/CONTEXT:  replication target relation "public\.nn", row \(k\)=\(${cut}\.\.\.\)\n\s*processing INSERT record of register "r" in transaction \d+, finished at [0-9A-F]+\/[0-9A-F]+, committed at \d{4}-/,
	'the context names the table, the row key and the register\'s transaction');
$emb->safe_psql('postgres', 'ALTER TABLE nn ALTER v DROP NOT NULL');
DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => 'caught up once the column is nullable');
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming again');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
check_streaming('at the end');

$emb->stop;
$reg->stop;
done_testing();
