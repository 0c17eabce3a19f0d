
# Copyright (c) data_embassy developers

# A man in the middle on the replication connection (test/lib/MitmProxy.pm)
# tampers with the frames: flips a byte in a sealed body and in a header,
# drops, repeats, swaps and truncates frames, injects a frame of an older
# stream and one of another register, replays an old stream's first frame,
# forges keepalives, stalls and cuts the connection; finally the slot is
# advanced behind the embassy's back (a gap).  For each attack the embassy
# applies nothing from the bad frame, data_embassy.lag shows "error" or
# "disconnected" with a last_error saying what was wrong, the worker
# retries by itself, and once the proxy behaves every table is identical
# on both sites.  The figures (frames tampered, refusals logged) are
# printed with note().
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use DataEmbassy;
use AttackHarness;

# The two sites and the proxy between them (test/lib/AttackHarness.pm):
# the register listens on TCP loopback behind the proxy, with short
# walsender timeouts so that keepalives are frequent; 500 acct rows.
my ($reg, $emb, $proxy) = AttackHarness::start(proxy_name => 'wire',
	acct_rows => 500,
	embassy_conf => "data_embassy.retry_interval = 200ms\n");
DataEmbassy::link_sites($reg, $emb, 'population',
	copy_data => 1,
	conninfo => $proxy->conninfo('postgres'));
DataEmbassy::wait_caught_up($reg, $emb, 'population',
	msg => 'initial copy through the proxy');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
my $slot = $reg->safe_psql('postgres',
	q{SELECT slot_name FROM data_embassy.embassy_pins WHERE name = 'embassy'});

# Some streaming through the proxy, so that frames are recorded.
write_txn("warm-up $_") foreach 1 .. 5;
DataEmbassy::wait_caught_up($reg, $emb, 'population', msg => 'streaming through the proxy');

my @first_stream = grep { $_->{kind} eq 'S' } $proxy->recorded_frames;
ok(@first_stream >= 2, scalar(@first_stream) . ' stream frames recorded');

# Embassy log lines that report refused frames or streams, since $offset.
sub refusals_since
{
	my ($offset) = @_;
	my $log = slurp_file($emb->logfile, $offset);
	my @lines = grep {
		/ERROR: .*(frame|stream|register|chain|sequence|gap|authenticat)/i
	} split /\n/, $log;
	return scalar @lines;
}

my %figures;

# Poll a query until it returns 't', for at most $secs seconds.
sub poll_for
{
	my ($node, $sql, $secs) = @_;
	my $deadline = time() + $secs;
	while (time() < $deadline)
	{
		return 1 if $node->safe_psql('postgres', $sql) eq 't';
		usleep(100_000);
	}
	return 0;
}

