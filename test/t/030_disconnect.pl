
# A register that goes away only adds lag: the embassy shows
# "disconnected" with the reason, then catches up when the register is back.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = 'CREATE TABLE t (id integer PRIMARY KEY, v text)';
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
DataEmbassy::link_sites($reg, $emb, 'r1', copy_data => 0);
ok(DataEmbassy::wait_state($emb, 'r1', 'streaming'), 'streaming');

$reg->safe_psql('postgres', "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 1000) g");
DataEmbassy::wait_caught_up($reg, $emb, 'r1');

$reg->stop('fast');
ok(DataEmbassy::wait_state($emb, 'r1', 'disconnected'),
	'state disconnected while the register is down');
my $row = DataEmbassy::lag_row($emb, 'r1');
isnt($row->{last_error}, '', "last_error says why: $row->{last_error}");
unlike($row->{last_error}, qr/password/i, 'no conninfo secret in last_error');

# The embassy keeps retrying without piling up workers.
sleep 2;
is($emb->safe_psql('postgres',
		q{SELECT count(*) <= 1 FROM pg_stat_activity WHERE backend_type LIKE 'data_embassy apply%'}),
	't', 'at most one apply worker');

$reg->start;
$reg->safe_psql('postgres', "INSERT INTO t SELECT g, 'b' FROM generate_series(1001, 2000) g");
DataEmbassy::wait_caught_up($reg, $emb, 'r1', msg => 'caught up after the register came back');
ok($emb->poll_query_until('postgres',
		q{SELECT state = 'streaming' AND lag_bytes = 0 FROM data_embassy.lag WHERE register = 'r1'}),
	'back to streaming with lag_bytes = 0');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

$emb->stop;
$reg->stop;
done_testing();
