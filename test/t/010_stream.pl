
# Copyright (c) data_embassy developers

# Initial copy, then streaming of every kind of change over a wide set of
# types, tables with and without keys, and TOAST values changed and
# unchanged; at the end every table is identical on both sites.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

my $schema = DataEmbassy::schema_sql();
$reg->safe_psql('postgres', $schema);
$emb->safe_psql('postgres', $schema);

# Rows that exist before the embassy connects travel by the initial copy.
$reg->safe_psql('postgres', DataEmbassy::typed_rows_sql(1, 2000));
$reg->safe_psql('postgres', q{
	INSERT INTO people
	SELECT g, 'EE' || lpad(g::text, 11, '0'), 'Person ' || g,
		   '1950-01-01'::date + g % 20000, g * 1.25, now()
	FROM generate_series(1, 5000) g;
	INSERT INTO nokey SELECT g % 100, 'n' || g, g FROM generate_series(1, 300) g;
	INSERT INTO docs SELECT g, repeat('doc' || g || ' ', 30000), 'x' FROM generate_series(1, 5) g;
});

DataEmbassy::link_sites($reg, $emb, 'population', copy_data => 1);
DataEmbassy::wait_caught_up($reg, $emb, 'population', msg => 'initial copy done');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

is(DataEmbassy::lag_row($emb, 'population')->{state}, 'streaming',
	'state is streaming after the copy');

# Streaming: every kind of change.
$reg->safe_psql('postgres', DataEmbassy::typed_rows_sql(2001, 4000));
$reg->safe_psql('postgres', q{
	UPDATE typed SET t = t || ' changed', m = 'happy' WHERE id % 3 = 0;
	UPDATE typed SET id = id + 100000 WHERE id % 17 = 0;      -- key changes
	DELETE FROM typed WHERE id % 13 = 0;
	UPDATE people SET balance = balance + 1, name = upper(name) WHERE id % 2 = 0;
	UPDATE people SET id = -id WHERE id % 101 = 0;
	DELETE FROM people WHERE id % 7 = 0;
	UPDATE nokey SET b = b || '!' WHERE a % 3 = 0;
	DELETE FROM nokey WHERE a % 5 = 0;
	INSERT INTO nokey VALUES (NULL, NULL, NULL), (1, NULL, 'NaN');
	-- TOAST: unchanged (only another column changes), then changed
	UPDATE docs SET extra = 'y' WHERE id <= 3;
	UPDATE docs SET body = repeat('new' || id || ' ', 40000) WHERE id = 4;
	DELETE FROM docs WHERE id = 5;
});
DataEmbassy::wait_caught_up($reg, $emb, 'population');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# Several statements in one transaction, a subtransaction rolled back, and
# a rolled-back transaction that must leave no trace.
$reg->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO people VALUES (900001, 'X1', 'in txn', NULL, 1, now());
	SAVEPOINT s;
	INSERT INTO people VALUES (900002, 'X2', 'rolled back', NULL, 1, now());
	ROLLBACK TO s;
	UPDATE people SET name = 'after savepoint' WHERE id = 900001;
	COMMIT;
	BEGIN;
	INSERT INTO people VALUES (900003, 'X3', 'never', NULL, 1, now());
	ROLLBACK;
});

# TRUNCATE, with RESTART IDENTITY and CASCADE, on tables made while
# streaming (the embassy gets them first, declared for the register: a
# table the copy did not describe is applied only into a declared one).
my $ddl2 = q{
	CREATE TABLE parent (id serial PRIMARY KEY, v text);
	CREATE TABLE child (id integer PRIMARY KEY, parent_id integer REFERENCES parent);
};
$emb->safe_psql('postgres', $ddl2 . q{
	SELECT data_embassy.add_replicated_table('population', 'parent');
	SELECT data_embassy.add_replicated_table('population', 'child');
});
$reg->safe_psql('postgres', $ddl2 . q{
	INSERT INTO parent (v) SELECT 'p' || g FROM generate_series(1, 10) g;
	INSERT INTO child SELECT g, g FROM generate_series(1, 10) g;
});
DataEmbassy::wait_caught_up($reg, $emb, 'population');
$reg->safe_psql('postgres', q{
	TRUNCATE nokey;
	TRUNCATE parent RESTART IDENTITY CASCADE;
	INSERT INTO parent (v) VALUES ('after truncate');
});
DataEmbassy::wait_caught_up($reg, $emb, 'population');
my $rows = DataEmbassy::compare_tables($reg, $emb, 'postgres');
note("compared $rows rows");

# Idle: lag_bytes = 0 and state streaming.
DataEmbassy::wait_caught_up($reg, $emb, 'population');
ok($emb->poll_query_until('postgres',
		q{SELECT lag_bytes = 0 AND state = 'streaming' AND lag_time = '0'
		  FROM data_embassy.lag WHERE register = 'population'}),
	'idle register shows lag_bytes = 0');
my $lag = DataEmbassy::lag_row($emb, 'population');
ok($lag->{frames_applied} > 0 && $lag->{rows_applied} > 0,
	"counters move: $lag->{frames_applied} frames, $lag->{rows_applied} rows");
is($lag->{last_error}, '', 'no error recorded');

# Writes of the embassy's apply worker do not loop back.
is($emb->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'),
	'0', 'the embassy has no slot of its own');

$emb->stop;
$reg->stop;
done_testing();
