
# A change the embassy cannot apply (a NOT NULL constraint only the embassy
# has, the stand-in for a disk that is full) is reported in the lag view with state
# "error" and a last_error that names it, the worker retries with backoff
# instead of looping silently, nothing of the failing transaction is
# applied, and once the cause is gone the data arrives complete.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = 'CREATE TABLE t (id integer PRIMARY KEY, embassy_only integer)';
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
DataEmbassy::link_sites($reg, $emb, 'r', copy_data => 0);
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming');

# Only the embassy forbids null values (CHECK constraints are the
# register's business and are not evaluated on applied rows, see 100).
$emb->safe_psql('postgres',
	'ALTER TABLE t ALTER embassy_only SET NOT NULL');
$reg->safe_psql('postgres', 'INSERT INTO t SELECT g, g FROM generate_series(1, 10) g');
DataEmbassy::wait_caught_up($reg, $emb, 'r');

$reg->safe_psql('postgres',
	'BEGIN; INSERT INTO t VALUES (11, 11); INSERT INTO t VALUES (12, NULL); COMMIT;');
ok(DataEmbassy::wait_state($emb, 'r', 'error'), 'state error');
my $row = DataEmbassy::lag_row($emb, 'r');
like($row->{last_error}, qr/embassy_only/, "last_error names the constraint: $row->{last_error}");
is($emb->safe_psql('postgres', 'SELECT count(*) FROM t WHERE id >= 11'), '0',
	'nothing of the failing transaction is applied');

# It keeps retrying, visibly, with backoff (the launcher's restarts).
my $n = () = slurp_file($emb->logfile) =~ /embassy_only/g;
sleep 3;
my $m = () = slurp_file($emb->logfile) =~ /embassy_only/g;
cmp_ok($m, '>', $n, 'the worker retries');
cmp_ok($m - $n, '<', 30, 'with backoff, not in a tight loop');

# The cause goes away: everything arrives, in order, once.
$emb->safe_psql('postgres', 'ALTER TABLE t ALTER embassy_only DROP NOT NULL');
DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => 'caught up once the cause is gone');
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming again');
is(DataEmbassy::lag_row($emb, 'r')->{last_error}, '', 'last_error cleared');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

$emb->stop;
$reg->stop;
done_testing();
