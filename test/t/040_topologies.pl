
# Two registers replicated into two databases of one embassy at once, and
# one register replicated to two embassies at once (each with its own slot).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $pop = DataEmbassy::register_node('population');
my $biz = DataEmbassy::register_node('business');
my $emb = DataEmbassy::embassy_node('embassy');
my $emb2 = DataEmbassy::embassy_node('embassy2');

my $ddl = 'CREATE TABLE entries (id integer PRIMARY KEY, v text, at date)';
$pop->safe_psql('postgres', $ddl);
$biz->safe_psql('postgres', $ddl);

# Two databases at the first embassy, one per register.
for my $db ('pop', 'biz')
{
	$emb->safe_psql('postgres', "CREATE DATABASE $db");
	$emb->safe_psql($db, 'CREATE EXTENSION data_embassy');
	$emb->safe_psql($db, $ddl);
}
$emb2->safe_psql('postgres', $ddl);

$pop->safe_psql('postgres',
	"INSERT INTO entries SELECT g, 'person ' || g, '2000-01-01'::date + g FROM generate_series(1, 3000) g");
$biz->safe_psql('postgres',
	"INSERT INTO entries SELECT g, 'company ' || g, '1990-01-01'::date + g FROM generate_series(1, 2000) g");

DataEmbassy::link_sites($pop, $emb, 'population', embassy_db => 'pop', embassy_name => 'embassy1');
DataEmbassy::link_sites($biz, $emb, 'business', embassy_db => 'biz', embassy_name => 'embassy1');
DataEmbassy::link_sites($pop, $emb2, 'population', embassy_name => 'embassy2');

is($pop->safe_psql('postgres', 'SELECT count(DISTINCT slot_name) FROM data_embassy.embassies'),
	'2', 'the population register has two pinned embassies with their own slots');

# Live writes on both registers.
$pop->safe_psql('postgres', q{
	UPDATE entries SET v = v || '*' WHERE id % 4 = 0;
	DELETE FROM entries WHERE id % 9 = 0;
	INSERT INTO entries SELECT g, 'late ' || g, NULL FROM generate_series(3001, 3500) g});
$biz->safe_psql('postgres', q{
	UPDATE entries SET at = at + 1 WHERE id % 3 = 0;
	DELETE FROM entries WHERE id > 1900});

DataEmbassy::wait_caught_up($pop, $emb, 'population', embassy_db => 'pop');
DataEmbassy::wait_caught_up($biz, $emb, 'business', embassy_db => 'biz');
DataEmbassy::wait_caught_up($pop, $emb2, 'population');

DataEmbassy::compare_tables($pop, $emb, 'postgres', 'pop');
DataEmbassy::compare_tables($biz, $emb, 'postgres', 'biz');
DataEmbassy::compare_tables($pop, $emb2, 'postgres', 'postgres');

is($emb->safe_psql('postgres',
		q{SELECT string_agg(register || '@' || database || ':' || state, ',' ORDER BY register)
		  FROM data_embassy.lag}),
	'business@biz:streaming,population@pop:streaming',
	'one lag view shows both registers of the embassy');

# The register's embassies view agrees with each embassy.
ok($pop->poll_query_until('postgres',
		q{SELECT bool_and(active) AND count(*) = 2 FROM data_embassy.embassies}),
	'both embassies are connected to the population register');

# Both embassies survive a restart and keep replicating.
$emb->restart;
$pop->safe_psql('postgres', "INSERT INTO entries VALUES (99999, 'after restart', NULL)");
DataEmbassy::wait_caught_up($pop, $emb, 'population', embassy_db => 'pop');
DataEmbassy::wait_caught_up($pop, $emb2, 'population');
DataEmbassy::compare_tables($pop, $emb, 'postgres', 'pop');
DataEmbassy::compare_tables($pop, $emb2, 'postgres', 'postgres');

$_->stop for ($emb, $emb2, $pop, $biz);
done_testing();
