# Copyright (c) data_embassy developers

# add_register(..., schemas => ...): only the tables and sequences of the
# listed schemas are replicated.  The register leaves the others out of the
# copy and the stream (the embassy never even hears of them), and the
# embassy, which cannot trust that request (it travels unsealed), ignores
# them itself when a man in the middle removes it.  A new table in a listed
# schema is applied without add_replicated_table(); the sealed marker of a
# copy without rows catches a copy request whose with_rows was flipped.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;
use MitmProxy;

my $reg = DataEmbassy::register_node('register',
	extra_conf => "listen_addresses = '127.0.0.1'\n");
my $emb = DataEmbassy::embassy_node('embassy',
	extra_conf => "data_embassy.retry_interval = 200ms\n");

my $ddl = q{
	CREATE SCHEMA app;
	CREATE SCHEMA other;
	CREATE SCHEMA "Sales Dept";
	CREATE TABLE app.t (id integer PRIMARY KEY, v text);
	CREATE TABLE other.t (id integer PRIMARY KEY, v text);
	CREATE TABLE "Sales Dept"."Orders" (id integer PRIMARY KEY, v text);
	CREATE SEQUENCE app.s;
	CREATE SEQUENCE other.s;
};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
$reg->safe_psql('postgres', q{
	INSERT INTO app.t SELECT g, 'app' FROM generate_series(1, 20) g;
	INSERT INTO other.t SELECT g, 'other' FROM generate_series(1, 30) g;
	INSERT INTO "Sales Dept"."Orders" SELECT g, 'sales' FROM generate_series(1, 5) g;
	SELECT nextval('app.s') FROM generate_series(1, 5);
	SELECT nextval('other.s') FROM generate_series(1, 7);
});
# the embassy's own rows in the schema it does not replicate
$emb->safe_psql('postgres', "INSERT INTO other.t VALUES (1, 'embassy')");

# --- bad schemas arguments are refused before anything is stored ---
my $rkey = $reg->safe_psql('postgres', 'SELECT data_embassy.public_key()');
foreach my $case (
	[ q{'{}'}, qr/schemas must not be empty/ ],
	[ q{'{app,NULL}'}, qr/schemas must not contain null values/ ],
	[ q{'{app,nowhere}'}, qr/schema "nowhere" does not exist/ ],
	[ q{'{app,app}'}, qr/schema "app" is listed twice in schemas/ ],
	[ q{'{pg_catalog}'}, qr/schema "pg_catalog" cannot be replicated/ ],
	[ q{'{data_embassy}'}, qr/schema "data_embassy" cannot be replicated/ ],
	[ q{'{{app},{other}}'}, qr/schemas must be a one-dimensional array/ ],
	[ q{'{""}'}, qr/schemas must not contain an empty schema name/ ])
{
	my ($sql_arg, $re) = @$case;
	my ($ret, $out, $err) = $emb->psql('postgres',
		"SELECT data_embassy.add_register('bad', 'host=/nonexistent', '$rkey', schemas => $sql_arg)"
	);
	like($err, $re, "add_register(schemas => $sql_arg) refused");
}
is($emb->safe_psql('postgres', 'SELECT count(*) FROM data_embassy.registers'),
	'0', 'nothing stored by the refused calls');

my $proxy = MitmProxy->new(name => 'wire', target_port => $reg->port);
DataEmbassy::link_sites($reg, $emb, 'r',
	conninfo => $proxy->conninfo('postgres'),
	schemas => '{app,"Sales Dept"}');
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming after the copy');
DataEmbassy::wait_caught_up($reg, $emb, 'r');

is($emb->safe_psql('postgres', q{
	SELECT schemas FROM data_embassy.lag WHERE register = 'r'}),
	'{app,"Sales Dept"}', 'the lag view shows the replicated schemas');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM app.t'), '20',
	'app.t copied');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM "Sales Dept"."Orders"'),
	'5', 'a schema name that needs quoting is copied too');
is($emb->safe_psql('postgres', "SELECT string_agg(v, ',') FROM other.t"),
	'embassy', 'other.t is not copied: the embassy keeps its own row');
is( $emb->safe_psql('postgres', q{
	SELECT string_agg(relid::regclass::text, ',' ORDER BY relid::regclass::text)
	FROM data_embassy.replicated_relations}),
	'"Sales Dept"."Orders",app.t',
	'only tables of the listed schemas are replicas');
is($emb->psql('postgres', "INSERT INTO other.t VALUES (2, 'embassy')"), 0,
	'other.t is the embassy\'s own, writable here');
is($emb->psql('postgres', "INSERT INTO app.t VALUES (100, 'local')"), 3,
	'app.t is guarded');

