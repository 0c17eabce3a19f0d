
# Exactly once across crashes: SIGKILL the embassy postmaster, its apply
# worker, and the register postmaster at random moments while a write load
# of many small transactions (and some large ones) runs; at the end every
# table is identical on both sites, with no row lost or applied twice.
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
	CREATE TABLE accounts (id integer PRIMARY KEY, balance bigint NOT NULL);
	CREATE TABLE ledger (id bigserial PRIMARY KEY, acct integer, amount integer,
						 at timestamptz DEFAULT now());
};
$reg->safe_psql('postgres', $ddl
	  . 'INSERT INTO accounts SELECT g, 0 FROM generate_series(0, 99) g;');
$emb->safe_psql('postgres', $ddl);

DataEmbassy::link_sites($reg, $emb, 'ledger', copy_data => 1);
DataEmbassy::wait_caught_up($reg, $emb, 'ledger', msg => 'initial copy');

my $small = "${PostgreSQL::Test::Utils::tmp_check}/small.sql";
my $large = "${PostgreSQL::Test::Utils::tmp_check}/large.sql";
PostgreSQL::Test::Utils::append_to_file($small, q{
\set a random(0, 99)
BEGIN;
INSERT INTO ledger (acct, amount) VALUES (:a, 1);
UPDATE accounts SET balance = balance + 1 WHERE id = :a;
COMMIT;
});
PostgreSQL::Test::Utils::append_to_file($large, q{
BEGIN;
INSERT INTO ledger (acct, amount) SELECT g % 100, 2 FROM generate_series(1, 5000) g;
UPDATE accounts SET balance = balance + 100;
COMMIT;
});

# Start a write load on the register for some seconds, in the background.
sub start_load
{
	my ($seconds) = @_;
	my ($out, $err) = ('', '');
	return IPC::Run::start(
		[
			'pgbench', '-n', '-c', '2', '-j', '2', '-T', $seconds,
			'-h', $reg->host, '-p', $reg->port,
			'-f', "$small\@1000", '-f', "$large\@1", 'postgres'
		],
		'>', \$out, '2>', \$err);
}

my $kills = 0;

# Phase 1: the embassy dies, as a whole or its apply worker alone.
my $load = start_load(30);
for my $round (1 .. 8)
{
	usleep(int(rand(2_500_000)) + 500_000);
	if ($round % 3 == 0)
	{
		my $pid = DataEmbassy::lag_row($emb, 'ledger')->{worker_pid};
		if ($pid)
		{
			kill 'KILL', $pid;
			$kills++;
			note("round $round: killed apply worker $pid");
			# the postmaster reinitialises after a child's crash
			sleep 2;
		}
	}
	else
	{
		$emb->kill9;
		$kills++;
		note("round $round: killed embassy postmaster");
		DataEmbassy::start_after_kill($emb);
	}
}
$load->finish;

DataEmbassy::wait_caught_up($reg, $emb, 'ledger', msg => 'caught up after embassy kills');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# Phase 2: the register dies under load, and its walsender alone.
$load = start_load(20);
sleep 3;
my $sender = $reg->safe_psql('postgres',
	q{SELECT active_pid FROM pg_replication_slots WHERE slot_type = 'logical'});
if ($sender)
{
	kill 'KILL', $sender;
	$kills++;
	note("killed walsender $sender");
}
sleep 3;
$reg->kill9;
$kills++;
note('killed register postmaster');
$load->finish;
DataEmbassy::start_after_kill($reg);
$load = start_load(5);
sleep 2;
$emb->kill9;
$kills++;
DataEmbassy::start_after_kill($emb);
$load->finish;

DataEmbassy::wait_caught_up($reg, $emb, 'ledger', msg => 'caught up after register kills');
my $rows = DataEmbassy::compare_tables($reg, $emb, 'postgres');
is($emb->safe_psql('postgres', 'SELECT sum(balance) FROM accounts'),
	$reg->safe_psql('postgres', 'SELECT sum(balance) FROM accounts'),
	'balances agree: every transaction applied exactly once');
note("survived $kills kills; compared $rows rows");
cmp_ok($kills, '>=', 8, "at least 8 kills ($kills)");

$emb->stop;
$reg->stop;
done_testing();
