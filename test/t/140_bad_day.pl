
# Copyright (c) data_embassy developers

# Tools for a bad day.  The lag view shows the initial copy's progress
# while it runs (1,000,000 rows).  A transaction the embassy cannot apply
# (a unique index only the embassy has) stops the worker in state "error";
# the lag view shows its commit LSN, skip() with that LSN skips exactly
# that transaction (recorded in data_embassy.skipped_transactions) and the
# next ones arrive.  A large transaction streamed before its commit is
# skipped the same way, once the worker has spooled it and so knows its
# commit LSN.  retry_register() brings a failed worker back before its
# backoff (retry_interval is 30 s here) ends.  skip() refuses what it
# cannot do.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');

# A tiny reorder buffer makes a transaction of a few thousand rows stream
# before its commit; a long backoff makes retry_register() visible.
my $emb = DataEmbassy::embassy_node('embassy', extra_conf => q{
data_embassy.decoding_work_mem = 64kB
data_embassy.retry_interval = 30s
});

my $ddl = q{
	CREATE TABLE big (id integer PRIMARY KEY, v text);
	CREATE TABLE t (id integer PRIMARY KEY, v integer);
	CREATE TABLE s (id integer PRIMARY KEY, v integer);
};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
# what only the embassy forbids
$emb->safe_psql('postgres', q{
	CREATE UNIQUE INDEX t_v_embassy ON t (v);
	CREATE UNIQUE INDEX s_v_embassy ON s (v);
});
$reg->safe_psql('postgres',
	q{INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 1000000) g});

sub lag
{
	my ($cols) = @_;
	return $emb->safe_psql('postgres',
		"SELECT $cols FROM data_embassy.lag WHERE register = 'r'");
}

# 1. The initial copy's progress, seen while it runs.
DataEmbassy::link_sites($reg, $emb, 'r');
my @seen;
my $state = '';
foreach (1 .. $PostgreSQL::Test::Utils::timeout_default * 20)
{
	my $row = lag(q{state, coalesce(copy_rows, -1), rows_applied,
					coalesce(copy_tables_done, -1), coalesce(copy_bytes, -1),
					coalesce(copy_tables_total, -1)});
	my @v = split /\|/, $row;
	$state = $v[0];
	push @seen, [@v] if $state eq 'copying' && $v[1] > 0;
	last if $state eq 'streaming' || $state eq 'error';
	select(undef, undef, undef, 0.05);
}
is($state, 'streaming', 'streaming after the copy');
my @during = grep { $_->[1] < 1000000 } @seen;
note('copy progress seen: '
	  . join(', ', map { "$_->[1] rows/$_->[3] tables" } @during));
cmp_ok(scalar(@during), '>=', 2, 'the copy was seen twice before it ended');
SKIP:
{
	skip 'the copy was not seen twice', 4 if @during < 2;
	cmp_ok($during[-1][1], '>', $during[0][1], 'copy_rows grows during the copy');
	cmp_ok($during[-1][2], '>', 0, 'rows_applied grows during the copy');
	cmp_ok($during[-1][4], '>', $during[0][4], 'copy_bytes grows during the copy');
	is($during[0][5], '3', 'copy_tables_total: the three tables of the copy, as it announced them sealed');
}
is(lag('copy_rows, copy_tables_done, copy_tables_total, rows_applied >= 1000000, copy_bytes > 0'),
	'1000000|3|3|t|t', 'after the copy: every row, every table, every byte counted');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# 2. A transaction the embassy cannot apply, skipped.
$reg->safe_psql('postgres', 'INSERT INTO t VALUES (1, 1)');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
my $before = $reg->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $xid = $reg->safe_psql('postgres',
	'BEGIN; INSERT INTO t VALUES (2, 1); SELECT pg_current_xact_id(); COMMIT;');
my $after = $reg->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$reg->safe_psql('postgres', 'INSERT INTO t VALUES (3, 3)');

ok( $emb->poll_query_until('postgres',
		q{SELECT state = 'error' AND failed_commit_lsn IS NOT NULL
		  FROM data_embassy.lag WHERE register = 'r'}),
	'state error, with the failing commit LSN');
my ($err, $lsn) = split /\|/, lag('last_error, failed_commit_lsn');
like($err, qr/t_v_embassy/, "last_error names the index: $err");
is( $reg->safe_psql('postgres',
		"SELECT '$lsn' > '$before' AND '$lsn' < '$after'"),
	't', "failed_commit_lsn $lsn is the failing transaction's commit");
like(slurp_file($emb->logfile), qr/in transaction $xid, finished at \Q$lsn\E/,
	'the log names the same transaction and LSN');

# an LSN the replica has passed is refused
my ($ret, $out, $stderr) = $emb->psql('postgres',
	"SELECT data_embassy.skip('r', '0/10')");
like($stderr, qr/is already behind the replica/, 'skip of a passed LSN refused');

my $t0 = time;
$emb->safe_psql('postgres', "SELECT data_embassy.skip('r', '$lsn')");
DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => 'caught up after skip');
cmp_ok(time - $t0, '<', 25, 'skip() starts the worker before its backoff ends');
is($emb->safe_psql('postgres', 'SELECT id FROM t ORDER BY id'), "1\n3",
	'the skipped transaction is absent, the next one arrived');
