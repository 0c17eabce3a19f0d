
# A transaction of 1,000,000 rows replicates, spread over many frames and
# applied in one local transaction, while the apply worker's and the
# walsender's private memory stay bounded.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = q{CREATE TABLE population (
	id bigint PRIMARY KEY, code text NOT NULL, first_name text, last_name text,
	born date, address text, amount numeric(12,2))};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);

DataEmbassy::link_sites($reg, $emb, 'big', copy_data => 0);
ok(DataEmbassy::wait_state($emb, 'big', 'streaming'), 'streaming');

# Private (anonymous) resident memory of a process, in kB.
sub rss_anon
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return 0;
	while (<$fh>)
	{
		return $1 if /^RssAnon:\s+(\d+)/;
	}
	return 0;
}

my $t0 = time;
$reg->safe_psql('postgres', q{
	INSERT INTO population
	SELECT g, 'EE' || lpad(g::text, 11, '0'), 'First' || (g % 5000),
		   'Last' || (g % 20000), '1940-01-01'::date + g % 30000,
		   'Street ' || (g % 900) || ', Tallinn ' || (10000 + g % 90000),
		   (g % 100000) / 100.0
	FROM generate_series(1, 1000000) g});
my $t_commit = time;

my $wpid = DataEmbassy::lag_row($emb, 'big')->{worker_pid};
my $spid = $reg->safe_psql('postgres',
	q{SELECT active_pid FROM pg_replication_slots WHERE slot_type = 'logical'});
my ($peak_worker, $peak_sender) = (0, 0);
my $target = $reg->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
my $done = 0;
while (time < $deadline)
{
	my $w = rss_anon($wpid);
	my $s = rss_anon($spid);
	$peak_worker = $w if $w > $peak_worker;
	$peak_sender = $s if $s > $peak_sender;
	$done = $emb->safe_psql('postgres',
		"SELECT applied_lsn >= '$target' FROM data_embassy.lag WHERE register = 'big'");
	last if $done eq 't';
	usleep(200_000);
}
my $t_applied = time;
is($done, 't', '1,000,000-row transaction applied');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM population'),
	'1000000', 'all rows arrived');
my $secs = $t_applied - $t_commit;
note(sprintf("commit to applied: %.1f s (%.0f rows/s); insert took %.1f s",
	$secs, 1000000 / ($secs || 1), $t_commit - $t0));
note("peak private memory: apply worker $peak_worker kB, walsender $peak_sender kB");
cmp_ok($peak_worker, '<', 128 * 1024, 'apply worker memory stays bounded');
cmp_ok($peak_sender, '<', 128 * 1024, 'walsender memory stays bounded');

my $lag = DataEmbassy::lag_row($emb, 'big');
cmp_ok($lag->{frames_applied}, '>', 10, "spread over $lag->{frames_applied} frames");

DataEmbassy::compare_tables($reg, $emb, 'postgres');

$emb->stop;
$reg->stop;
done_testing();
