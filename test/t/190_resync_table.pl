# Copyright (c) data_embassy developers

# resync_table(register, table) copies one table again, sealed, in a
# snapshot of its own (a temporary slot at the register), while the apply
# worker goes on with the stream: under write load on that table and
# another, both end identical to the register, no row lost or applied
# twice; the other table is applied while the copy runs; progress shows in
# the lag view and the view table_resyncs; a restart of the embassy in the
# middle of a copy ends identical too; no slot is left at the register;
# promote() after the copies warns of no table.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = q{
	CREATE TABLE big (id bigserial PRIMARY KEY, n integer NOT NULL,
					  v text NOT NULL);
	CREATE TABLE other (id bigserial PRIMARY KEY, v text NOT NULL);
	CREATE TABLE quiet (id integer PRIMARY KEY);
};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
$reg->safe_psql('postgres', q{
	INSERT INTO big (n, v) SELECT 0, 'row ' || g FROM generate_series(1, 100000) g;
	INSERT INTO other (v) SELECT 'row ' || g FROM generate_series(1, 100) g;
	INSERT INTO quiet SELECT generate_series(1, 10);
});

# The copy of big is slowed down at the embassy (a trigger that fires as
# a replica's does and naps every 2000 rows), so that it can be watched.
$emb->safe_psql('postgres', q{
	CREATE FUNCTION nap() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.id % 2000 = 0 THEN
			PERFORM pg_sleep(0.1);
		END IF;
		RETURN NULL;
	END $$;
	CREATE TRIGGER nap AFTER INSERT ON big FOR EACH ROW EXECUTE FUNCTION nap();
	ALTER TABLE big ENABLE ALWAYS TRIGGER nap;
});

DataEmbassy::link_sites($reg, $emb, 'r');
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming after the copy');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# pgbench at the register: scripts given as [file, weight]
my $pgbench_n = 0;

sub start_pgbench
{
	my ($seconds, @scripts) = @_;
	my @args;
	foreach my $s (@scripts)
	{
		my $file = $reg->basedir . '/load' . (++$pgbench_n) . '.sql';
		open my $fh, '>', $file or die "could not write $file: $!";
		print $fh $s->[0];
		close $fh;
		push @args, '-f', "$file\@$s->[1]";
	}
	my ($out, $err) = ('', '');
	return IPC::Run::start(
		[
			'pgbench', '-n', '-c', '2', '-j', '2', '-T', $seconds,
			'-h', $reg->host, '-p', $reg->port, @args, 'postgres'
		],
		'>', \$out, '2>', \$err);
}

# one transaction touching both tables: update, insert and delete in big
my $both = q{
\set id random(1, 100000)
BEGIN;
UPDATE big SET n = n + 1 WHERE id = :id;
INSERT INTO big (n, v) VALUES (0, 'new');
DELETE FROM big WHERE id = :id + 7;
INSERT INTO other (v) VALUES ('both');
COMMIT;
};
my $only_other = q{
INSERT INTO other (v) VALUES ('only other');
};

