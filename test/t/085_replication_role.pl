
# The embassy connects as a role that has only LOGIN REPLICATION, as the
# README advises: no superuser, no table privileges, no data_embassy_admin.
# The initial copy and the stream still work, the rows leaving the register
# sealed.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = q{
	CREATE TABLE person (id bigserial PRIMARY KEY, code text, name text);
	CREATE TABLE secret_notes (id integer PRIMARY KEY, note text);
};
$reg->safe_psql('postgres', $ddl . q{
	INSERT INTO person (code, name) SELECT 'C' || g, 'n' || g FROM generate_series(1, 1000) g;
	INSERT INTO secret_notes VALUES (1, 'only the register and its embassy may read this');
	CREATE ROLE embassy_repl LOGIN REPLICATION;
});
$emb->safe_psql('postgres', $ddl);

my ($ret, $out, $err) = $reg->psql('postgres', 'SELECT count(*) FROM secret_notes',
	extra_params => ['-U', 'embassy_repl']);
isnt($ret, 0, 'the replication role cannot read the tables itself');

DataEmbassy::link_sites($reg, $emb, 'population', copy_data => 1,
	conninfo => $reg->connstr('postgres') . ' user=embassy_repl');
DataEmbassy::wait_caught_up($reg, $emb, 'population', msg => 'initial copy as the replication role');

$reg->safe_psql('postgres', q{
	INSERT INTO person (code, name) SELECT 'S' || g, 's' || g FROM generate_series(1, 500) g;
	UPDATE secret_notes SET note = note || '!';
});
DataEmbassy::wait_caught_up($reg, $emb, 'population', msg => 'streaming as the replication role');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is($reg->safe_psql('postgres',
		q{SELECT usename FROM pg_stat_replication WHERE application_name LIKE 'data_embassy%'}),
	'embassy_repl', 'the walsender serves the replication role');

$emb->stop;
$reg->stop;
done_testing();