# --- the stream ---
$reg->safe_psql('postgres', q{
	INSERT INTO app.t VALUES (21, 'app');
	UPDATE other.t SET v = 'changed at home';
	INSERT INTO other.t VALUES (99, 'other');
	SELECT nextval('app.s');
	SELECT nextval('other.s');
});
DataEmbassy::wait_caught_up($reg, $emb, 'r');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM app.t'), '21',
	'a change to app.t applied');
is($emb->safe_psql('postgres', "SELECT string_agg(v, ',' ORDER BY id) FROM other.t"),
	'embassy,embassy', 'changes to other.t are not');
is( $emb->safe_psql('postgres', q{
	SELECT string_agg(relid::regclass::text, ',') FROM data_embassy.replicated_sequences}),
	'app.s', 'only the sequence of the listed schema is reported');
is($emb->safe_psql('postgres', 'SELECT is_called FROM other.s'), 'f',
	'the other sequence is untouched');
ok( !$emb->log_contains('outside the schemas it replicates here'),
	'the register sent nothing of the other schemas');

# a new table in a listed schema: declared by the schemas argument
foreach my $node ($reg, $emb)
{
	$node->safe_psql('postgres',
		'CREATE TABLE app.late (id integer PRIMARY KEY, v text)');
}
$reg->safe_psql('postgres', q{
	INSERT INTO app.late VALUES (1, 'late');
	CREATE TABLE other.late (id integer PRIMARY KEY, v text);
	INSERT INTO other.late VALUES (1, 'late');
});
DataEmbassy::wait_caught_up($reg, $emb, 'r');
is($emb->safe_psql('postgres', 'SELECT v FROM app.late'), 'late',
	'a new table in a listed schema is applied');
is($emb->safe_psql('postgres', q{SELECT state FROM data_embassy.lag WHERE register = 'r'}),
	'streaming', 'a new table in another schema, which the embassy lacks, does not stop it');

# --- a man in the middle removes the request ---
# The stream's "schemas" option is stripped: the register sends every
# schema, and the embassy ignores the others itself.
$proxy->rewrite_query(q{, "schemas" '[^']*'}, '');
$proxy->cut;
$reg->safe_psql('postgres', q{
	INSERT INTO other.t VALUES (100, 'other');
	INSERT INTO app.t VALUES (22, 'app');
});
DataEmbassy::wait_caught_up($reg, $emb, 'r');
ok($proxy->stats->{query_rewritten} >= 1, 'the proxy removed the option');
$emb->wait_for_log(
	qr/register "r" sent table "other\.t", which is outside the schemas it replicates here/);
pass('the embassy noticed a table of another schema in the stream');
is($emb->safe_psql('postgres', "SELECT string_agg(v, ',' ORDER BY id) FROM other.t"),
	'embassy,embassy', 'and did not apply it');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM app.t'), '22',
	'app.t still follows');

# The copy's schemas argument is replaced by NULL: the copy holds every
# schema's rows, and the embassy applies only the listed ones.
$proxy->clear;
my $rewritten = $proxy->stats->{query_rewritten};
my $logpos = -s $emb->logfile;
$proxy->rewrite_query(q{copy_frames\(\$1, \$2, \$3, \$4, \$5, \$6\)},
	'copy_frames($1, $2, $3, $4, NULL::text[], $6)');
$emb->safe_psql('postgres', "SELECT data_embassy.resync_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'copied again');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
ok($proxy->stats->{query_rewritten} > $rewritten,
	'the proxy removed the copy\'s schemas');
ok( $emb->log_contains(
		qr/register "r" sent table "other\.t", which is outside the schemas it replicates here/,
		$logpos),
	'the copy held the other schema');
is($emb->safe_psql('postgres', "SELECT string_agg(v, ',' ORDER BY id) FROM other.t"),
	'embassy,embassy', 'rows of another schema in the copy are not applied');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM app.t'), '22',
	'app.t copied again');

# The copy's with_rows is flipped: the register seals a copy without rows,
# and the embassy, which asked for rows, refuses it.
$proxy->clear;
$proxy->rewrite_query(q{\$5, \$6\)}, '$5, NOT $6)');
$emb->safe_psql('postgres', "SELECT data_embassy.resync_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'error'), 'a copy without rows is refused');
like(DataEmbassy::lag_row($emb, 'r')->{last_error},
	qr/initial copy of register "r" is not the copy the embassy asked for/,
	'last_error says the copy is not the one asked for');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM app.t'), '22',
	'the replica keeps its rows');
$proxy->clear;
$emb->safe_psql('postgres', "SELECT data_embassy.retry_register('r')");
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'the next attempt copies');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM app.t'), '22',
	'app.t as at the register');

$proxy->stop;
$emb->stop;
$reg->stop;
done_testing();
