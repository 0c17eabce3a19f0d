
# Copyright (c) data_embassy developers

=pod

=head1 NAME

DataEmbassy - helpers for data_embassy's TAP tests

=head1 SYNOPSIS

  use DataEmbassy;

  my $reg = DataEmbassy::register_node('population');
  my $emb = DataEmbassy::embassy_node('embassy');
  DataEmbassy::link_sites($reg, $emb, 'population', copy_data => 1);
  DataEmbassy::wait_caught_up($reg, $emb, 'population');
  DataEmbassy::compare_tables($reg, $emb, 'postgres');

=head1 DESCRIPTION

Builds register and embassy clusters on top of PostgreSQL::Test::Cluster,
links them (keys, pin, add_register), waits with bounded timeouts and
compares table contents by ordered digests.

=cut

package DataEmbassy;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Does this server know output_plugin_libraries (15.19 and later)?
sub _knows_output_plugin_libraries
{
	my $bindir = `pg_config --bindir`;
	chomp $bindir;
	my $out = `"$bindir/postgres" --describe-config 2>/dev/null`;
	return $out =~ /^output_plugin_libraries\t/m;
}

my $KNOWS_OPL = _knows_output_plugin_libraries();

=pod

=item register_node(name, %opts)

A started register cluster (wal_level = logical) with the extension
created in database "postgres" and an identity key.  preload => 1 also
preloads the library (a register does not need it); init_extra => [...]
passes options to initdb (for example ['--wal-segsize=1']).

=cut

sub register_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical',
		extra => $opts{init_extra} // []);
	my $conf = qq{
max_replication_slots = 10
max_wal_senders = 10
wal_sender_timeout = 30s
log_min_messages = info
};
	$conf .= "output_plugin_libraries = 'pgoutput, test_decoding, data_embassy'\n"
	  if $KNOWS_OPL;
	$conf .= "shared_preload_libraries = 'data_embassy'\n" if $opts{preload};
	$conf .= $opts{extra_conf} if $opts{extra_conf};
	$node->append_conf('postgresql.conf', $conf);
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION data_embassy');
	$node->safe_psql('postgres', 'SELECT data_embassy.generate_key()');
	return $node;
}

=pod

=item embassy_node(name, %opts)

A started embassy cluster that preloads the library, with the extension
in database "postgres" and an identity key.  register_too => 1 also makes
it ready to be a register after a promotion (wal_level = logical, slots,
walsenders, output_plugin_libraries), as the failback runbook asks.

=cut

sub embassy_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	my $conf = qq{
shared_preload_libraries = 'data_embassy'
max_worker_processes = 16
data_embassy.retry_interval = 500ms
data_embassy.status_interval = 200ms
log_min_messages = info
};
	if ($opts{register_too})
	{
		$conf .= "wal_level = logical\nmax_replication_slots = 10\n"
		  . "max_wal_senders = 10\nwal_sender_timeout = 30s\n";
		$conf .= "output_plugin_libraries = 'data_embassy'\n"
		  if $KNOWS_OPL;
	}
	$conf .= $opts{extra_conf} if $opts{extra_conf};
	$node->append_conf('postgresql.conf', $conf);
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION data_embassy');
	$node->safe_psql('postgres', 'SELECT data_embassy.generate_key()');
	return $node;
}

# Public key of a node's site.
sub public_key
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT data_embassy.public_key()');
}

=pod

=item link_sites(register, embassy, name, %opts)

