
# Copyright (c) data_embassy developers

# The initial copy is bound to its slot and to its attempt
# (issue #10, "Initial copy bound to its slot").  Shows that:
#  - copy_frames() seals only in the snapshot the walsender that created
#    the embassy's slot exported and still holds: called in a fresh
#    snapshot (the import stripped), with a made-up or stale snapshot name,
#    or with another walsender's snapshot, it is refused with a clear error;
#    in the right snapshot it seals;
#  - a copy through a proxy works, its sequences travel with it, and the
#    origin starts at the consistent point the register sealed;
#  - a rewritten CREATE_REPLICATION_SLOT reply is refused;
#  - frame 1 of an earlier copy, injected into a later one, is refused
#    ("frame belongs to another session"); afterwards every table is
#    identical.
# The proxy here is a small one of this test's own: MitmProxy.pm attacks
# the replication stream, while the copy travels as the rows of a query.
use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use IPC::Run;
use POSIX ();
use Time::HiRes qw(usleep);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register',
	extra_conf => "listen_addresses = '127.0.0.1'\n");
my $emb = DataEmbassy::embassy_node('embassy');

my $schema = q{
CREATE TABLE acct (id bigserial PRIMARY KEY, balance bigint NOT NULL);
CREATE SEQUENCE ticket;
};
$reg->safe_psql('postgres', $schema);
$emb->safe_psql('postgres', $schema);
$reg->safe_psql('postgres', q{
	INSERT INTO acct (balance) SELECT g FROM generate_series(1, 300) g;
	SELECT nextval('ticket') FROM generate_series(1, 57);
});

my $ekey = DataEmbassy::public_key($emb);
my $rkey = DataEmbassy::public_key($reg);
$reg->safe_psql('postgres', "SELECT data_embassy.add_embassy('embassy', '$ekey')");
my $slot = $reg->safe_psql('postgres',
	q{SELECT slot_name FROM data_embassy.embassy_pins WHERE name = 'embassy'});
my $session = 'ab' x 32;

# ---------------------------------------------------------------------
# copy_frames() called by hand
# ---------------------------------------------------------------------

# psql -c in a REPEATABLE READ transaction; returns (ok, stdout, stderr).
sub rr_copy
{
	my ($import, $snapshot) = @_;
	my $sql = "BEGIN ISOLATION LEVEL REPEATABLE READ;\n";
	$sql .= "SET TRANSACTION SNAPSHOT '$import';\n" if defined $import;
	$sql .= "SELECT count(*) FROM data_embassy.copy_frames('$ekey', "
	  . "'$session', '$slot', '$snapshot');\nCOMMIT;\n";
	my ($ret, $out, $err) = $reg->psql('postgres', $sql,
		extra_params => [ '-v', 'ON_ERROR_STOP=1' ]);
	return ($ret == 0, $out, $err);
}

# A replication connection that creates a slot, exporting its snapshot,
# and holds it (the snapshot lives until its next command).
sub export_slot
{
	my ($name) = @_;
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $reg->connstr('postgres') . ' replication=database' ],
		'<', \$in, '>', \$out, '2>', \$err);
	$in .= "CREATE_REPLICATION_SLOT $name LOGICAL data_embassy (SNAPSHOT 'export');\n";
	my $timer = IPC::Run::timer($PostgreSQL::Test::Utils::timeout_default);
	$h->pump until $out =~ /\n/ || $err ne '' || $timer->is_expired;
	my @f = split /\|/, $out;
	die "could not create slot $name: $err" unless @f >= 3;
	return ($h, \$in, $f[1], $f[2]);
}

sub release_slot
{
	my ($h, $in) = @_;
	$$in .= "\\q\n";
	$h->finish;
	return;
}

my ($ok, $out, $err);

# The embassy's own slot, made by hand, its snapshot held.
my ($sh, $sin, $slsn, $ssnap) = export_slot($slot);

# A made-up snapshot name.
($ok, $out, $err) = rr_copy(undef, '0000000A-0000000B-1');
ok(!$ok && $err =~ /initial copy does not run in the snapshot exported for replication slot "\Q$slot\E"/
	  && $err =~ /No snapshot "0000000A-0000000B-1" is exported now/,
	'a made-up snapshot name is refused') or diag($err);

