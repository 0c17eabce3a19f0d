
# Copyright (c) data_embassy developers

# The register's per-table warnings stay out of the embassy's log (issue
# #12, item 5: every reconnect repeated them there, half of its lines).
#
# A table without a replica identity (no primary key, REPLICA IDENTITY
# DEFAULT) gets DELETEs at the register from sessions that have not loaded
# the library (the register does not preload it, so nothing refuses them).
# The output plugin warns once per table and stream ("has no replica
# identity") and sends nothing for those rows, so the stream goes on (an
# UPDATE would be sent without a key and stop the worker on the embassy's
# "neither REPLICA IDENTITY index nor PRIMARY KEY" error).  The walsender
# also sends the WARNING to its client, the embassy's worker, where libpq
# would print it to stderr, that is into the embassy's log, at every
# stream.  Over four streams (three forced reconnects) with three such
# DELETEs each:
#
#	- the register logs the warning once per stream, not once per DELETE;
#	- the embassy's log never holds it at log_min_messages = info;
#	- with log_min_messages = debug1 at the embassy, one more stream logs
#	  it once, as 'message from register "r": WARNING: ...': it does
#	  arrive, and is kept at DEBUG1;
#	- the other table is identical, the keyless table holds at the embassy
#	  the rows deleted at the register (as documented), and once a
#	  TRUNCATE and INSERT at the register rewrite it, every table is
#	  identical and the worker streams.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = q{
CREATE TABLE keyless (a integer, b text);
CREATE TABLE items (id integer PRIMARY KEY, note text);
};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
$reg->safe_psql('postgres',
	q{INSERT INTO keyless SELECT g, 'row ' || g FROM generate_series(1, 100) g});

DataEmbassy::link_sites($reg, $emb, 'r');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM keyless'),
	'100', 'the copy holds the keyless table');

my $slot = $reg->safe_psql('postgres',
	"SELECT slot_name FROM data_embassy.embassies WHERE name = 'embassy'");
my $warning =
  qr/table "public\.keyless" has no replica identity, so its UPDATEs and DELETEs cannot be replicated/;
my $stream_start = qr/starting logical decoding for slot "\Q$slot\E"/;

sub count_in
{
	my ($text, $re) = @_;
	my $n = () = $text =~ /$re/g;
	return $n;
}

# The walsender streaming to the embassy now (bounded wait).
sub stream_pid
{
	my $pid;
	$reg->poll_query_until('postgres',
		qq{SELECT active_pid IS NOT NULL FROM pg_replication_slots
		   WHERE slot_name = '$slot'})
	  or die "no walsender streams slot $slot";
	$pid = $reg->safe_psql('postgres',
		"SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot'");
	return $pid;
}

# Cut the stream at the register and wait for the worker's next one.
sub reconnect
{
	my $old = stream_pid();
	$reg->safe_psql('postgres', "SELECT pg_terminate_backend($old)");
	$reg->poll_query_until('postgres',
		qq{SELECT active_pid IS NOT NULL AND active_pid <> $old
		   FROM pg_replication_slots WHERE slot_name = '$slot'})
	  or die "the worker did not stream again after walsender $old ended";
	return;
}

# Three keyless DELETEs in transactions of their own, then an INSERT into
# the other table, applied.
my $next_a = 1;
my $next_id = 1;

sub keyless_changes
{
	my ($msg) = @_;
	for (1 .. 3)
	{
		$reg->safe_psql('postgres', "DELETE FROM keyless WHERE a = $next_a");
		$next_a++;
	}
	$reg->safe_psql('postgres',
		"INSERT INTO items VALUES ($next_id, 'after deletes $next_id')");
	$next_id++;
	DataEmbassy::wait_caught_up($reg, $emb, 'r', msg => $msg);
	return;
}

# Stream 1 (the one since the link), then three reconnects.
my $rounds = 4;
for my $round (1 .. $rounds)
{
	my $off = -s $reg->logfile;
	reconnect() if $round > 1;
	keyless_changes("round $round applied");
	my $log = slurp_file($reg->logfile, $off);
	is(count_in($log, $warning), 1,
		"round $round: the register warns once for three DELETEs");
	is(count_in($log, $stream_start), $round > 1 ? 1 : 0,
		"round $round: " . ($round > 1 ? 'one new stream' : 'the same stream'));
}

my $rlog = slurp_file($reg->logfile);
my $warned = count_in($rlog, $warning);
my $streams = count_in($rlog, $stream_start);
diag("register: $warned warnings, $streams streams of slot $slot, "
	  . 3 * $rounds . ' keyless DELETEs');
is($warned, $rounds, 'the register warned once per stream with DELETEs');
cmp_ok($warned, '<=', $streams, 'never more than once per stream');
cmp_ok($warned, '<', 3 * $rounds, 'not once per DELETE');

# The embassy received the warning at every stream and logged none of it.
my $elog = slurp_file($emb->logfile);
my $repeated = count_in($elog, qr/has no replica identity/);
diag("embassy: $repeated lines with 'has no replica identity'");
is($repeated, 0, "the embassy's log holds none of the register's warnings");

# At DEBUG1 the embassy logs it, once for the next stream, with the
# register's name: it is received and demoted, not lost.
my $eoff = -s $emb->logfile;
$emb->safe_psql('postgres', 'ALTER SYSTEM SET log_min_messages = debug1');
$emb->reload;
$emb->poll_query_until('postgres',
	"SELECT current_setting('log_min_messages') = 'debug1'")
  or die 'log_min_messages did not change at the embassy';
reconnect();
keyless_changes('the debug1 stream applied');
$elog = slurp_file($emb->logfile, $eoff);
is(count_in($elog, qr/has no replica identity/), 1,
	'at debug1 the embassy logs the warning once for the stream');
like(
	$elog,
	qr/DEBUG:  message from register "r": WARNING:  $warning/,
	'as a DEBUG1 message naming the register');
$emb->safe_psql('postgres', 'ALTER SYSTEM RESET log_min_messages');
$emb->reload;

# The DELETEs never reached the embassy; the rest did.
my $deleted = $next_a - 1;
is($reg->safe_psql('postgres', 'SELECT count(*) FROM keyless'),
	100 - $deleted, "the register deleted $deleted keyless rows");
is($emb->safe_psql('postgres', 'SELECT count(*) FROM keyless'),
	'100', 'the embassy still holds them');
is(DataEmbassy::table_digest($emb, 'postgres', 'items'),
	DataEmbassy::table_digest($reg, 'postgres', 'items'),
	'the other table is identical at the embassy');

# A TRUNCATE and INSERT at the register rewrite the keyless table there.
$reg->safe_psql('postgres', q{
	BEGIN;
	CREATE TEMP TABLE kept AS SELECT * FROM keyless;
	TRUNCATE keyless;
	INSERT INTO keyless SELECT * FROM kept;
	COMMIT;
});
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is(DataEmbassy::lag_row($emb, 'r')->{state}, 'streaming',
	'the worker streams');

done_testing();
