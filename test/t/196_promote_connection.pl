
# Copyright (c) data_embassy developers

# promote() that fails leaves no connection to the register behind in the
# session that called it (issue #13: promote() once asked the register for
# its WAL position over a replication connection of its own, and when
# IDENTIFY_SYSTEM failed after the connection was made, the connection
# stayed open for the rest of the session).
#
# The register is reached through a forwarder that, on a connection opened
# while a flag file exists, passes nothing more once its client has sent
# IDENTIFY_SYSTEM: a register that stops answering after the connection is
# made.  The worker is paused (it keeps one connection, opened before, to
# watch the register's position), so no sealed heartbeat comes and
# promote(wait_for_catchup) fails; then, with the session still open, the
# register has no connection from the embassy but the paused worker's, and
# the session's backend holds no TCP socket.
use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register',
	extra_conf => "listen_addresses = '127.0.0.1'\n");
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = 'CREATE TABLE t (id int PRIMARY KEY)';
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);

# The forwarder, in a child process.
my $flag = PostgreSQL::Test::Utils::tempdir() . '/hold_identify';
my $holds = PostgreSQL::Test::Utils::tempdir() . '/holds';
my $listen = IO::Socket::INET->new(
	Listen => 8,
	LocalAddr => '127.0.0.1',
	LocalPort => 0,
	Proto => 'tcp',
	ReuseAddr => 1) or die "could not listen: $!";
my $fwd_port = $listen->sockport;

sub forward
{
	my $sel = IO::Select->new($listen);
	my (%peer, %client);

	for (;;)
	{
		foreach my $s ($sel->can_read(1))
		{
			if ($s == $listen)
			{
				my $c = $listen->accept or next;
				my $srv = IO::Socket::INET->new(
					PeerAddr => '127.0.0.1',
					PeerPort => $reg->port,
					Proto => 'tcp');
				if (!$srv)
				{
					close $c;
					next;
				}
				$peer{$c} = $srv;
				$peer{$srv} = $c;
				$client{$c} = {
					buf => '',
					started => 0,
					held => 0,
					armed => -e $flag
				};
				$sel->add($c, $srv);
				next;
			}

			next unless $peer{$s};	# closed with its other end
			my $data;
			my $n = sysread($s, $data, 65536);
			if (!$n)
			{
				my $o = $peer{$s};
				$sel->remove($s, $o);
				delete @peer{ $s, $o };
				delete @client{ $s, $o };
				close $s;
				close $o;
				next;
			}

			my $st = $client{$s};
			if (!$st)
			{
				syswrite($peer{$s}, $data);
				next;
			}
			next if $st->{held};

			# client to server: the startup packet, then typed messages
			$st->{buf} .= $data;
			my $out = '';
			for (;;)
			{
				my $hdr = $st->{started} ? 5 : 4;
				last if length($st->{buf}) < $hdr;
				my $len = $st->{started}
				  ? 1 + unpack('N', substr($st->{buf}, 1, 4))
				  : unpack('N', $st->{buf});
				last if length($st->{buf}) < $len;
				my $msg = substr($st->{buf}, 0, $len, '');
				if (   $st->{started}
					&& substr($msg, 0, 1) eq 'Q'
					&& substr($msg, 5) =~ /^IDENTIFY_SYSTEM/
					&& $st->{armed})
				{
					$st->{held} = 1;
					PostgreSQL::Test::Utils::append_to_file($holds, "held\n");
					last;
				}
				$st->{started} = 1;
				$out .= $msg;
			}
			syswrite($peer{$s}, $out) if length $out;
		}
	}
}

my $fwd_pid = fork();
die "fork: $!" unless defined $fwd_pid;
if ($fwd_pid == 0)
{
	# never run the parent's END blocks (they stop the nodes)
	eval { forward(); };
	POSIX::_exit(0);
}
close $listen;

DataEmbassy::link_sites($reg, $emb, 'reg', copy_data => 0,
	conninfo => "host=127.0.0.1 port=$fwd_port dbname=postgres "
	  . 'sslmode=disable gssencmode=disable');
ok(DataEmbassy::wait_state($emb, 'reg', 'streaming'), 'streaming');
$reg->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(1, 10)');
DataEmbassy::wait_caught_up($reg, $emb, 'reg');

$emb->safe_psql('postgres', q{SELECT data_embassy.pause_register('reg')});
ok(DataEmbassy::wait_state($emb, 'reg', 'paused'), 'paused');
ok( $reg->poll_query_until('postgres',
		'SELECT count(*) = 1 FROM pg_stat_activity WHERE client_addr IS NOT NULL'),
	"the register has one connection from the embassy, the paused worker's");
my $worker_app = $reg->safe_psql('postgres',
	'SELECT application_name FROM pg_stat_activity WHERE client_addr IS NOT NULL');

# TCP sockets a process holds open.
sub tcp_sockets
{
	my ($pid) = @_;
	my %inode;
	foreach my $f (glob("/proc/$pid/fd/*"))
	{
		my $l = readlink($f) // next;
		$inode{$1} = 1 if $l =~ /^socket:\[(\d+)\]$/;
	}
	my $n = 0;
	foreach my $table ('/proc/net/tcp', '/proc/net/tcp6')
	{
		next unless -r $table;
		foreach my $line (split /\n/, slurp_file($table))
		{
			my @f = split ' ', $line;
			$n++ if defined $f[9] && $inode{ $f[9] };
		}
	}
	return $n;
}

# promote() fails (no worker runs to prove the register caught up), in a
# session that goes on; the register stops answering any IDENTIFY_SYSTEM,
# and the session's statement_timeout ends any wait for it.
PostgreSQL::Test::Utils::append_to_file($flag, '');
my $session = $emb->background_psql('postgres', on_error_stop => 0);
my $pid = $session->query_safe('SELECT pg_backend_pid()');
is(tcp_sockets($pid), 0, 'the session holds no TCP socket before');
$session->query_safe(q{SET statement_timeout = '5s'});
my $res = $session->query(
	q{SELECT register FROM data_embassy.promote('reg', wait_for_catchup => '2 s')});
like($session->{stderr}, qr/ERROR:  register "reg" could not be proven caught up/,
	'promote() fails');
$session->{stderr} = '';

is($reg->safe_psql('postgres', qq{
		SELECT string_agg(application_name, ', ') FROM pg_stat_activity
		WHERE client_addr IS NOT NULL AND application_name <> '$worker_app'}),
	'', "with the session still open, the register has no connection from the embassy but the worker's");
is(tcp_sockets($pid), 0, 'the session holds no TCP socket after');
is($session->query_safe('SELECT 1'), '1', 'the session goes on');
$session->quit;
note 'IDENTIFY_SYSTEM held: ' . (-e $holds ? slurp_file($holds) : "none\n");

# Not promoted: the worker resumes and catches up.
unlink $flag;
is($emb->safe_psql('postgres',
		'SELECT count(*) FROM data_embassy.promotions'),
	'0', 'nothing was promoted');
$emb->safe_psql('postgres', q{SELECT data_embassy.resume_register('reg')});
$reg->safe_psql('postgres', 'INSERT INTO t SELECT generate_series(11, 20)');
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'resumed: caught up');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

kill 'KILL', $fwd_pid;
waitpid($fwd_pid, 0);

done_testing();
