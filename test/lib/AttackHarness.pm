
# Copyright (c) data_embassy developers

=pod

=head1 NAME

AttackHarness - the sites, the man in the middle and the verdict helpers
shared by the attack tests (TAP 070, 180 and 181)

=head1 SYNOPSIS

  use AttackHarness;

  my ($reg, $emb, $proxy, $rkey) = AttackHarness::start(proxy_name => 'attacker');
  my $ekey = AttackHarness::link_through_proxy();

  write_txn('under attack', 10);
  my $told = watch_attack('some attack', 6, markers => ['under attack']);
  converges('some attack') or relink('some attack: recover');
  check_slot('some attack');

=head1 DESCRIPTION

start() builds a register and an embassy cluster with the same two tables,
acct (keyed) and journal (no key: a change applied twice shows up as a
duplicate row), fills the register's, and puts a MitmProxy
(test/lib/MitmProxy.pm) in front of the register, which listens on TCP
loopback with a short walsender timeout so that keepalives are frequent.
The register is called 'population' at the embassy.

TAP 180 and 181 use all of it: link_through_proxy(), and the helpers that
write marked transactions at the register and judge what the embassy shows
while an attack is on (watch_attack, converges, check_slot, relink, ...).
TAP 070 links the sites its own way and uses the sites, the proxy,
write_txn and count_at.

One harness a test script: start() keeps the clusters, the proxy and the
state the helpers share (the journal's next number, the register's slot,
the slot overruns seen) in this module, and the helpers are exported under
the names the tests call.  Helpers that run checks report them at their
caller's line (they raise C<$Test::Builder::Level>), so a check the caller
marks as an expected failure with Test::More's C<local $TODO> (TAP 180's
forged-feedback check) is marked so inside the helper too.

=cut

package AttackHarness;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use DataEmbassy;
use MitmProxy;

our @EXPORT = qw(write_txn write_many count_at q_emb q_reg sample_slot
  wait_applied views embassy_tells watch_attack converges check_slot relink);

my ($reg, $emb, $proxy, $rkey);
my $acct_rows;
my $slot;
my $seq = 1000;
my $slot_overrun = 0;

=pod

=over

=item start(proxy_name => NAME, [acct_rows => N], [embassy_conf => TEXT])

Build the register, the embassy and the proxy (named NAME); acct and journal
get acct_rows rows each at the register (200 unless given), the embassy's
tables stay empty.  embassy_conf is the embassy's extra configuration
(retries every 200 ms and a heartbeat every second unless given).  Returns
the register, the embassy, the proxy and the register's public key.

=cut

sub start
{
	my (%o) = @_;
	die 'start: proxy_name is required' unless $o{proxy_name};
	$acct_rows = $o{acct_rows} // 200;
	$reg = DataEmbassy::register_node('register',
		extra_conf => "listen_addresses = '127.0.0.1'\nwal_sender_timeout = 2s\n");
	$emb = DataEmbassy::embassy_node('embassy',
		extra_conf => $o{embassy_conf}
		  // "data_embassy.retry_interval = 200ms\ndata_embassy.heartbeat_interval = 1s\n");

	my $schema = q{
CREATE TABLE acct (id integer PRIMARY KEY, balance bigint NOT NULL, note text);
-- no key: a change applied twice shows up as a duplicate row
CREATE TABLE journal (n bigint, what text);
ALTER TABLE journal REPLICA IDENTITY FULL;
};
	$reg->safe_psql('postgres', $schema);
	$emb->safe_psql('postgres', $schema);
	$reg->safe_psql('postgres', qq{
	INSERT INTO acct SELECT g, 1000, 'initial' FROM generate_series(1, $acct_rows) g;
	INSERT INTO journal SELECT g, 'initial' FROM generate_series(1, $acct_rows) g;
});

	$proxy = MitmProxy->new(name => $o{proxy_name}, target_port => $reg->port);
	$rkey = DataEmbassy::public_key($reg);
	return ($reg, $emb, $proxy, $rkey);
}

=pod

=item link_through_proxy()

Pin the embassy at the register, watch the slot it gets, add the register
at the embassy through the proxy with an initial copy, stream three
transactions and check (one test, then one per table) that the sites are
identical.  Returns the embassy's public key.

=cut

sub link_through_proxy
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $ekey = DataEmbassy::public_key($emb);
	q_reg("SELECT data_embassy.add_embassy('embassy', '$ekey')");
	$slot = q_reg(q{SELECT slot_name FROM data_embassy.embassy_pins WHERE name = 'embassy'});
	relink('setup');
	write_txn("warm-up $_") foreach 1 .. 3;
	ok(wait_applied(30), 'streaming through the proxy');
	DataEmbassy::compare_tables($reg, $emb, 'postgres');
	return $ekey;
}

