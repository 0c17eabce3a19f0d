
# Copyright (c) data_embassy developers

# The register outlives its embassy (register side).  With
# max_slot_wal_keep_size set, an embassy that stops streaming holds back at
# most that much WAL: the embassies view shows wal_status going from
# reserved to unreserved (or extended) to lost and safe_wal_size shrinking,
# the register keeps committing, and its WAL stays bounded.  Also: a
# pg_monitor role reads the view, sync_state shows a synchronous embassy,
# and dropping to asynchronous as the README says lets commits go on.
# Backends that load the library learn of a new pin at once (UPDATE of a
# keyless table refused from the next statement).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

# 1 MB segments so that a 2 MB limit spans whole segments; no automatic
# checkpoint during the test, so the states in between can be seen.
my $reg = DataEmbassy::register_node('register',
	init_extra => ['--wal-segsize=1'],
	extra_conf => q{
max_slot_wal_keep_size = 2MB
min_wal_size = 2MB
max_wal_size = 32MB
checkpoint_timeout = 1h
wal_keep_size = 0
session_preload_libraries = 'data_embassy'
});
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = q{
	CREATE TABLE filler (id bigint PRIMARY KEY, pad text);
	CREATE TABLE keyless (a integer, b text);
};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
$reg->safe_psql('postgres', q{
	INSERT INTO keyless VALUES (1, 'one');
	CREATE ROLE monitor LOGIN IN ROLE pg_monitor;
});

# A session that started before any pin may still update the keyless table;
# once an embassy is pinned, its next statement is refused.
my $session = $reg->background_psql('postgres', on_error_stop => 0);
my ($out, $failed) = $session->query(
	q{UPDATE keyless SET b = 'before the pin' RETURNING a});
is("$failed|$out", '0|1', 'without a pin, a keyless table may be updated');

# Synchronous: the embassy names itself by application_name.
my $conninfo = $reg->connstr('postgres') . ' application_name=embassy_a';
DataEmbassy::link_sites($reg, $emb, 'population', copy_data => 1,
	conninfo => $conninfo);

($out, $failed) = $session->query(
	q{UPDATE keyless SET b = 'after the pin' RETURNING a});
like($session->{stderr},
	qr/cannot update table "keyless" because it does not have a replica identity/,
	'a session that cached "no pin" sees the pin at its next statement');
$session->quit;

DataEmbassy::wait_caught_up($reg, $emb, 'population');
$reg->safe_psql('postgres', q{
	ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (embassy_a, embassy_b)';
	SELECT pg_reload_conf();
});
ok( $reg->poll_query_until('postgres',
		q{SELECT sync_state FROM data_embassy.embassies}, 'quorum'),
	'a synchronous embassy shows sync_state quorum');
# a commit waits for the embassy and returns
my ($ret) = $reg->psql('postgres',
	q{INSERT INTO filler VALUES (0, 'synchronous')},
	timeout => 60);
is($ret, 0, 'a commit is confirmed by the synchronous embassy');

# back to asynchronous before the embassy goes away (README: if the embassy
# is lost, ALTER SYSTEM and reload)
$reg->safe_psql('postgres', q{
	ALTER SYSTEM RESET synchronous_standby_names;
	SELECT pg_reload_conf();
});
ok( $reg->poll_query_until('postgres',
		q{SELECT sync_state FROM data_embassy.embassies}, 'async'),
	'after the reload the embassy is asynchronous');

# While streaming: reserved, and the pg_monitor role reads every column.
DataEmbassy::wait_caught_up($reg, $emb, 'population');
my $row = $reg->safe_psql('postgres',
	q{SELECT active, wal_status, safe_wal_size > 0,
			 safe_wal_size <= (2 + 1) * 1024 * 1024, sync_state
	  FROM data_embassy.embassies},
	connstr => $reg->connstr('postgres') . ' user=monitor');
is($row, 't|reserved|t|t|async',
	'streaming: reserved, safe_wal_size within the limit (read by pg_monitor)');

# The embassy goes away.
$emb->stop;
ok( $reg->poll_query_until('postgres',
		q{SELECT NOT active FROM data_embassy.embassies}),
	'the slot is inactive');

sub embassy_state
{
	my $r = $reg->safe_psql('postgres',
		q{SELECT coalesce(wal_status, ''), coalesce(safe_wal_size::text, ''),
				 coalesce(retained_wal_bytes::text, '')
		  FROM data_embassy.embassies});
	return split /\|/, $r, -1;
}

my $next_id = 1;

# about 256 kB of WAL per 1000 rows
sub write_chunk
{
	my ($rows) = @_;
	$rows //= 1000;
	my $first = $next_id;
	$next_id += $rows;
	$reg->safe_psql('postgres',
		"INSERT INTO filler SELECT g, repeat('x', 200)
		 FROM generate_series($first, $first + $rows - 1) g");
	return;
}

my ($status0, $safe0) = embassy_state();
is($status0, 'reserved', 'stopped embassy: still reserved');
write_chunk();
my ($status1, $safe1) = embassy_state();
cmp_ok($safe1, '<', $safe0,
	"safe_wal_size shrinks as the register writes ($safe0 -> $safe1)");

# Write until the slot's WAL is no longer reserved (bounded: 40 chunks,
# some 10 MB, far past the 2 MB limit).
my %seen = ($status0 => 1, $status1 => 1);
my ($status, $safe) = ($status1, $safe1);
for (my $i = 0; $i < 40 && $status eq 'reserved'; $i++)
{
	write_chunk();
	($status, $safe) = embassy_state();
	$seen{$status} = 1;
}
ok($status eq 'unreserved' || $status eq 'extended',
	"past the limit the slot's WAL is $status");
cmp_ok($safe, '<=', 0, "safe_wal_size is no longer positive ($safe)");

# A checkpoint removes the WAL: the slot is lost.
$reg->safe_psql('postgres', 'CHECKPOINT');
ok( $reg->poll_query_until('postgres',
		q{SELECT wal_status FROM data_embassy.embassies}, 'lost'),
	'after a checkpoint the slot is lost');
my ($status_lost, $safe_lost) = embassy_state();
is($safe_lost, '', 'a lost slot has no safe_wal_size');
note('states seen: ' . join(', ', sort keys %seen) . ', lost');

# The register goes on: many more commits, more WAL than max_wal_size,
# and pg_wal stays within max_wal_size.
my $before = $reg->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
for (my $i = 0; $i < 40; $i++)
{
	write_chunk(4000);
	$reg->safe_psql('postgres', 'CHECKPOINT') if $i % 10 == 9;
}
my $written = $reg->safe_psql('postgres',
	"SELECT pg_current_wal_lsn() - '$before'::pg_lsn");
is($reg->safe_psql('postgres', 'SELECT count(*) FROM filler'),
	$next_id, 'every commit went through');
$reg->safe_psql('postgres', 'CHECKPOINT');
my $wal_dir = $reg->safe_psql('postgres',
	'SELECT sum(size) FROM pg_ls_waldir()');
cmp_ok($written, '>', 34 * 1024 * 1024,
	"the register wrote $written bytes of WAL, more than max_wal_size");
cmp_ok($wal_dir, '<=', 34 * 1024 * 1024,
	"pg_wal holds $wal_dir bytes: within max_wal_size and two segments");

$reg->stop;
done_testing();