# One attack: set the rule, write a marked transaction, keep writing small
# transactions (so that a next frame comes) until the embassy reports the
# expected error; check what must not have been applied; clear the rule
# and check that everything arrives.
sub attack
{
	my ($label, %a) = @_;
	my $marker = "attack $label";
	my $log_offset = -s $emb->logfile;
	my $tampered0 = $proxy->stats->{frames_tampered};

	$a{setup}->() if $a{setup};
	write_txn($marker, 10);

	my $seen;
	my $deadline = time() + 60;
	my $ticks = 0;
	while (time() < $deadline)
	{
		write_txn("tick $label", 1) if $ticks++ % 3 == 0;
		my $row = DataEmbassy::lag_row($emb, 'population');
		if (($row->{state} eq 'error' || $row->{state} eq 'disconnected')
			&& $row->{last_error} =~ $a{expect})
		{
			$seen = $row;
			last;
		}
		usleep(100_000);
	}
	ok($seen, "$label: the embassy refuses it")
	  or diag('lag: ' . join(', ',
			map { "$_=" . DataEmbassy::lag_row($emb, 'population')->{$_} }
			  qw(state last_error)));
	note("$label: state $seen->{state}, last_error: $seen->{last_error}")
	  if $seen;

	# Keep the attack up while the worker retries: every new stream is
	# attacked and refused again.
	$deadline = time() + 30;
	while ($seen && time() < $deadline)
	{
		last
		  if $proxy->stats->{frames_tampered} - $tampered0 >= 3
		  && refusals_since($log_offset) >= 3;
		write_txn("tick $label", 1);
		usleep(200_000);
	}
	ok(refusals_since($log_offset) >= 3,
		"$label: refused again on every retry while the attack lasts");

	# While the rule holds, the marked transaction never lands.
	if ($a{marker_absent})
	{
		is(count_at($emb, $marker), '0',
			"$label: nothing from the attacked frame is applied");
	}
	$a{during}->() if $a{during};

	$proxy->clear;
	$a{after}->() if $a{after};
	DataEmbassy::wait_caught_up($reg, $emb, 'population',
		msg => "$label: the worker retries and catches up");
	is(count_at($emb, $marker), '10', "$label: the marked transaction arrives once");
	my $tampered = $proxy->stats->{frames_tampered} - $tampered0;
	my $refused = refusals_since($log_offset);
	$figures{$label} = [ $tampered, $refused ];
	note("$label: $tampered frames tampered, $refused refusals logged");
	return;
}

# 1. a byte of a sealed body flipped: the signature (checked first) fails
attack('flip body',
	setup => sub { $proxy->tamper('flip', every_stream => 1) },
	expect => qr/authenticat|signature/i,
	marker_absent => 1);

# 2. a byte of the clear header flipped (end_lsn, bytes 104-111 of a v3
#    header): the header is MAC'd, signed and is associated data
attack('flip header',
	setup => sub { $proxy->tamper('flip', every_stream => 1, offset => 111) },
	expect => qr/authenticat|signature/i,
	marker_absent => 1);

# 3. a frame dropped: the next one skips a sequence number
attack('drop',
	setup => sub { $proxy->tamper('drop', every_stream => 1) },
	expect => qr/sequence|out of order|missing/i,
	marker_absent => 1);

# 4. a frame sent twice: the copy repeats a sequence number; the original
#    is applied once (journal has no key, a second apply would show)
attack('repeat',
	setup => sub { $proxy->tamper('repeat', every_stream => 1) },
	expect => qr/sequence|out of order|repeated/i);

# 5. two frames swapped
attack('swap',
	setup => sub { $proxy->tamper('swap', every_stream => 1) },
	expect => qr/sequence|out of order|reordered/i,
	marker_absent => 1);

# 6. a frame cut in half, the protocol message length fixed
attack('truncate',
	setup => sub { $proxy->tamper('truncate', every_stream => 1) },
	expect => qr/truncated/i,
	marker_absent => 1);

# 7. a frame of an older stream spliced in as a stream's second frame
my ($old2) = grep { $_->{seq} == 2 } @first_stream;
$old2 //= $first_stream[-1];
attack('inject older stream',
	setup => sub {
		$proxy->tamper('inject', every_stream => 1, nth => 2,
			frame => $old2->{index});
	},
	expect => qr/another stream|another session|out of order|authenticat/i);