# Not a snapshot name at all.
($ok, $out, $err) = rr_copy(undef, '../../postgresql.conf');
ok(!$ok && $err =~ /invalid snapshot identifier/, 'a path is no snapshot name')
  or diag($err);

# Another slot's walsender, its snapshot imported: not the embassy's slot.
my ($oh, $oin, $olsn, $osnap) = export_slot('not_the_embassys');
($ok, $out, $err) = rr_copy($osnap, $osnap);
ok(!$ok && $err =~ /whose last command did not create the slot/,
	"another slot's exported snapshot is refused") or diag($err);
release_slot($oh, $oin);
$reg->safe_psql('postgres', q{SELECT pg_drop_replication_slot('not_the_embassys')});

# An ordinary session's exported snapshot: not a walsender.
{
	my ($in2, $out2, $err2) = ('', '', '');
	my $h = IPC::Run::start([ 'psql', '-XAtq', '-d', $reg->connstr('postgres') ],
		'<', \$in2, '>', \$out2, '2>', \$err2);
	$in2 .= "BEGIN ISOLATION LEVEL REPEATABLE READ;\nSELECT pg_export_snapshot();\n";
	my $timer = IPC::Run::timer($PostgreSQL::Test::Utils::timeout_default);
	$h->pump until $out2 =~ /\n/ || $timer->is_expired;
	chomp(my $psnap = $out2);
	($ok, $out, $err) = rr_copy($psnap, $psnap);
	ok(!$ok && $err =~ /not a walsender of this database/,
		"an ordinary session's exported snapshot is refused") or diag($err);
	$in2 .= "COMMIT;\n\\q\n";
	$h->finish;
}

# a transaction commits after the export: a fresh snapshot differs
$reg->safe_psql('postgres', q{INSERT INTO acct (balance) VALUES (0); DELETE FROM acct WHERE balance = 0});
($ok, $out, $err) = rr_copy(undef, $ssnap);
ok(!$ok && $err =~ /its import was stripped or replaced/,
	'the right snapshot name without its import is refused') or diag($err);
($ok, $out, $err) = rr_copy($ssnap, $ssnap);
ok($ok && $out =~ /^\d+$/ && $out > 0,
	"in the slot's exported snapshot the copy is sealed ($out frames)") or diag($err);
{
	my $rc = $reg->psql('postgres',
		"SELECT count(*) FROM data_embassy.copy_frames('$ekey', '$session', '$slot', '$ssnap')",
		stderr => \$err);
	ok($rc != 0 && $err =~ /isolation level READ COMMITTED/,
		'the copy refuses a READ COMMITTED transaction') or diag($err);
}
release_slot($sh, $sin);

# The snapshot is gone with the walsender's next command: stale now.
($ok, $out, $err) = rr_copy(undef, $ssnap);
ok(!$ok && $err =~ /No snapshot "\Q$ssnap\E" is exported now/,
	'a stale snapshot name is refused') or diag($err);
$reg->safe_psql('postgres', "SELECT pg_drop_replication_slot('$slot')");

# ---------------------------------------------------------------------
# A proxy that sees the copy: records its frames, can inject a recorded
# frame 1 into a later copy, and can rewrite CREATE_REPLICATION_SLOT's
# reply.  Commands are files in $dir.
# ---------------------------------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir;

sub proxy_main
{
	my ($listen, $target) = @_;
	my $parent = getppid();
	my %conns;    # fileno => connection
	my $sel = IO::Select->new($listen);
	my $next_id = 1;

	while (getppid() == $parent)
	{
		foreach my $s ($sel->can_read(0.2))
		{
			if ($s == $listen)
			{
				my $cli = $listen->accept or next;
				my $srv = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
					PeerPort => $target) or do { close $cli; next };
				my $c = { id => $next_id++, cli => $cli, srv => $srv, in => '' };
				$conns{ fileno $cli } = $c;
				$conns{ fileno $srv } = $c;
				$sel->add($cli, $srv);
				next;
			}
			my $c = $conns{ fileno $s } or next;
			my $n = sysread($s, my $buf, 65536);
			if (!$n)
			{
				$sel->remove($c->{cli}, $c->{srv});
				delete $conns{ fileno $c->{cli} };
				delete $conns{ fileno $c->{srv} };
				close $c->{cli};
				close $c->{srv};
				next;
			}
			if ($s == $c->{cli})
			{
				proxy_write($c->{srv}, $buf);
				next;
			}
			$c->{in} .= $buf;
			my $outbuf = '';
			while (length $c->{in} >= 5)
			{
				my ($type, $len) = unpack('a N', $c->{in});
				last if length $c->{in} < 1 + $len;
				my $msg = substr($c->{in}, 0, 1 + $len, '');
				$msg = proxy_row($c, $msg) if $type eq 'D';
				$outbuf .= $msg;
			}
			proxy_write($c->{cli}, $outbuf) if length $outbuf;
		}
	}
	return;
}

