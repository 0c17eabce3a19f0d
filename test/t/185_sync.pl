
# Copyright (c) data_embassy developers

# Synchronous mode: each embassy's replication connection goes by its slot's
# name (application_name), so synchronous_standby_names on the register can
# name it.  A register commit then waits until the embassy has it durable:
# with the embassy down it waits, and completes once the embassy is back.
# The feedback the register sees stays consistent (replay <= flush <= write).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = 'CREATE TABLE t (id integer PRIMARY KEY, v text)';
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
DataEmbassy::link_sites($reg, $emb, 'r', copy_data => 0);
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming');

# The first connection learns the slot's name and streams under it.
my $slot = $reg->safe_psql('postgres',
	q{SELECT slot_name FROM data_embassy.embassies WHERE name = 'embassy'});
like($slot, qr/^data_embassy_[0-9a-f]{16}_\d+$/, 'the embassy has a slot');
ok( $reg->poll_query_until('postgres',
		qq{SELECT count(*) FROM pg_stat_replication
		   WHERE application_name = '$slot'}, '1'),
	'the replication connection is named after the slot');

# Name the embassy in synchronous_standby_names.
$reg->safe_psql('postgres', qq{
	ALTER SYSTEM SET synchronous_commit = 'on';
	ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 ($slot)';
	SELECT pg_reload_conf();
});
ok( $reg->poll_query_until('postgres',
		q{SELECT sync_state FROM data_embassy.embassies WHERE name = 'embassy'},
		'quorum'),
	'the embassy is a synchronous standby (sync_state quorum)');

my ($ret, $out, $err) = $reg->psql('postgres',
	q{INSERT INTO t VALUES (1, 'confirmed')}, timeout => 60);
is($ret, 0, 'a commit is confirmed by the synchronous embassy');
is($emb->safe_psql('postgres', 'SELECT v FROM t WHERE id = 1'), 'confirmed',
	'and the embassy has it once the commit returns');

# Feedback: what the embassy reports applied, flushed and written is
# ordered, and the flush covers the commit.
my $commit_lsn = $reg->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok( $reg->poll_query_until('postgres',
		qq{SELECT replay_lsn <= flush_lsn AND flush_lsn <= write_lsn
				  AND flush_lsn >= '$commit_lsn'
		   FROM pg_stat_replication WHERE application_name = '$slot'}),
	'feedback: replay_lsn <= flush_lsn <= write_lsn, flush past the commit');

# The embassy goes away: a commit waits.
$emb->stop;
ok( $reg->poll_query_until('postgres',
		qq{SELECT count(*) FROM pg_stat_replication
		   WHERE application_name = '$slot'}, '0'),
	'the embassy is gone');

my ($bout, $berr) = ('', '');
my $h = IPC::Run::start(
	[
		'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $reg->connstr('postgres'),
		'-c', "INSERT INTO t VALUES (2, 'waited')"
	],
	'>', \$bout, '2>', \$berr,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));

ok( $reg->poll_query_until('postgres',
		q{SELECT count(*) FROM pg_stat_activity
		  WHERE wait_event = 'SyncRep' AND query LIKE 'INSERT INTO t VALUES (2%'},
		'1'),
	'the commit waits for the synchronous embassy');
sleep 2;
$h->pump_nb;
ok($h->pumpable, 'still waiting two seconds later');
is($reg->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id = 2'), '0',
	'its row is not visible while it waits');

# The embassy comes back: the commit completes.
$emb->start;
ok($h->finish, 'the commit completes once the embassy is back');
unlike($berr, qr/WARNING|ERROR/, 'without a warning or error');
is($reg->safe_psql('postgres', 'SELECT v FROM t WHERE id = 2'), 'waited',
	'the row is committed at the register');
is($emb->safe_psql('postgres', 'SELECT v FROM t WHERE id = 2'), 'waited',
	'and at the embassy: it had it durable before the commit returned');

$commit_lsn = $reg->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok( $reg->poll_query_until('postgres',
		qq{SELECT replay_lsn <= flush_lsn AND flush_lsn <= write_lsn
				  AND flush_lsn >= '$commit_lsn'
		   FROM pg_stat_replication WHERE application_name = '$slot'}),
	'feedback consistent after the reconnection');
is($reg->safe_psql('postgres',
		q{SELECT sync_state FROM data_embassy.embassies WHERE name = 'embassy'}),
	'quorum', 'synchronous again');

$reg->safe_psql('postgres', q{
	ALTER SYSTEM RESET synchronous_standby_names;
	SELECT pg_reload_conf();
});
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

$_->stop for ($emb, $reg);
done_testing();