=pod

=item write_txn(what, [rows])

One transaction at the register: rows journal rows (3 unless given) marked
what, and an update of one acct row.

=cut

sub write_txn
{
	my ($what, $rows) = @_;
	$rows //= 3;
	my $from = $seq + 1;
	$seq += $rows;
	$reg->safe_psql('postgres', qq{
		BEGIN;
		INSERT INTO journal SELECT g, '$what' FROM generate_series($from, $seq) g;
		UPDATE acct SET balance = balance + 1, note = '$what' WHERE id = $from % $acct_rows + 1;
		COMMIT;
	});
	return;
}

=pod

=item write_many(what, n)

n transactions of one journal row each, marked what, in one session.

=cut

sub write_many
{
	my ($what, $n) = @_;
	my $from = $seq + 1;
	$seq += $n;
	$reg->safe_psql('postgres', qq{
		DO \$\$ BEGIN
		FOR i IN $from .. $seq LOOP
			INSERT INTO journal VALUES (i, '$what');
			COMMIT;
		END LOOP; END \$\$;
	});
	return;
}

=pod

=item count_at(node, what)

How many journal rows marked what the node has.

=item q_emb(sql), q_reg(sql)

safe_psql on database postgres of the embassy, of the register.

=cut

sub count_at
{
	my ($node, $what) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM journal WHERE what = '$what'");
}

sub q_emb { return $emb->safe_psql('postgres', $_[0]); }
sub q_reg { return $reg->safe_psql('postgres', $_[0]); }

=pod

=item sample_slot()

Sample the register's slot (once link_through_proxy() has named it): a
confirmation past the WAL flush position is noted and counted for the next
check_slot().

=cut