Pin the embassy at the register and add the register at the embassy.
Options: copy_data (default 1), register_db and embassy_db (default
"postgres"), embassy_name (the pin's name, default "embassy"), conninfo,
schemas (add_register's schemas argument as a text[] literal, such as
'{app}'; default NULL, every schema).

=cut

sub link_sites
{
	my ($reg, $emb, $name, %opts) = @_;
	my $copy = exists $opts{copy_data} ? $opts{copy_data} : 1;
	my $rdb = $opts{register_db} // 'postgres';
	my $edb = $opts{embassy_db} // 'postgres';
	my $pin = $opts{embassy_name} // 'embassy';

	my $ekey = public_key($emb);
	my $rkey = $reg->safe_psql($rdb, 'SELECT data_embassy.public_key()');
	$reg->safe_psql($rdb,
		"SELECT data_embassy.add_embassy('$pin', '$ekey')");
	my $conninfo = $opts{conninfo} // $reg->connstr($rdb);
	$conninfo =~ s/'/''/g;
	$emb->safe_psql($edb,
		"SELECT data_embassy.add_register('$name', '$conninfo', '$rkey', "
		  . ($copy ? 'true' : 'false')
		  . (defined $opts{schemas} ? ", schemas => '$opts{schemas}'" : '')
		  . ")");
	return;
}

=pod

=item wait_caught_up(register, embassy, name, %opts)

Wait until the embassy has applied everything the register had written
when called (its applied_lsn reaches the register's current WAL LSN).
Fails the test on timeout.

=cut

sub wait_caught_up
{
	my ($reg, $emb, $name, %opts) = @_;
	my $rdb = $opts{register_db} // 'postgres';
	my $edb = $opts{embassy_db} // 'postgres';
	my $target = $reg->safe_psql($rdb, 'SELECT pg_current_wal_lsn()');
	my $ok = $emb->poll_query_until($edb,
		qq{SELECT applied_lsn >= '$target' FROM data_embassy.lag
		   WHERE register = '$name' AND database = current_database()});
	if (!$ok)
	{
		my $lag = $emb->safe_psql($edb,
			"SELECT state, applied_lsn, source_lsn, last_error FROM data_embassy.lag");
		diag("embassy did not catch up to $target: $lag");
	}
	return ok($ok, $opts{msg} // "$name caught up to $target");
}

=pod

=item table_digest(node, db, table)

A digest of a table's whole contents, independent of row order: the rows'
count and the MD5 of their sorted MD5s (32 bytes a row, so tables of
millions of rows stay far below the 1 GB string limit).

=cut

sub table_digest
{
	my ($node, $db, $table) = @_;
	return $node->safe_psql($db,
		qq{SELECT count(*) || ':' || coalesce(md5(string_agg(h, '' ORDER BY h)), '')
		   FROM (SELECT md5(t::text) AS h FROM $table t) s});
}

=pod

=item compare_tables(register, embassy, db, [embassy_db])

Compare every user table of the register database with the embassy's
copy; one test per table.  Returns the number of rows compared.

=cut

sub compare_tables
{
	my ($reg, $emb, $db, $edb) = @_;
	$edb //= $db;
	my @tables = split /\n/, $reg->safe_psql($db, q{
		SELECT format('%I.%I', n.nspname, c.relname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'data_embassy')
		  AND n.nspname NOT LIKE 'pg_toast%'
		ORDER BY 1});
	my $rows = 0;
	foreach my $t (@tables)
	{
		my $a = table_digest($reg, $db, $t);
		my $b = table_digest($emb, $edb, $t);
		is($b, $a, "table $t identical at the embassy");
		$rows += (split /:/, $a)[0];
	}
	return $rows;
}

=pod

=item lag_row(embassy, name, [db])

The register's row of data_embassy.lag as a hash.

=cut

sub lag_row
{
	my ($emb, $name, $db) = @_;
	$db //= 'postgres';
	my @cols = qw(state worker_pid source_lsn received_lsn applied_lsn lag_bytes
	  lag_time frames_applied rows_applied last_error);
	my $sql = 'SELECT ' . join(', ', map { "coalesce($_\::text, '')" } @cols)
	  . " FROM data_embassy.lag WHERE register = '$name' AND database = current_database()";
	my @v = split /\|/, $emb->safe_psql($db, $sql), -1;
	my %row;
	@row{@cols} = @v;
	return \%row;
}

=pod

=item wait_state(embassy, name, state, [db])

Wait until the register's state is the one given.

=cut

sub wait_state
{
	my ($emb, $name, $state, $db) = @_;
	$db //= 'postgres';
	return $emb->poll_query_until($db,
		qq{SELECT state FROM data_embassy.lag WHERE register = '$name'
		   AND database = current_database()}, $state);
}

=pod

=item schema_sql()

DDL of the sample tables the tests replicate: keys and no keys, TOAST,
and a wide set of types.  Run it on both sites.

=cut

sub schema_sql
{
	return q{
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TYPE address AS (street text, city text, zip text);
CREATE TABLE people (
	id bigint PRIMARY KEY,
	code text NOT NULL UNIQUE,
	name text,
	born date,
	balance numeric(14,2),
	updated timestamptz
);
CREATE TABLE typed (
	id integer PRIMARY KEY,
	i2 int2, i4 int4, i8 int8, num numeric, f4 float4, f8 float8,
	t text, b bytea, j jsonb, arr int[], tarr text[], ts timestamptz, d date,
	u uuid, flag boolean, m mood, p posint, addr address, iv interval,
	ip inet, big text
);
CREATE TABLE nokey (a integer, b text, c numeric);
ALTER TABLE nokey REPLICA IDENTITY FULL;
CREATE TABLE docs (id integer PRIMARY KEY, body text, extra text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
};
}

=pod

=item typed_rows_sql(from, to)

INSERT of rows id from..to into "typed", covering NULLs, NaN,
infinities, multibyte text and a TOASTed value now and then.

=cut

sub typed_rows_sql
{
	my ($from, $to) = @_;
	return qq{
INSERT INTO typed
SELECT g, (g % 32000)::int2, g * 7, g::int8 * 1000000007,
	CASE WHEN g % 11 = 0 THEN 'NaN'::numeric ELSE g / 7.0 END,
	CASE g % 5 WHEN 0 THEN 'NaN' WHEN 1 THEN 'Infinity' WHEN 2 THEN '-Infinity' ELSE g / 3.0 END,
	CASE g % 4 WHEN 0 THEN 'Infinity' ELSE g * 1.5 END,
	CASE WHEN g % 9 = 0 THEN NULL ELSE 'Tõnis Mägi õäöü 日本 ' || g END,
	decode(md5(g::text), 'hex'),
	jsonb_build_object('k', g, 'arr', jsonb_build_array(1, 'two', null)),
	ARRAY[g, g + 1, NULL], ARRAY['a', NULL, 'ü' || g],
	'2026-01-01 00:00:00+00'::timestamptz + g * interval '1 minute',
	'2000-02-29'::date + g,
	md5(g::text)::uuid, g % 2 = 0,
	(ARRAY['sad', 'ok', 'happy']::mood[])[1 + g % 3],
	1 + g % 100,
	ROW('Main ' || g, 'Tallinn', '1' || g)::address,
	g * interval '1 second', ('10.0.' || (g % 250) || '.1')::inet,
	CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 3200) END
FROM generate_series($from, $to) g;
};
}

=pod

=item start_after_kill(node)

Start a node whose postmaster was SIGKILLed, retrying while its old
children exit (bounded).

=cut

sub start_after_kill
{
	my ($node) = @_;
	for (my $i = 0; $i < $PostgreSQL::Test::Utils::timeout_default; $i++)
	{
		# a failed start leaves the dead postmaster's pid behind
		$node->{_pid} = undef;
		return 1 if $node->start(fail_ok => 1);
		sleep 1;
	}
	BAIL_OUT('could not restart ' . $node->name);
}

=pod

=item sql_quote(string)

The string as an SQL literal.

=cut

sub sql_quote
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

=pod

=item resync_state(embassy, table)

The table's state in data_embassy.table_resyncs ('' when it is not
listed).

=cut

sub resync_state
{
	my ($emb, $table) = @_;
	return $emb->safe_psql('postgres',
		"SELECT state FROM data_embassy.table_resyncs WHERE relation = '$table'::regclass"
	);
}

=pod

=item wait_resync_done(embassy, table, msg)

Wait until the table's copy of its own is 'ready' in table_resyncs; one
test.

=cut

sub wait_resync_done
{
	my ($emb, $table, $msg) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	return ok(
		$emb->poll_query_until('postgres',
			"SELECT state FROM data_embassy.table_resyncs WHERE relation = '$table'::regclass",
			'ready'),
		$msg);
}

=pod

=item no_resync_slot_left(register, msg)

Wait until no temporary slot of a table's copy is left at the register;
one test.

=cut

sub no_resync_slot_left
{
	my ($reg, $msg) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	return ok(
		$reg->poll_query_until('postgres',
			"SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%\\_resync'",
			'0'),
		$msg);
}

1;