sub proxy_write
{
	my ($sock, $buf) = @_;
	while (length $buf)
	{
		my $n = syswrite($sock, $buf);
		return unless defined $n;
		substr($buf, 0, $n) = '';
	}
	return;
}

sub slurp_bin
{
	my ($path) = @_;
	open my $fh, '<:raw', $path or die "$path: $!";
	local $/;
	my $data = <$fh>;
	close $fh;
	return $data;
}

sub spew_bin
{
	my ($path, $data) = @_;
	open my $fh, '>:raw', $path or die "$path: $!";
	print $fh $data;
	close $fh;
	return;
}

# One DataRow: a copy frame, or the reply to CREATE_REPLICATION_SLOT.
sub proxy_row
{
	my ($c, $msg) = @_;
	my $ncols = unpack('n', substr($msg, 5, 2));
	my @cols;
	my $pos = 7;
	for (1 .. $ncols)
	{
		my $l = unpack('l>', substr($msg, $pos, 4));
		$pos += 4;
		push @cols, $l < 0 ? undef : substr($msg, $pos, $l);
		$pos += $l if $l > 0;
	}
	my $changed = 0;
	if ($ncols == 1 && defined $cols[0] && length $cols[0] > 176
		&& substr($cols[0], 0, 4) eq 'DEMB' && substr($cols[0], 5, 1) eq 'C')
	{
		my ($hi, $lo) = unpack('N N', substr($cols[0], 88, 8));
		my $seq = $hi * 4294967296 + $lo;
		if ($seq == 1)
		{
			spew_bin("$dir/copy_$c->{id}_1", $cols[0]);
			if (-e "$dir/inject")
			{
				$cols[0] = slurp_bin("$dir/inject");
				unlink "$dir/inject";
				spew_bin("$dir/injected", '');
				$changed = 1;
			}
		}
	}
	elsif ($ncols == 4 && defined $cols[3] && $cols[3] eq 'data_embassy'
		&& defined $cols[1] && $cols[1] =~ m{^([0-9A-F]+)/([0-9A-F]+)$})
	{
		spew_bin("$dir/reply_$c->{id}", $cols[1]);
		if (-e "$dir/forge")
		{
			my $lsn = hex($1) * 4294967296 + hex($2) + 0x100000;
			$cols[1] = sprintf('%X/%X', int($lsn / 4294967296), $lsn % 4294967296);
			unlink "$dir/forge";
			spew_bin("$dir/forged", $cols[1]);
			$changed = 1;
		}
	}
	return $msg unless $changed;
	my $body = pack('n', $ncols);
	$body .= defined $_ ? pack('l>', length $_) . $_ : pack('l>', -1) foreach @cols;
	return 'D' . pack('N', 4 + length $body) . $body;
}

my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
	Listen => 16, ReuseAddr => 1) or die "listen: $!";
my $proxy_pid = fork();
die "fork: $!" unless defined $proxy_pid;
if ($proxy_pid == 0)
{
	proxy_main($listen, $reg->port);
	POSIX::_exit(0);
}
my $proxy_port = $listen->sockport;
close $listen;
END { kill 'TERM', $proxy_pid if $proxy_pid; }

my $conninfo = "host=127.0.0.1 port=$proxy_port dbname=postgres "
  . 'sslmode=disable gssencmode=disable';

# ---------------------------------------------------------------------
# The copy through the proxy; its sequences; the sealed starting point
# ---------------------------------------------------------------------
my $log_offset = -s $emb->logfile;
$emb->safe_psql('postgres',
	"SELECT data_embassy.add_register('population', '$conninfo', '$rkey', true)");