# --- 1. the other tables are applied while a table is copied ---
my $load = start_pgbench(6, [ $only_other, 1 ]);
$emb->safe_psql('postgres', "SELECT data_embassy.resync_table('r', 'big')");
is(DataEmbassy::resync_state($emb, 'big'), 'copying', 'table_resyncs shows the copy');
ok( $emb->poll_query_until('postgres',
		"SELECT copy_rows > 0 AND copy_tables_total = 1 AND copy_tables_done = 0
		 FROM data_embassy.lag WHERE register = 'r'"),
	'the lag view shows the copy under way');
my $other_1 = $emb->safe_psql('postgres', 'SELECT count(*) FROM other');
my $rows_1 = $emb->safe_psql('postgres',
	"SELECT copy_rows FROM data_embassy.lag WHERE register = 'r'");
sleep 2;
my $other_2 = $emb->safe_psql('postgres', 'SELECT count(*) FROM other');
my $rows_2 = $emb->safe_psql('postgres',
	"SELECT copy_rows FROM data_embassy.lag WHERE register = 'r'");
is(DataEmbassy::resync_state($emb, 'big'), 'copying', 'the copy still runs');
cmp_ok($other_2, '>', $other_1,
	"table other applied during the copy ($other_1 then $other_2 rows)");
cmp_ok($rows_2, '>', $rows_1,
	"the copy's progress moves ($rows_1 then $rows_2 rows)");
$load->finish;
DataEmbassy::wait_resync_done($emb, 'big', 'the copy ends');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is($emb->safe_psql('postgres',
		"SELECT copy_tables_done || '/' || copy_tables_total || ' ' || (copy_rows >= 100000)
		 FROM data_embassy.lag WHERE register = 'r'"),
	'1/1 true', 'the lag view shows the copy done: tables done/total, rows');
DataEmbassy::no_resync_slot_left($reg, 'no slot of the copy is left at the register');
my $log = slurp_file($emb->logfile);
like($log, qr/register "r": a new copy of table public\.big was requested by user/,
	'logged: the request');
like($log, qr/register "r": new copy of table public\.big started/,
	'logged: the start');
like($log, qr/register "r": new copy of table public\.big done at register LSN [0-9A-F]+\/[0-9A-F]+ \(\d+ rows\)/,
	'logged: the end');

# --- 2. under write load on the table and another one ---
# Every transaction changes both tables: the changes to big are deferred
# while big is copied, those to other are applied meanwhile.
$load = start_pgbench(10, [ $both, 1 ]);
sleep 2;
$emb->safe_psql('postgres', "SELECT data_embassy.resync_table('r', 'big')");
ok( $emb->poll_query_until('postgres',
		"SELECT copy_rows > 0 AND copy_tables_done = 0
		 FROM data_embassy.lag WHERE register = 'r'"),
	'the copy under load runs');
$other_1 = $emb->safe_psql('postgres', "SELECT count(*) FROM other WHERE v = 'both'");
sleep 2;
$other_2 = $emb->safe_psql('postgres', "SELECT count(*) FROM other WHERE v = 'both'");
is(DataEmbassy::resync_state($emb, 'big'), 'copying', 'the copy still runs');
cmp_ok($other_2, '>', $other_1,
	"the other table's changes of transactions that also change the copied table are applied during the copy ($other_1 then $other_2 rows)");
# asked twice: a notice, nothing else
my ($ret, $stdout, $stderr) = $emb->psql('postgres',
	"SELECT data_embassy.resync_table('r', 'big')");
like($stderr, qr/NOTICE:  a new copy of table public\.big is already under way/,
	'a second request while one is under way is a notice');
$load->finish;
DataEmbassy::wait_resync_done($emb, 'big', 'the copy under load ends');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is($emb->safe_psql('postgres',
		"SELECT count(*) FROM (SELECT id FROM big GROUP BY id HAVING count(*) > 1) d"),
	'0', 'no row of big twice');
is($emb->safe_psql('postgres', "SELECT count(*) FROM other WHERE v = 'both'"),
	$reg->safe_psql('postgres', "SELECT count(*) FROM other WHERE v = 'both'"),
	"every transaction's change to the other table is there once");
DataEmbassy::no_resync_slot_left($reg, 'no slot of the copy is left at the register');
$log = slurp_file($emb->logfile);
like($log,
	qr/register "r": changes to table "big" are deferred until its new copy commits/,
	"the table's changes were deferred during the copy");
like($log,
	qr/register "r": table "big" caught up with the stream after its new copy at [0-9A-F]+\/[0-9A-F]+ \(\d+ deferred changes applied, \d+ held by the copy\)/,
	'and applied after it');
my @deferred = ($log =~ /caught up with the stream after its new copy at \S+ \((\d+) deferred changes applied/g);
my $deferred = $deferred[-1];
cmp_ok($deferred, '>', 0, "deferred changes after the copy's snapshot were applied ($deferred)");
unlike($log, qr/register "r": the worker stopped on an error/,
	'the apply worker never failed (no change applied twice or missing)');

# --- 3. the embassy restarts in the middle of a copy ---
$load = start_pgbench(12, [ $both, 1 ], [ $only_other, 1 ]);
sleep 1;
$emb->safe_psql('postgres', "SELECT data_embassy.resync_table('r', 'big')");
ok( $emb->poll_query_until('postgres',
		"SELECT copy_rows > 10000 AND copy_tables_done = 0
		 FROM data_embassy.lag WHERE register = 'r'"),
	'a copy is half done');
$emb->stop('immediate');
$emb->start;
is(DataEmbassy::resync_state($emb, 'big'), 'copying', 'after the restart the copy is still wanted');
$load->finish;
DataEmbassy::wait_resync_done($emb, 'big', 'the copy started again ends');
my @starts = (slurp_file($emb->logfile) =~ /new copy of table public\.big started/g);
cmp_ok(scalar(@starts), '>=', 4, 'the copy cut short started over');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
DataEmbassy::no_resync_slot_left($reg, 'no slot of the copy is left at the register');

# --- 4. the apply worker stops in the middle of a copy (pause and resume) ---
$load = start_pgbench(8, [ $both, 1 ]);
$emb->safe_psql('postgres', "SELECT data_embassy.resync_table('r', 'big')");
ok( $emb->poll_query_until('postgres',
		"SELECT copy_rows > 5000 AND copy_tables_done = 0
		 FROM data_embassy.lag WHERE register = 'r'"),
	'a copy is under way');
# a worker killed: the launcher starts a new one, the copy starts over
my $pid = $emb->safe_psql('postgres',
	"SELECT worker_pid FROM data_embassy.lag WHERE register = 'r'");
$emb->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$load->finish;
DataEmbassy::wait_resync_done($emb, 'big', 'the copy ends after the worker was killed');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
DataEmbassy::no_resync_slot_left($reg, 'no slot of the copy is left at the register');

# --- 5. the stream starts over while the table is copied (a pause): the
# changes kept aside are gone, so the table is copied once more ---
$load = start_pgbench(10, [ $both, 1 ]);
$emb->safe_psql('postgres', "SELECT data_embassy.resync_table('r', 'big')");
ok( $emb->poll_query_until('postgres',
		"SELECT copy_rows > 5000 AND copy_tables_done = 0
		 FROM data_embassy.lag WHERE register = 'r'"),
	'a copy is under way');
$emb->safe_psql('postgres', "SELECT data_embassy.pause_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'paused'), 'paused during the copy');
sleep 1;
$emb->safe_psql('postgres', "SELECT data_embassy.resume_register('r')");
$load->finish;
DataEmbassy::wait_resync_done($emb, 'big', 'the copy ends after a pause during the copy');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
$log = slurp_file($emb->logfile);
like($log,
	qr/register "r": table "big" will be copied once more: the stream started over while it was being copied/,
	'logged: the changes kept aside were lost with the stream');
like($log, qr/register "r": table "big" is copied once more/,
	'logged: copied once more');
DataEmbassy::no_resync_slot_left($reg, 'no slot of the copy is left at the register');

# --- bad inputs that need a streaming register ---
($ret, $stdout, $stderr) = $emb->psql('postgres',
	"SELECT data_embassy.resync_table('r', 'nap_log_does_not_exist')");
like($stderr, qr/relation "nap_log_does_not_exist" does not exist/,
	'an unknown table');
$emb->safe_psql('postgres', 'CREATE TABLE local_only (id integer)');
($ret, $stdout, $stderr) = $emb->psql('postgres',
	"SELECT data_embassy.resync_table('r', 'local_only')");
like($stderr, qr/table public\.local_only is not replicated from register "r"/,
	'a table the register does not replicate');

# --- promote() once every copy is in: no warning of tables out of step ---
DataEmbassy::wait_caught_up($reg, $emb, 'r');
is( $emb->safe_psql('postgres',
		"SELECT count(*) FROM data_embassy.table_resyncs WHERE state <> 'ready'"),
	'0', 'every copy is in');
($ret, $stdout, $stderr) = $emb->psql('postgres',
	"SELECT register FROM data_embassy.promote('r')");
is($ret, 0, 'promote() after the copies succeeds');
unlike($stderr, qr/not in step/,
	'and warns of no table (191 promotes during a copy)');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

$emb->stop;
$reg->stop;
done_testing();