sub sample_slot
{
	return unless $slot;
	my $bad = q_reg(
		"SELECT coalesce(confirmed_flush_lsn > pg_current_wal_flush_lsn(), false)
		 FROM pg_replication_slots WHERE slot_name = '$slot'");
	if ($bad eq 't')
	{
		$slot_overrun++;
		note('slot confirmed past the WAL end: ' . q_reg(
			"SELECT confirmed_flush_lsn || ' > ' || pg_current_wal_flush_lsn()
			 FROM pg_replication_slots WHERE slot_name = '$slot'"));
	}
	return;
}

=pod

=item wait_applied(secs)

Wait (at most secs seconds) until the embassy has applied everything the
register had written when called; true if so.

=cut

sub wait_applied
{
	my ($secs) = @_;
	my $target = q_reg('SELECT pg_current_wal_lsn()');
	my $deadline = time() + $secs;
	while (time() < $deadline)
	{
		sample_slot();
		return 1
		  if q_emb(qq{SELECT coalesce(applied_lsn >= '$target', false)
			  FROM data_embassy.lag WHERE register = 'population'}) eq 't';
		usleep(200_000);
	}
	return 0;
}

=pod

=item views()

What the embassy says about the register (lag and failover_status), in one
line.

=cut

sub views
{
	return q_emb(q{
		SELECT 'lag: state=' || l.state || ' lag_bytes=' || coalesce(l.lag_bytes::text, '?')
		  || ' applied=' || coalesce(l.applied_lsn::text, '?')
		  || ' source=' || coalesce(l.source_lsn::text, '?')
		  || ' last_error=' || coalesce(l.last_error, '')
		  || ' | failover_status: state=' || f.state
		  || ' can_promote=' || coalesce(f.can_promote::text, '?')
		  || ' unreplicated=' || coalesce(f.unreplicated_bytes::text, '?')
		  || ' last_contact=' || coalesce(round(extract(epoch FROM now() - f.last_contact_at), 1)::text, 'never') || ' s ago'
		FROM data_embassy.lag l JOIN data_embassy.failover_status f USING (register)
		WHERE l.register = 'population'});
}

=pod

=item embassy_tells()

Is the embassy honest about not being caught up right now?  It is when it
refuses (an error in last_error and a state other than streaming) or when
lag and failover_status show bytes it has not applied.

=cut

sub embassy_tells
{
	return q_emb(q{
		SELECT (l.last_error <> '' AND l.state <> 'streaming')
		    OR NOT l.caught_up OR NOT f.caught_up
		    OR (coalesce(l.lag_bytes, 1) > 0 AND coalesce(f.unreplicated_bytes, 1) > 0)
		FROM data_embassy.lag l JOIN data_embassy.failover_status f USING (register)
		WHERE l.register = 'population'}) eq 't';
}

=pod

=item watch_attack(label, secs, [tick => CODE], [markers => [...]], [stop_when_told => 1])

The verdict of an attack while it is on, sampled over secs seconds while
tick runs about every 300 ms: every time the embassy claims to be caught up
with the register (nothing unapplied, no error), every journal marker must
have as many rows there as at the register (one test).  stop_when_told ends
the watch the first time the embassy refuses or shows the lag.  Returns
how often it did.

=cut

sub watch_attack
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($label, $secs, %o) = @_;
	my $deadline = time() + $secs;
	my ($told, $lied) = (0, 0);
	while (time() < $deadline)
	{
		$o{tick}->() if $o{tick};
		sample_slot();
		my $target = q_reg('SELECT pg_current_wal_lsn()');
		usleep(300_000);
		if (embassy_tells())
		{
			$told++;
			last if $o{stop_when_told};
			next;
		}
		# the embassy says it is caught up: is it?
		next
		  unless q_emb(qq{SELECT coalesce(applied_lsn >= '$target', false)
			FROM data_embassy.lag WHERE register = 'population'}) eq 't';
		foreach my $what (@{ $o{markers} // [] })
		{
			my ($r, $e) = (count_at($reg, $what), count_at($emb, $what));
			if ($r ne $e)
			{
				next if $lied++;
				note("$label: the embassy claims to be caught up, but "
					  . "'$what' has $e rows there and $r at the register; "
					  . views());
			}
		}
	}
	note("$label: " . views());
	ok($lied == 0,
		"$label: never claims to be caught up while changes are lost or doubled");
	return $told;
}

=pod

=item converges(label, [secs])

The proxy's rules cleared and its connections cut: the embassy catches up
within secs seconds (20 unless given) and acct and journal are identical
at both sites (three tests).  True if all three hold.

=cut

sub converges
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($label, $secs) = @_;
	$proxy->clear;
	$proxy->cut;
	my $ok = wait_applied($secs // 20);
	ok($ok, "$label: the embassy catches up once the proxy passes traffic")
	  or note("$label: " . views());
	my $same = 1;
	foreach my $t (qw(acct journal))
	{
		my ($a, $b) = (
			DataEmbassy::table_digest($reg, 'postgres', $t),
			DataEmbassy::table_digest($emb, 'postgres', $t));
		is($b, $a, "$label: table $t identical at the embassy");
		$same &&= $a eq $b;
	}
	return $ok && $same;
}

=pod

=item check_slot(label)

One test: the register's slot was never seen confirmed past its WAL end
since the last check_slot().

=cut

sub check_slot
{
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($label) = @_;
	sample_slot();
	is($slot_overrun, 0,
		"$label: the register's slot is never confirmed past its WAL end");
	$slot_overrun = 0;
	return;
}

=pod

=item relink(label, [nowait => 1])

Start over from identical sites: drop the register at the embassy, empty
its tables, and add it again with an initial copy (through the proxy, whose
rules at that moment apply).  Unless nowait, waits (at most 40 s) for the
copy and returns whether it was done.

=back

=cut

sub relink
{
	my ($label, %o) = @_;
	q_emb(q{SELECT data_embassy.drop_register(name) FROM data_embassy.registers
	        WHERE name = 'population'});
	q_emb('TRUNCATE acct, journal');
	$proxy->cut;
	my $conninfo = $proxy->conninfo('postgres');
	q_emb("SELECT data_embassy.add_register('population', '$conninfo', '$rkey', true)");
	return 1 if $o{nowait};
	my $ok = wait_applied(40);
	note("$label: copy not done: " . views()) unless $ok;
	return $ok;
}

1;