# 8. an old stream's first frame replayed in front of a new stream: it
#    authenticates (same register, same embassy), but what it holds is
#    already applied and must not be applied again; the real first frame
#    then belongs to another stream
my $first_conn = $first_stream[0]{conn};
my @prefix = grep { $_->{conn} == $first_conn } @first_stream;
my $last_data = 0;
foreach my $i (0 .. $#prefix)
{
	$last_data = $i if $prefix[$i]{plain_len} > 0;
}
@prefix = @prefix[ 0 .. $last_data ];
note('replaying frames ' . join(', ',
		map { "seq $_->{seq} ($_->{plain_len} plain bytes)" } @prefix));
attack('replay old stream start',
	setup => sub {
		$proxy->tamper('inject', every_stream => 1, nth => 1,
			frame => join('+', map { $_->{index} } @prefix), data_only => 0);
	},
	expect => qr/another stream|another session|out of order|gap|past|authenticat|start/i);

# 9. a frame of another register (sealed for this embassy by a second
#    register cluster, read there by hand)
my $reg2 = DataEmbassy::register_node('register2');
my $ekey = DataEmbassy::public_key($emb);
$reg2->safe_psql('postgres', q{CREATE TABLE acct (id integer PRIMARY KEY, balance bigint NOT NULL, note text)});
$reg2->safe_psql('postgres', "SELECT data_embassy.add_embassy('embassy', '$ekey')");
my $slot2 = $reg2->safe_psql('postgres',
	q{SELECT slot_name FROM data_embassy.embassy_pins WHERE name = 'embassy'});
$reg2->safe_psql('postgres',
	"SELECT pg_create_logical_replication_slot('$slot2', 'data_embassy')");
$reg2->safe_psql('postgres', q{INSERT INTO acct VALUES (1, -1000000, 'forged')});
$reg2->safe_psql('postgres', q{INSERT INTO acct VALUES (2, -1000000, 'forged')});
my @foreign = split /\n/, $reg2->safe_psql('postgres', qq{
	SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes(
		'$slot2', NULL, NULL, 'embassy_key', '$ekey')});
ok(@foreign >= 1, scalar(@foreign) . ' frames read from the other register');
my $foreign_hex = $foreign[-1];
attack('inject another register',
	setup => sub {
		$proxy->tamper('inject', every_stream => 1, nth => 2,
			hex => $foreign_hex);
	},
	expect => qr/another register|another stream|another session|authenticat/i);
is($emb->safe_psql('postgres', q{SELECT count(*) FROM acct WHERE note = 'forged'}),
	'0', 'nothing of the other register is applied');
$reg2->stop;

# 10. forged keepalives claim a WAL position far ahead: the embassy must
#     neither confirm nor skip anything it has not received in a frame
{
	my $log_offset = -s $emb->logfile;
	$proxy->forge_keepalives(64 * 1024 * 1024);
	my $deadline = time() + 6;
	my $overrun = 0;
	while (time() < $deadline)
	{
		write_txn('under forged keepalives', 2);
		$overrun++
		  if $reg->safe_psql('postgres',
			"SELECT confirmed_flush_lsn > pg_current_wal_lsn() FROM pg_replication_slots WHERE slot_name = '$slot'"
		  ) eq 't';
		usleep(200_000);
	}
	my $forged = $proxy->stats->{keepalives_forged};
	$proxy->forge_keepalives(0);
	ok($forged > 0, "$forged keepalives forged");
	is($overrun, 0,
		'the register never sees a confirmation past its own WAL end');
	DataEmbassy::wait_caught_up($reg, $emb, 'population',
		msg => 'forged keepalives: caught up');
	is(count_at($emb, 'under forged keepalives'),
		count_at($reg, 'under forged keepalives'),
		'forged keepalives: no change skipped');
	# Keepalives are not sealed: a forged one may move source_lsn for a
	# while, but once real frames and keepalives come again the lag view
	# must show the register's real position, not the forged one.
	my $sane = poll_for($emb,
		q{SELECT lag_bytes < 1024 * 1024 FROM data_embassy.lag WHERE register = 'population'},
		15);
	ok($sane, 'forged keepalives: the lag view recovers the real position')
	  or diag('lag after forging: ' . $emb->safe_psql('postgres',
			q{SELECT source_lsn || ' applied ' || applied_lsn || ' lag_bytes ' || lag_bytes
			  FROM data_embassy.lag}));
	$figures{'forged keepalives'} = [ $forged, refusals_since($log_offset) ];
}

# 11. a stall longer than the status interval only adds lag
{
	$proxy->stall(4);
	write_txn('during stall', 10);
	usleep(1_500_000);
	is(count_at($emb, 'during stall'), '0', 'stall: nothing arrives while stalled');
	DataEmbassy::wait_caught_up($reg, $emb, 'population', msg => 'stall: caught up after');
	is(count_at($emb, 'during stall'), '10', 'stall: the transaction arrives once');
}

# 12. the connection cut, and refused for a while: "disconnected"
{
	$proxy->refuse(3);
	$proxy->cut;
	write_txn('during cut', 10);
	my $ok = $emb->poll_query_until('postgres',
		q{SELECT state = 'disconnected' AND last_error <> ''
		  FROM data_embassy.lag WHERE register = 'population'});
	ok($ok, 'cut: the embassy shows disconnected');
	note('cut: last_error: ' . DataEmbassy::lag_row($emb, 'population')->{last_error});
	DataEmbassy::wait_caught_up($reg, $emb, 'population', msg => 'cut: caught up after');
	is(count_at($emb, 'during cut'), '10', 'cut: the transaction arrives once');
}

DataEmbassy::compare_tables($reg, $emb, 'postgres');

# 13. a gap: while the embassy is away, someone with replication rights
#     advances its slot.  The next stream starts past what the embassy has
#     applied; it must refuse it rather than silently lose the changes.
{
	my $log_offset = -s $emb->logfile;
	$proxy->refuse(600);
	$proxy->cut;
	ok($reg->poll_query_until('postgres',
			"SELECT NOT active FROM pg_replication_slots WHERE slot_name = '$slot'"),
		'gap: the slot is released');
	write_txn('skipped by the thief', 10);
	$reg->safe_psql('postgres',
		"SELECT pg_replication_slot_advance('$slot', pg_current_wal_lsn())");
	write_txn('after the gap', 10);
	$proxy->clear;
	my $ok = $emb->poll_query_until('postgres',
		q{SELECT state IN ('error', 'disconnected') AND last_error ~* '(gap|past|missing|skipped|ahead)'
		  FROM data_embassy.lag WHERE register = 'population'});
	ok($ok, 'gap: the embassy refuses a stream that starts past what it applied');
	note('gap: last_error: ' . DataEmbassy::lag_row($emb, 'population')->{last_error});
	is(count_at($emb, 'after the gap'), '0',
		'gap: nothing after the gap is applied');
	$figures{gap} = [ 0, refusals_since($log_offset) ];

	# Recovery: copy the register again.
	$emb->safe_psql('postgres', "SELECT data_embassy.drop_register('population')");
	$emb->safe_psql('postgres', 'TRUNCATE acct, journal');
	$emb->safe_psql('postgres',
		"SELECT data_embassy.add_register('population', '"
		  . $proxy->conninfo('postgres') . "', '"
		  . $reg->safe_psql('postgres', 'SELECT data_embassy.public_key()')
		  . "', true)");
	DataEmbassy::wait_caught_up($reg, $emb, 'population',
		msg => 'gap: copied again from the register');
	DataEmbassy::compare_tables($reg, $emb, 'postgres');
}

my $st = $proxy->stats;
my ($total_tampered, $total_refused) = (0, 0);
foreach my $k (sort keys %figures)
{
	note(sprintf('%-28s %4d tampered %4d refused', $k, @{ $figures{$k} }));
	$total_tampered += $figures{$k}[0];
	$total_refused += $figures{$k}[1];
}
note("proxy: $st->{connections} connections, $st->{repl_connections} replication "
	  . "connections, $st->{frames_seen} frames seen, $st->{frames_tampered} tampered "
	  . "($total_tampered in attacks), $total_refused refusals logged");
is(DataEmbassy::lag_row($emb, 'population')->{state}, 'streaming', 'streaming at the end');

$proxy->stop;
$emb->stop;
$reg->stop;
done_testing();
