# Copyright (c) data_embassy developers

# The register outlives its embassy: with the embassy away, a register
# with max_slot_wal_keep_size keeps working and lets the slot go.  The
# embassy, back, says clearly that the register no longer holds the WAL it
# needs, keeps its data as they were (readable, promotable), and
# resync_register() copies the register again, into emptied tables, back to
# streaming with every table identical.  A slot dropped on the register by
# hand is reported the same way, and such a replica can be promoted.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register',
	extra_conf => "max_slot_wal_keep_size = 1MB\nwal_keep_size = 0\n");
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = q{
	CREATE TABLE t (id integer PRIMARY KEY, v text);
	CREATE TABLE child (id integer PRIMARY KEY,
						t_id integer REFERENCES t (id) ON DELETE CASCADE);
	CREATE SEQUENCE s;
};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
$reg->safe_psql('postgres', q{
	INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 200) g;
	INSERT INTO child SELECT g, g FROM generate_series(1, 50) g;
	SELECT nextval('s') FROM generate_series(1, 10);
});
# The embassy database's owner sets a search_path with an "=" of its own;
# the workers' SQL must not pick it up.
$emb->safe_psql('postgres', q{
	CREATE SCHEMA evil;
	CREATE FUNCTION evil.texteq(text, text) RETURNS boolean
	LANGUAGE plpgsql AS $$
	BEGIN
		IF (SELECT backend_type FROM pg_catalog.pg_stat_activity
			WHERE pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid())
		   OPERATOR(pg_catalog.<>) 'client backend' THEN
			RAISE LOG 'hijacked as %', current_user;
		END IF;
		RETURN pg_catalog.texteq($1, $2);
	END $$;
	CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text,
							FUNCTION = evil.texteq);
	ALTER DATABASE postgres SET search_path = evil, public, pg_catalog;
});
DataEmbassy::link_sites($reg, $emb, 'r');
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming after the copy');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

my $slot = $emb->safe_psql('postgres',
	"SELECT slot_name FROM data_embassy.registers WHERE name = 'r'");

# Push the register's WAL past max_slot_wal_keep_size: a few segments, each
# with a change in it so that the switch is not a no-op.
sub write_segments
{
	my ($node, $n, $from) = @_;
	for my $i (1 .. $n)
	{
		my $id = $from + $i;
		$node->safe_psql('postgres',
			"INSERT INTO t VALUES ($id, 'while away'); SELECT pg_switch_wal();");
	}
	$node->safe_psql('postgres', 'CHECKPOINT');
}

# --- the embassy goes away for longer than the register keeps WAL for it ---
my $before = DataEmbassy::table_digest($emb, 'postgres', 't');
$emb->stop;
$reg->safe_psql('postgres', q{
	UPDATE t SET v = 'changed' WHERE id <= 20;
	DELETE FROM t WHERE id BETWEEN 190 AND 200;
});
write_segments($reg, 5, 1000);
ok( $reg->poll_query_until('postgres',
		"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '$slot'",
		'lost'),
	'the register let the slot go');
is($reg->safe_psql('postgres', "INSERT INTO t VALUES (5000, 'still working') RETURNING id"),
	'5000', 'the register keeps working');

$emb->start;
ok(DataEmbassy::wait_state($emb, 'r', 'error'), 'the embassy reports an error');
my $row = DataEmbassy::lag_row($emb, 'r');
like($row->{last_error}, qr/no longer holds the WAL this embassy needs; a re-copy is required/,
	"last_error says a re-copy is required: $row->{last_error}");
like(slurp_file($emb->logfile), qr/was invalidated/, 'the log says the slot was invalidated');
is(DataEmbassy::table_digest($emb, 'postgres', 't'), $before,
	'the replica keeps its data as they were');
is($emb->safe_psql('postgres',
		"SELECT can_promote FROM data_embassy.failover_status WHERE register = 'r'"),
	't', 'and can still be promoted');
is($emb->psql('postgres', "INSERT INTO t VALUES (-1, 'local')"), 3,
	'and is still guarded');

# --- a re-copy brings it back ---
$reg->safe_psql('postgres', "UPDATE t SET v = 'during resync' WHERE id = 21");
$emb->safe_psql('postgres', "SELECT data_embassy.resync_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming again after resync_register');
like(slurp_file($emb->logfile), qr/register "r": emptying \d+ tables for a new copy/,
	'the tables were emptied first');
$reg->safe_psql('postgres', "INSERT INTO t VALUES (6000, 'after resync')");
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is(DataEmbassy::lag_row($emb, 'r')->{last_error}, '', 'last_error cleared');
cmp_ok($emb->safe_psql('postgres', "SELECT last_value FROM s"), '>=', 10,
	'sequence carried over');

# Pause and resume, for the log.
$emb->safe_psql('postgres', "SELECT data_embassy.pause_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'paused'), 'paused');
$emb->safe_psql('postgres', "SELECT data_embassy.resume_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'resumed');

# --- a slot dropped on the register by hand ---
$slot = $emb->safe_psql('postgres',
	"SELECT slot_name FROM data_embassy.registers WHERE name = 'r'");
$before = DataEmbassy::table_digest($emb, 'postgres', 't');
$emb->stop;
$reg->safe_psql('postgres', "SELECT pg_drop_replication_slot('$slot')");
$reg->safe_psql('postgres', "INSERT INTO t VALUES (7000, 'lost for good')");
$emb->start;
ok(DataEmbassy::wait_state($emb, 'r', 'error'), 'a dropped slot is an error too');
$row = DataEmbassy::lag_row($emb, 'r');
like($row->{last_error}, qr/a re-copy is required/, 'with the same message');
like(slurp_file($emb->logfile), qr/does not exist on the register any more/,
	'naming what happened');

# Such a replica can be promoted with the data it has.
my $res = $emb->safe_psql('postgres',
	"SELECT register, applied_lsn IS NOT NULL FROM data_embassy.promote('r')");
is($res, 'r|t', 'promote() of a replica whose slot is gone');
is(DataEmbassy::table_digest($emb, 'postgres', 't'), $before,
	'the promoted data are what was replicated');
$emb->safe_psql('postgres', "INSERT INTO t VALUES (-1, 'written after promotion')");
pass('writable after promotion');

# What happened is in the embassy's log, one line per event, naming the
# register.
my $log = slurp_file($emb->logfile);
foreach my $event ('connected to the register \(system identifier',
	'initial copy started at register LSN',
	'caught up with the register at',
	'the worker stopped on an error; it will try again',
	'a new initial copy was requested by user',
	'paused', 'resumed')
{
	like($log, qr/register "r": $event/, "logged: $event");
}
like($log, qr/register "r" promoted at register LSN/, 'logged: the promotion');
unlike($log, qr/LOG:  hijacked as/,
	"no worker ran the database owner's operator");

$emb->stop;
$reg->stop;
done_testing();
