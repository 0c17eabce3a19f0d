# Copyright (c) data_embassy developers

# The replicated set: every table the initial copy describes is guarded
# from the copy's commit on, empty ones included; a table that exists only
# at the embassy, with rows, is not taken over by a table of the same name
# that someone creates later at the register; and a replica does not
# silently follow a register table that was dropped and created again
# under its name (only a new copy moves it).  Without copy_data, the DBA
# vouches for the tables at the embassy: one with rows is adopted.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy',
	extra_conf => "data_embassy.retry_interval = 200ms\n");

my $ddl = q{
	CREATE TABLE full_one (id integer PRIMARY KEY, v text);
	CREATE TABLE empty_one (id integer PRIMARY KEY, v text);
};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
$reg->safe_psql('postgres', "INSERT INTO full_one SELECT g, 'x' FROM generate_series(1, 100) g");
# a table only the embassy has, with its own rows
$emb->safe_psql('postgres', q{
	CREATE TABLE only_here (id integer PRIMARY KEY, v text);
	INSERT INTO only_here VALUES (1, 'embassy data');
});

DataEmbassy::link_sites($reg, $emb, 'r');
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming after the copy');

# --- an empty table is a guarded replica from the copy on ---
is($emb->psql('postgres', "INSERT INTO empty_one VALUES (1, 'local')"), 3,
	'a table that was empty at the copy is guarded at once');
is($emb->safe_psql('postgres',
		"SELECT count(*) FROM data_embassy.replicated_relations WHERE relid = 'empty_one'::regclass"),
	'1', 'and recorded in replicated_relations');

# --- a register user creates a table of the embassy-only table's name ---
$reg->safe_psql('postgres', q{
	CREATE TABLE only_here (id integer PRIMARY KEY, v text);
	INSERT INTO only_here VALUES (1, 'from home'), (2, 'from home');
});
ok(DataEmbassy::wait_state($emb, 'r', 'error'), 'refused');
like(DataEmbassy::lag_row($emb, 'r')->{last_error},
	qr/table "public.only_here" has rows but is not a replica of register "r"/,
	'last_error says the table here is not a replica');
is($emb->safe_psql('postgres', "SELECT string_agg(v, ',') FROM only_here"),
	'embassy data', "the embassy's own rows are intact");
# the DBA keeps the local table under another name and lets the register's
# table in
$emb->safe_psql('postgres', q{
	ALTER TABLE only_here RENAME TO kept_here;
	CREATE TABLE only_here (id integer PRIMARY KEY, v text);
});
$emb->safe_psql('postgres', "SELECT data_embassy.retry_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming again');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
is($emb->safe_psql('postgres', "SELECT count(*) FROM only_here"), '2',
	"the register's rows arrived in the new table");
is($emb->safe_psql('postgres', "SELECT v FROM kept_here"), 'embassy data',
	'the kept table is untouched');

# --- a register table dropped and created again under its name ---
$reg->safe_psql('postgres', q{
	DROP TABLE full_one;
	CREATE TABLE full_one (id integer PRIMARY KEY, v text);
	INSERT INTO full_one VALUES (1, 'new table');
});
ok(DataEmbassy::wait_state($emb, 'r', 'error'), 'refused');
like(DataEmbassy::lag_row($emb, 'r')->{last_error},
	qr/table "public.full_one" replicates another table of register "r"/,
	'last_error says the register table is another one');
is($emb->safe_psql('postgres', "SELECT count(*) FROM full_one"), '100',
	'the replica is as it was');
$emb->safe_psql('postgres', "SELECT data_embassy.resync_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'a new copy follows the new table');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
is($emb->safe_psql('postgres', "SELECT string_agg(v, ',') FROM full_one"), 'new table',
	'the replica now holds the new table');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# --- without copy_data the DBA vouches for the tables at the embassy ---
# (a register database whose rows the embassy already holds, as after a
# key rotation of the register): a table with rows is adopted at its first
# change.
foreach my $node ($reg, $emb)
{
	$node->safe_psql('postgres', 'CREATE DATABASE seeded');
	$node->safe_psql('seeded', q{
		CREATE EXTENSION data_embassy;
		CREATE TABLE s (id integer PRIMARY KEY, v text);
		INSERT INTO s SELECT g, 'seed' FROM generate_series(1, 10) g;
	});
}
DataEmbassy::link_sites($reg, $emb, 'seeded', copy_data => 0,
	register_db => 'seeded', embassy_db => 'seeded', embassy_name => 'emb_seeded');
ok(DataEmbassy::wait_state($emb, 'seeded', 'streaming', 'seeded'),
	'copy_data => false: streaming');
$reg->safe_psql('seeded', "UPDATE s SET v = 'changed' WHERE id = 3");
DataEmbassy::wait_caught_up($reg, $emb, 'seeded', register_db => 'seeded',
	embassy_db => 'seeded');
is($emb->safe_psql('seeded', "SELECT v FROM s WHERE id = 3"), 'changed',
	'copy_data => false: the table with rows was adopted');
DataEmbassy::compare_tables($reg, $emb, 'seeded');

$emb->stop;
$reg->stop;
done_testing();
