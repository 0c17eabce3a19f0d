
# Copyright (c) data_embassy developers

# The history check outlives a restart of the embassy (issue #10).
#
# Every stream asks the register what its WAL holds where the last sealed
# heartbeat the embassy received was written (src/register/history.c).
# That point is kept in data_embassy.registers (history_lsn, history_crc),
# not only in shared memory: here the embassy is stopped, the register is
# restored from an older file-level copy and writes past the embassy's
# position, and the embassy, started again, must refuse the first stream
# as "has rewound its history" instead of applying another history.  With
# the point kept in memory only, the first stream after the restart went
# unchecked and the embassy applied the restored register's new
# transactions on top of rows that register no longer has.
# resync_register() then forgets the point and copies the register anew.
use strict;
use warnings;

use File::Path qw(rmtree);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy',
	extra_conf => "data_embassy.heartbeat_interval = 1s\n");

my $ddl = 'CREATE TABLE journal (id bigserial PRIMARY KEY, what text NOT NULL)';
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
$reg->safe_psql('postgres',
	q{INSERT INTO journal (what) SELECT 'before' FROM generate_series(1, 20)});
DataEmbassy::link_sites($reg, $emb, 'population');
DataEmbassy::wait_caught_up($reg, $emb, 'population');

sub count_at
{
	my ($node, $what) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM journal WHERE what = '$what'");
}

# Wait until the catalog keeps a heartbeat written at or after $lsn.
sub wait_history_past
{
	my ($lsn) = @_;
	return $emb->poll_query_until('postgres',
		qq{SELECT coalesce(history_lsn >= '$lsn', false)
		   FROM data_embassy.registers WHERE name = 'population'});
}

ok(wait_history_past('0/0'), 'the catalog keeps a sealed heartbeat');
my ($hlsn, $hcrc) = split /\|/, $emb->safe_psql('postgres',
	q{SELECT history_lsn, history_crc FROM data_embassy.registers
	  WHERE name = 'population'});
ok($hcrc =~ /^\d+$/, "with its WAL record's CRC ($hlsn, $hcrc)");

# a file-level copy of the register, as cp -a or tar take it
my $backup = PostgreSQL::Test::Utils::tempdir() . '/register_backup';
$reg->stop;
system('cp', '-a', $reg->data_dir, $backup) == 0 or die "cp: $?";
$reg->start;
my $backup_end = $reg->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');

$reg->safe_psql('postgres',
	q{INSERT INTO journal (what) SELECT 'after backup' FROM generate_series(1, 50)});
DataEmbassy::wait_caught_up($reg, $emb, 'population');
ok(wait_history_past($backup_end),
	'a heartbeat written after the backup is kept in the catalog');

# the embassy goes down; meanwhile the register comes back from the old copy
$emb->stop;
$reg->stop;
rmtree($reg->data_dir);
system('cp', '-a', $backup, $reg->data_dir) == 0 or die "cp: $?";
$reg->start;
is(count_at($reg, 'after backup'), '0', 'the register rewound');
# and writes past where the embassy stands, so no position check alone
# could tell
foreach my $i (1 .. 20)
{
	$reg->safe_psql('postgres',
		q{INSERT INTO journal (what) SELECT 'after rewind' FROM generate_series(1, 100)});
}

my $log_offset = -s $emb->logfile;
$emb->start;
ok( $emb->poll_query_until(
		'postgres',
		q{SELECT coalesce(last_error, '') ~ 'has rewound its history' FROM data_embassy.lag
		  WHERE register = 'population'}),
	'after the restart, the first stream is refused: the register rewound');
like(substr(slurp_file($emb->logfile), $log_offset),
	qr/register "population" has rewound its history/,
	'the log says so');
is(count_at($emb, 'after rewind'), '0',
	'nothing of the restored register\'s new history was applied');
is(count_at($emb, 'after backup'), '50', 'what the embassy had stays');

# the DBA's way back: copy the register anew; the old point is forgotten
$emb->safe_psql('postgres',
	q{SELECT data_embassy.resync_register('population')});
ok( $emb->poll_query_until(
		'postgres',
		q{SELECT state = 'streaming' AND coalesce(last_error, '') = ''
		  FROM data_embassy.lag WHERE register = 'population'}),
	'resync_register: streaming again');
DataEmbassy::wait_caught_up($reg, $emb, 'population');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is(count_at($emb, 'after rewind'), '2000', 'the new history is there');
my $after = $reg->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok(wait_history_past($after), 'and a new heartbeat is kept');

$reg->stop;
$emb->stop;
done_testing();