is( $emb->safe_psql('postgres',
		q{SELECT register, commit_lsn, xid, requested_by, commit_time <= skipped_at
		  FROM data_embassy.skipped_transactions}),
	"r|$lsn|$xid|postgres|t", 'the skip is recorded');
is( $emb->safe_psql('postgres',
		q{SELECT skip_lsn IS NULL FROM data_embassy.registers WHERE name = 'r'}),
	't', 'registers.skip_lsn cleared');
like(slurp_file($emb->logfile),
	qr/skipped transaction $xid, finished at \Q$lsn\E, committed at/,
	'the skip is logged');
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming again');
is(lag(q{coalesce(last_error, '') || '|' || coalesce(failed_commit_lsn::text, '')}),
	'|', 'last_error and failed_commit_lsn cleared');

# 3. retry_register() brings a failed worker back before its backoff.
$reg->safe_psql('postgres', 'INSERT INTO t VALUES (4, 1)');
ok(DataEmbassy::wait_state($emb, 'r', 'error'), 'state error again');
ok( $emb->poll_query_until('postgres',
		q{SELECT worker_pid IS NULL FROM data_embassy.lag WHERE register = 'r'}),
	'the worker has stopped');
$emb->safe_psql('postgres', 'DROP INDEX t_v_embassy');
sleep 3;
is(lag('state'), 'error', 'the cause is gone, but the worker waits out its backoff');
$t0 = time;
is($emb->safe_psql('postgres', "SELECT data_embassy.retry_register('r')"),
	't', 'retry_register starts it');
DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => 'caught up after retry');
cmp_ok(time - $t0, '<', 20, 'well before the 30 s backoff');
is($emb->safe_psql('postgres', 'SELECT id FROM t ORDER BY id'), "1\n3\n4",
	'the retried transaction arrived');

# 4. A large transaction streamed before its commit, skipped.  Applied as
# it arrives, it fails before its commit LSN is known; the next run spools
# it and fails at its commit, which the lag view then shows.
my $off = -s $emb->logfile;
$before = $reg->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$xid = $reg->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO s SELECT g, g FROM generate_series(1, 20000) g;
	INSERT INTO s VALUES (20001, 1);
	SELECT pg_current_xact_id();
	COMMIT});
$after = $reg->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$reg->safe_psql('postgres', 'INSERT INTO s VALUES (30000, 30000)');

ok(DataEmbassy::wait_state($emb, 'r', 'error'), 'streamed: state error');
like(slurp_file($emb->logfile, $off),
	qr/in streamed transaction $xid, in progress/,
	'streamed: it failed while applied as it arrived');
my $found = 0;
foreach (1 .. $PostgreSQL::Test::Utils::timeout_default * 2)
{
	($state, $lsn) = split /\|/,
	  lag(q{state, coalesce(failed_commit_lsn::text, '')});
	if ($lsn ne '')
	{
		$found = 1;
		last;
	}
	$emb->safe_psql('postgres', "SELECT data_embassy.retry_register('r')")
	  if $state eq 'error';
	sleep 1;
}
ok($found, "streamed: the spooled run shows its commit LSN $lsn");
is( $reg->safe_psql('postgres',
		"SELECT '$lsn' > '$before' AND '$lsn' < '$after'"),
	't', 'streamed: it is the large transaction');
like(slurp_file($emb->logfile, $off),
	qr/in transaction $xid, finished at \Q$lsn\E/,
	'streamed: the log names it');

$emb->safe_psql('postgres', "SELECT data_embassy.skip('r', '$lsn')");
DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => 'streamed: caught up after skip');
is($emb->safe_psql('postgres', 'SELECT id FROM s ORDER BY id'), '30000',
	'streamed: nothing of it applied, the next one arrived');
is( $emb->safe_psql('postgres',
		"SELECT xid FROM data_embassy.skipped_transactions WHERE commit_lsn = '$lsn'"),
	$xid, 'streamed: the skip is recorded');

# 5. A skip the worker never meets waits; '0/0' withdraws it.
my $far = $reg->safe_psql('postgres',
	q{SELECT pg_current_wal_lsn() + 1024 * 1024 * 1024});
$emb->safe_psql('postgres', "SELECT data_embassy.skip('r', '$far')");
$reg->safe_psql('postgres', 'INSERT INTO t VALUES (5, 5)');
DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => 'a pending skip stops nothing');
is( $emb->safe_psql('postgres',
		q{SELECT skip_lsn FROM data_embassy.registers WHERE name = 'r'}),
	$far, 'the skip is still pending');
$emb->safe_psql('postgres', "SELECT data_embassy.skip('r', '0/0')");
is( $emb->safe_psql('postgres',
		q{SELECT skip_lsn IS NULL FROM data_embassy.registers WHERE name = 'r'}),
	't', 'withdrawn');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM data_embassy.skipped_transactions'),
	'2', 'two skips recorded');

# 6. A promoted register has nothing to skip.
$emb->safe_psql('postgres', q{SELECT * FROM data_embassy.promote('r')});
($ret, $out, $stderr) = $emb->psql('postgres',
	"SELECT data_embassy.skip('r', '$far')");
like($stderr, qr/register "r" has been promoted/, 'skip refused after promotion');

$emb->stop;
$reg->stop;
done_testing();
