
# pause_register / resume_register hold and release the worker (lag grows,
# then returns to zero); drop_register stops it and drops its slot on the
# register, and says so when the register cannot be reached.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy',
	extra_conf => "data_embassy.heartbeat_interval = '1s'\n");

my $ddl = 'CREATE TABLE t (id integer PRIMARY KEY, v text)';
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
DataEmbassy::link_sites($reg, $emb, 'r', copy_data => 0);
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming');
$reg->safe_psql('postgres', "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g");
DataEmbassy::wait_caught_up($reg, $emb, 'r');

# Pause: the worker holds, writes on the register only add lag.
$emb->safe_psql('postgres', "SELECT data_embassy.pause_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'paused'), 'state paused');
$reg->safe_psql('postgres', "INSERT INTO t SELECT g, 'b' FROM generate_series(101, 5000) g");
# A paused worker asks for no sealed heartbeat: once the last proof is older
# than two heartbeat intervals, the replica is no longer shown caught up
# and lag_time counts from that proof.
ok($emb->poll_query_until('postgres',
		q{SELECT NOT caught_up AND lag_time > '0' AND lag_time >= contact_age
		  FROM data_embassy.lag WHERE register = 'r'}),
	'not caught up, and lag_time grows while paused');
my $t1 = $emb->safe_psql('postgres', q{SELECT lag_time FROM data_embassy.lag WHERE register = 'r'});
sleep 2;
ok($emb->safe_psql('postgres',
		"SELECT lag_time > '$t1' FROM data_embassy.lag WHERE register = 'r'") eq 't',
	'lag_time keeps growing');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM t'), '100', 'nothing applied while paused');

# The register sees the same lag in its embassies view.
ok($reg->safe_psql('postgres',
		q{SELECT lag_bytes > 0 FROM data_embassy.embassies WHERE name = 'embassy'}) eq 't',
	'the register sees the embassy behind');

$emb->safe_psql('postgres', "SELECT data_embassy.resume_register('r')");
DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => 'caught up after resume');
ok($emb->poll_query_until('postgres',
		q{SELECT lag_bytes = 0 AND lag_time = '0' AND caught_up FROM data_embassy.lag WHERE register = 'r'}),
	'lag back to zero after resume');
ok($reg->poll_query_until('postgres',
		q{SELECT lag_bytes = 0 FROM data_embassy.embassies WHERE name = 'embassy'}),
	"the register's embassies view agrees");
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# Pause survives a restart of the embassy.
$emb->safe_psql('postgres', "SELECT data_embassy.pause_register('r')");
$emb->restart;
ok(DataEmbassy::wait_state($emb, 'r', 'paused'), 'still paused after a restart');
$emb->safe_psql('postgres', "SELECT data_embassy.resume_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming again');

# Drop: the worker stops and the slot on the register goes.
my $slot = $reg->safe_psql('postgres', q{SELECT slot_name FROM data_embassy.embassies});
$emb->safe_psql('postgres', "SELECT data_embassy.drop_register('r')");
is($emb->safe_psql('postgres', q{SELECT count(*) FROM data_embassy.lag}), '0',
	'no register left in the lag view');
ok($emb->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type LIKE 'data_embassy apply%'}),
	'the apply worker is gone');
is($reg->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'0', 'the slot was dropped on the register');
is($emb->safe_psql('postgres', q{SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'data_embassy%'}),
	'0', 'the replication origin was dropped');

# Add it again, then drop it while the register is down: a warning says the
# slot could not be dropped.
my $rkey = DataEmbassy::public_key($reg);
my $conninfo = DataEmbassy::sql_quote($reg->connstr('postgres'));
$emb->safe_psql('postgres', "SELECT data_embassy.add_register('r', $conninfo, '$rkey', false)");
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming again after add');
$reg->stop('fast');
my ($ret, $stdout, $stderr) = $emb->psql('postgres', "SELECT data_embassy.drop_register('r')");
is($ret, 0, 'drop_register succeeds with the register down');
like($stderr, qr/WARNING:.*could not drop replication slot/, 'and warns that the slot remains');
like($stderr, qr/\Q$slot\E/, 'naming the slot');

$emb->stop;
done_testing();
