# Copyright (c) data_embassy developers

# The replicated set: every table the initial copy describes is guarded
# from the copy's commit on, empty ones included; a table that exists only
# at the embassy, empty or with rows, is not taken over by a table of the
# same name that someone creates later at the register: the worker stops
# until the DBA declares the table (add_replicated_table) or renames it;
# and a replica does not silently follow a register table that was dropped
# and created again under its name (only a new copy moves it).  Without
# copy_data the first connection still takes a sealed copy, of the tables'
# descriptions only: every table is guarded from its commit, before any
# change arrives, and the DBA vouches for the rows at the embassy, which
# are kept.
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
# tables only the embassy has: one with its own rows, one empty
$emb->safe_psql('postgres', q{
	CREATE TABLE only_here (id integer PRIMARY KEY, v text);
	INSERT INTO only_here VALUES (1, 'embassy data');
	CREATE TABLE spare (id integer PRIMARY KEY, v text);
});

DataEmbassy::link_sites($reg, $emb, 'r');
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming after the copy');

# --- an empty table is a guarded replica from the copy on ---
is($emb->psql('postgres', "INSERT INTO empty_one VALUES (1, 'local')"), 3,
	'a table that was empty at the copy is guarded at once');
is($emb->safe_psql('postgres',
		"SELECT count(*) FROM data_embassy.replicated_relations WHERE relid = 'empty_one'::regclass"),
	'1', 'and recorded in replicated_relations');

# --- a register user creates a table of an empty embassy-only table's name ---
$reg->safe_psql('postgres', q{
	CREATE TABLE spare (id integer PRIMARY KEY, v text);
	INSERT INTO spare VALUES (1, 'from home');
});
ok(DataEmbassy::wait_state($emb, 'r', 'error'), 'a new register table: refused');
my $err = DataEmbassy::lag_row($emb, 'r')->{last_error};
like($err,
	qr/table "public.spare" is not declared as a replica of register "r"/,
	'last_error names the table and the register');
is($emb->safe_psql('postgres', "SELECT count(*) FROM spare"), '0',
	'the empty embassy-only table was not taken over');
is($emb->safe_psql('postgres',
		"SELECT count(*) FROM data_embassy.replicated_relations WHERE relid = 'spare'::regclass"),
	'0', 'nor recorded as a replica');
is($emb->psql('postgres', "INSERT INTO spare VALUES (7, 'local'); DELETE FROM spare"), 0,
	'it is still the embassy\'s own table, writable here');
# the hint in the log says what to do; the DBA declares the table, which is
# guarded at once
ok( $emb->log_contains(
		quotemeta(q{HINT:  If the register's table should be replicated into this one, run SELECT data_embassy.add_replicated_table('r', 'public.spare'); then data_embassy.retry_register('r')})),
	'the hint names the fix');
$emb->safe_psql('postgres',
	"SELECT data_embassy.add_replicated_table('r', 'public.spare')");
is($emb->psql('postgres', "INSERT INTO spare VALUES (8, 'local')"), 3,
	'a declared table is guarded at once');
$emb->safe_psql('postgres', "SELECT data_embassy.retry_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'declared: streaming again');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
is($emb->safe_psql('postgres', "SELECT string_agg(v, ',') FROM spare"),
	'from home', "the register's rows arrived in the declared table");
is($emb->safe_psql('postgres',
		"SELECT remote_relid = 0 OR remote_relid IS NULL FROM data_embassy.replicated_relations WHERE relid = 'spare'::regclass"),
	'f', "and it is bound to the register's table");

# --- a register user creates a table of the name of one with rows here ---
$reg->safe_psql('postgres', q{
	CREATE TABLE only_here (id integer PRIMARY KEY, v text);
	INSERT INTO only_here VALUES (1, 'from home'), (2, 'from home');
});
ok(DataEmbassy::wait_state($emb, 'r', 'error'), 'refused');
like(DataEmbassy::lag_row($emb, 'r')->{last_error},
	qr/table "public.only_here" is not declared as a replica of register "r"/,
	'last_error says the table here is not declared');
is($emb->safe_psql('postgres', "SELECT string_agg(v, ',') FROM only_here"),
	'embassy data', "the embassy's own rows are intact");
# the DBA keeps the local table under another name and lets the register's
# table in: a new table of the name is not enough, it must be declared
$emb->safe_psql('postgres', q{
	ALTER TABLE only_here RENAME TO kept_here;
	CREATE TABLE only_here (id integer PRIMARY KEY, v text);
});
my $logpos = -s $emb->logfile;
$emb->safe_psql('postgres', "SELECT data_embassy.retry_register('r')");
$emb->wait_for_log(qr/table "public.only_here" is not declared as a replica of register "r"/,
	$logpos);
pass('a new empty table of the name is not taken over either');
is($emb->safe_psql('postgres', "SELECT count(*) FROM only_here"), '0',
	'it stays empty');
$emb->safe_psql('postgres',
	"SELECT data_embassy.add_replicated_table('r', 'only_here')");
$emb->safe_psql('postgres', "SELECT data_embassy.retry_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming again');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
is($emb->safe_psql('postgres', "SELECT count(*) FROM only_here"), '2',
	"the register's rows arrived in the declared table");
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
# key rotation of the register): the first connection takes a sealed copy
# of the tables' descriptions only; every table, with rows or empty, is a
# guarded replica from its commit on, before any change arrives, and keeps
# its rows.
foreach my $node ($reg, $emb)
{
	$node->safe_psql('postgres', 'CREATE DATABASE seeded');
	$node->safe_psql('seeded', q{
		CREATE EXTENSION data_embassy;
		CREATE TABLE s (id integer PRIMARY KEY, v text);
		INSERT INTO s SELECT g, 'seed' FROM generate_series(1, 10) g;
		CREATE TABLE quiet (id integer PRIMARY KEY, v text);
	});
}
DataEmbassy::link_sites($reg, $emb, 'seeded', copy_data => 0,
	register_db => 'seeded', embassy_db => 'seeded', embassy_name => 'emb_seeded');
ok(DataEmbassy::wait_state($emb, 'seeded', 'streaming', 'seeded'),
	'copy_data => false: streaming');
is($emb->safe_psql('seeded',
		"SELECT count(*) FROM data_embassy.replicated_relations"),
	'2', 'copy_data => false: both tables recorded at the first connection');
is($emb->psql('seeded', "INSERT INTO s VALUES (100, 'local')"), 3,
	'copy_data => false: a table with rows is guarded before any change arrived');
is($emb->psql('seeded', "INSERT INTO quiet VALUES (1, 'local')"), 3,
	'copy_data => false: an empty table too');
is($emb->psql('seeded', "UPDATE s SET v = 'local' WHERE id = 1"), 3,
	'copy_data => false: and updates are refused');
is($emb->safe_psql('seeded', "SELECT count(*) FROM s WHERE v = 'seed'"), '10',
	'copy_data => false: the rows at the embassy are kept');
is($emb->safe_psql('seeded', "SELECT copy_data FROM data_embassy.registers"), 'f',
	'copy_data => false: the register row says so');
$reg->safe_psql('seeded', "UPDATE s SET v = 'changed' WHERE id = 3");
DataEmbassy::wait_caught_up($reg, $emb, 'seeded', register_db => 'seeded',
	embassy_db => 'seeded');
is($emb->safe_psql('seeded', "SELECT v FROM s WHERE id = 3"), 'changed',
	'copy_data => false: the table with rows was adopted');
DataEmbassy::compare_tables($reg, $emb, 'seeded');

$emb->stop;
$reg->stop;
done_testing();