DataEmbassy::wait_caught_up($reg, $emb, 'population', msg => 'initial copy through the proxy');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
my @copies = glob("$dir/copy_*_1");
is(scalar @copies, 1, 'the copy went through the proxy');

is($emb->safe_psql('postgres', q{SELECT last_value FROM ticket}), '57',
	'a sequence travels in the copy');
ok($emb->safe_psql('postgres', q{SELECT last_value >= 300 FROM acct_id_seq}) eq 't',
	"a table's sequence travels in the copy");

# The origin starts at the slot's consistent point: the end of the record
# where the register's decoding found it, as its own reply said.
sub lsn_num
{
	my ($hi, $lo) = split m{/}, $_[0];
	return hex($hi) * 4294967296 + hex($lo);
}
my $elog = slurp_file($emb->logfile, $log_offset);
my ($ready) = $elog =~ m{"population" is ready to stream from ([0-9A-F]+/[0-9A-F]+) after its initial copy};
my @found = slurp_file($reg->logfile) =~ m{found consistent point at ([0-9A-F]+/[0-9A-F]+)}g;
my ($reply) = map { slurp_bin($_) } glob("$dir/reply_*");
is($ready, $reply, "the origin starts at the slot's consistent point");
ok(defined $ready && @found
	  && lsn_num($ready) > lsn_num($found[-1])
	  && lsn_num($ready) - lsn_num($found[-1]) < 8192,
	'which ends the record where decoding found it')
  or diag('embassy: ' . ($ready // 'none') . ", register: @found");
ok($emb->safe_psql('postgres',
		"SELECT remote_lsn >= '$ready' FROM pg_replication_origin_status") eq 't',
	'the origin is at or past the sealed consistent point');
ok($reg->safe_psql('postgres',
		"SELECT confirmed_flush_lsn >= '$ready' AND confirmed_flush_lsn <= pg_current_wal_lsn()
		 FROM pg_replication_slots WHERE slot_name = '$slot'") eq 't',
	"the register's slot is confirmed between the consistent point and its WAL end");

# ---------------------------------------------------------------------
# A rewritten CREATE_REPLICATION_SLOT reply
# ---------------------------------------------------------------------
sub wait_log
{
	my ($offset, $re) = @_;
	foreach (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
	{
		return 1 if slurp_file($emb->logfile, $offset) =~ $re;
		usleep(100_000);
	}
	return 0;
}

$log_offset = -s $emb->logfile;
spew_bin("$dir/forge", '');
$emb->safe_psql('postgres', "SELECT data_embassy.resync_register('population')");
ok(wait_log($log_offset,
		qr/reply of register "population" to CREATE_REPLICATION_SLOT was rewritten/),
	'a rewritten consistent point is refused');
ok(-e "$dir/forged", 'the proxy did rewrite it');
ok(DataEmbassy::wait_state($emb, 'population', 'streaming'), 'streaming after the next attempt');
$reg->safe_psql('postgres', q{INSERT INTO acct (balance) SELECT g FROM generate_series(1, 10) g});
DataEmbassy::wait_caught_up($reg, $emb, 'population', msg => 'caught up after the forged reply');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# ---------------------------------------------------------------------
# Frame 1 of an earlier copy injected into a later one
# ---------------------------------------------------------------------
$log_offset = -s $emb->logfile;
spew_bin("$dir/inject", slurp_bin($copies[0]));
$emb->safe_psql('postgres', "SELECT data_embassy.resync_register('population')");
ok(wait_log($log_offset, qr/frame belongs to another session/),
	'a frame of an earlier copy is refused: it belongs to another session');
ok(-e "$dir/injected", 'the proxy did inject it');
ok(DataEmbassy::wait_state($emb, 'population', 'streaming'), 'streaming after the next attempt');
$reg->safe_psql('postgres', q{
	INSERT INTO acct (balance) SELECT g FROM generate_series(1, 10) g;
	SELECT nextval('ticket');
});
DataEmbassy::wait_caught_up($reg, $emb, 'population', msg => 'caught up after the replayed copy');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is(DataEmbassy::lag_row($emb, 'population')->{state}, 'streaming', 'state is streaming');

done_testing();
