
# Copyright (c) data_embassy developers

=pod

=head1 NAME

MitmProxy - a man-in-the-middle TCP proxy for data_embassy's TAP tests

=head1 SYNOPSIS

  use MitmProxy;

  my $proxy = MitmProxy->new(name => 'wire', target_port => $reg->port);
  my $conninfo = 'host=127.0.0.1 port=' . $proxy->port
    . ' dbname=postgres sslmode=disable gssencmode=disable';
  ...
  $proxy->tamper('flip');                  # next data frame: flip a byte
  $proxy->tamper('drop', every_stream => 1, nth => 2);
  $proxy->wait_tampered(1);
  $proxy->clear;
  $proxy->stall(3);
  $proxy->cut;
  my $st = $proxy->stats;                  # frames_seen, frames_tampered...
  $proxy->stop;

=head1 DESCRIPTION

The proxy listens on 127.0.0.1 (a free port) and forwards every connection
to 127.0.0.1:target_port.  It runs in a forked child process driven over
two pipes: each method sends one command line and waits (bounded) for the
child's one-line reply.

Both directions are split into protocol messages (after the startup
packets; when the server accepts an SSLRequest or a GSSENCRequest the rest
of that connection passes untouched).  Client to server, queries ('Q' and
'P') and Standby Status Updates can be rewritten (see rewrite_start_lsn,
rewrite_snapshot, forge_feedback), and the answers to IDENTIFY_SYSTEM and
CREATE_REPLICATION_SLOT in the server's DataRow (rewrite_identify,
rewrite_slot_lsn).

Server to client, a CopyData message ('d') whose payload starts with 'w'
(XLogData: 'w', dataStart, walEnd, sendTime, 25 bytes) and whose data
starts with the frame magic "DEMB" carries one data_embassy frame; so does
a one-column DataRow of copy_frames() that starts with "DEMB" (the
initial copy).  The frame's version byte (offset 4) says its layout: v1 is
a 132-byte clear header and the sealed body, v2 a 160-byte header, the
sealed body and a 64-byte signature (issue #10).  Frames of both paths
are recorded (and can be replayed on a later connection: replay_stream,
replay_copy); stream frames can be hidden all at once (hide_frames) and,
when a rule says so, attacked one by one:

  flip      XOR one byte inside the sealed body (or at "offset")
  drop      do not forward the frame
  repeat    forward it twice
  swap      hold it and forward it after the next frame
  truncate  cut it to "keep" bytes (default: header + half the sealed body)
            and fix the message length, so the protocol stays valid
  inject    send another frame (recorded earlier by this proxy: frame =>
            its index, or several indexes joined by '+'; or hex => the
            frame as hex; or forge => a command that gets this frame's
            session key as hex and prints a frame as hex) before this
            one, with this message's XLogData header; replace => 1 sends
            it instead of this one
  reseal    replace the frame by what a command prints (hex): the command
            gets the session key the client gave this connection (hex,
            from START_REPLICATION as the client sent it, before any
            rewrite) and the frame (hex); "command" names it
  mangle    v3 frames: change the trailer or the version, "how" says how:
            strip_sig (clear the SIGNED flag and drop the signature),
            cut_sig (drop the signature, flag kept), fake_sig (set the
            SIGNED flag and append 64 garbage bytes), bad_sig (overwrite
            the signature with garbage), cut_mac (drop the 32-byte MAC,
            a signature kept), flip_mac (flip one bit of the MAC), v2 (the
            same frame in the v2 layout: version 2, 160-byte header with
            a 16-byte session, no MAC, a 64-byte signature)

Keepalives ('d' messages whose payload starts with 'k': walEnd,
sendTime, replyRequested) pass unchanged unless forge_keepalives(N) is on:
then each one's walEnd is moved N bytes ahead and a reply is requested,
as a forger on an unencrypted path could.  Every other message, the
startup and the non-CopyData protocol pass through unchanged.  Commands that act on connections: stall (hold both
directions of every connection for N seconds), cut (close every
connection), refuse (close new connections at once for N seconds).

A rule with then_hide => 1 turns hide_frames on once it has fired (the
frames after it vanish until clear()).

A rule applies to the nth frame (default 1) that matches it: of kind 'S'
(default; kind => 'C' or '*'), and with a body (data_only, default 1;
position frames carry none); with signed => 1 (or 0) only v3 frames that
carry (or do not carry) the register's signature match.  By default a rule fires once, on whichever
connection; every_stream => 1 makes it fire on the nth matching frame of
every replication connection, this one included, until clear() (or until
it has fired "count" times).

Queries can also be rewritten as text (rewrite_query: a Perl pattern and
its literal replacement, for 'Q' and 'P' messages alike) and a Bind
message's parameter replaced (rewrite_bind), which is how copy_frames()
receives its session key.

Every wait is bounded; the child exits when told to, when its command pipe
closes, or when its parent is gone.

=cut

package MitmProxy;

use strict;
use warnings;

use Carp;
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use IO::Handle;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time usleep);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

use constant {
	FRAME_HEADER_V1 => 132,
	FRAME_HEADER_V2 => 160,
	FRAME_SIGNATURE_V2 => 64,
	FRAME_HEADER_V3 => 176,
	FRAME_MAC_V3 => 32,
	FRAME_SIGNATURE_V3 => 64,
	FRAME_SIGNED_V3 => 0x0004,
	XLOGDATA_HEADER => 25,
	SSL_REQUEST_CODE => 80877103,
	GSSENC_REQUEST_CODE => 80877104,
	MAX_RECORDED => 5000,
};

# ---------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------

=pod

=head1 METHODS

=over

=item MitmProxy->new(target_port => N, [target_host => '127.0.0.1'],
[name => 'mitm'], [port => N])

Start the proxy.  Dies when the child does not come up within the
default timeout.

=cut

sub new
{
	my ($class, %opts) = @_;
	croak 'target_port is required' unless $opts{target_port};
	my $self = {
		name => $opts{name} // 'mitm',
		target_host => $opts{target_host} // '127.0.0.1',
		target_port => $opts{target_port},
		port => $opts{port} // PostgreSQL::Test::Cluster::get_free_port(),
		timeout => $opts{timeout} // $PostgreSQL::Test::Utils::timeout_default,
		owner => $$,
	};
	$self->{logfile} =
	  "$PostgreSQL::Test::Utils::log_path/mitm_$self->{name}.log";
	bless $self, $class;

	# Bind in the parent so that the port is ours before anybody uses it.
	my $listen = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => $self->{port},
		Proto => 'tcp',
		Listen => 16,
		ReuseAddr => 1)
	  or croak "mitm: cannot listen on 127.0.0.1:$self->{port}: $!";

	pipe(my $cmd_r, my $cmd_w) or croak "pipe: $!";
	pipe(my $rep_r, my $rep_w) or croak "pipe: $!";
	my $parent = $$;
	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		close $cmd_w;
		close $rep_r;
		my $status = 0;
		eval {
			_child_main($self, $listen, $cmd_r, $rep_w, $parent);
			1;
		} or do {
			print STDERR "mitm $self->{name}: $@";
			$status = 1;
		};
		# Skip the parent's END blocks (they belong to the test).
		POSIX::_exit($status);
	}
	close $listen;
	close $cmd_r;
	close $rep_w;
	$cmd_w->autoflush(1);
	$self->{pid} = $pid;
	$self->{cmd} = $cmd_w;
	$self->{rep} = $rep_r;
	$self->{rep_buf} = '';
	my $hello = $self->_command('ping');
	croak "mitm: child did not start: $hello" unless $hello eq 'pong';
	return $self;
}

=pod

=item port()

The port the proxy listens on (host 127.0.0.1).

=cut

sub port { return $_[0]->{port}; }

=pod

=item conninfo(dbname)

A libpq conninfo that reaches the target through the proxy in the clear.

=cut

sub conninfo
{
	my ($self, $dbname) = @_;
	$dbname //= 'postgres';
	return "host=127.0.0.1 port=$self->{port} dbname=$dbname "
	  . 'sslmode=disable gssencmode=disable';
}

# Send one command line, return the reply line (without newline).
sub _command
{
	my ($self, @words) = @_;
	croak 'mitm: proxy stopped' unless $self->{pid};
	my $line = join(' ', @words);
	croak 'mitm: a command is one line' if $line =~ /\n/;
	local $SIG{PIPE} = 'IGNORE';
	print { $self->{cmd} } "$line\n" or croak "mitm: command pipe: $!";

	my $deadline = time() + $self->{timeout};
	my $sel = IO::Select->new($self->{rep});
	while ($self->{rep_buf} !~ /\n/)
	{
		my $left = $deadline - time();
		croak "mitm: no reply to \"$words[0]\" within $self->{timeout} s"
		  if $left <= 0;
		next unless $sel->can_read($left);
		my $n = sysread($self->{rep}, $self->{rep_buf}, 1 << 20,
			length $self->{rep_buf});
		next if !defined $n && $! == EINTR;
		croak "mitm: child went away" unless $n;
	}
	$self->{rep_buf} =~ s/^(.*?)\n//s;
	my $reply = $1;
	croak "mitm: $reply" if $reply =~ /^error/;
	return $reply;
}

=pod

=item tamper(op, %opts)

Add a rule; see the description above for ops and options: nth,
every_stream, count, kind, data_only, then_hide, offset (flip), keep (truncate),
frame (inject: an index of recorded_frames(), or several joined by '+'),
hex (inject: a frame given as hex), forge (inject: a command printing a
frame for the session key it is given), replace (inject), command
(reseal), how (mangle), signed (match signed or unsigned v3 frames only).

=cut

sub tamper
{
	my ($self, $op, %opts) = @_;
	croak "mitm: unknown op $op"
	  unless $op =~ /^(flip|drop|repeat|swap|truncate|inject|reseal|mangle)$/;
	my %rule = (
		op => $op,
		nth => 1,
		every_stream => 0,
		count => 0,
		kind => 'S',
		data_only => 1,
		%opts);
	my @kv;
	foreach my $k (sort keys %rule)
	{
		my $v = $rule{$k};
		croak "mitm: bad value for $k" if $v =~ /[\s=]/;
		push @kv, "$k=$v";
	}
	return $self->_command('rule', @kv);
}

=pod

=item clear()

Forget every rule, release a held (swapped) frame and end a stall.

=cut

sub clear { return $_[0]->_command('clear'); }

=pod

=item stall(seconds)

Hold every byte of every connection, both ways, for that long (new
connections too); then forward what was held.

=cut

sub stall { return $_[0]->_command('stall', $_[1]); }

=pod

=item cut()

Close every connection now (both sides).

=cut

sub cut { return $_[0]->_command('cut'); }

=pod

=item refuse(seconds)

For that long, close every new connection as soon as it is accepted.

=cut

sub refuse { return $_[0]->_command('refuse', $_[1]); }

=pod

=item forge_keepalives(bytes)

From now on, move the walEnd of every keepalive that many bytes ahead and
request a reply (0 stops it).

=cut

sub forge_keepalives { return $_[0]->_command('keepalive', $_[1]); }

=pod

=item hide_frames(on)

Hidden lag: while on, drop every sealed frame of every replication
connection (data and position frames alike) and let keepalives and
everything else through.  Frames are still recorded.

=cut

sub hide_frames { return $_[0]->_command('hide', $_[1] ? 1 : 0); }

=pod

=item rewrite_identify(spec), rewrite_slot_lsn(spec), rewrite_start_lsn(spec),
forge_feedback(spec)

Until clear() (or spec 'off'), rewrite a position in the clear.  spec is
"+N" (N bytes ahead), "-N" (N bytes back) or an LSN "X/Y" (set it):

  rewrite_identify    xlogpos in the server's answer to IDENTIFY_SYSTEM
  rewrite_slot_lsn    consistent_point in the answer to
                      CREATE_REPLICATION_SLOT
  rewrite_start_lsn   the start LSN of the client's START_REPLICATION
  forge_feedback      flush and apply of the client's Standby Status
                      Updates ('r'); write is raised to flush if below

Message lengths are fixed so that the protocol stays valid.

=cut

sub _spec
{
	my ($spec) = @_;
	croak "mitm: bad position spec $spec"
	  unless $spec =~ m{^([-+]\d+|[0-9A-Fa-f]+/[0-9A-Fa-f]+|off)$};
	return $spec;
}
sub rewrite_identify { return $_[0]->_command('identify', _spec($_[1])); }
sub rewrite_slot_lsn { return $_[0]->_command('slot_lsn', _spec($_[1])); }
sub rewrite_start_lsn { return $_[0]->_command('start_lsn', _spec($_[1])); }
sub forge_feedback { return $_[0]->_command('feedback', _spec($_[1])); }

=pod

=item rewrite_snapshot(mode, [hold => seconds])

Until clear(), rewrite the client's "SET TRANSACTION SNAPSHOT '...'"
(simple Query or Parse): mode 'replace' puts "SET TRANSACTION ISOLATION
LEVEL REPEATABLE READ" in its place (the client sees the same success, and
its transaction takes a fresh snapshot at its first query), 'strip'
removes the statement (an empty query), 'off' stops.  With hold, what the
client sends next on that connection is held that many seconds, so that
the fresh snapshot is taken later still.

=cut

sub rewrite_query
{
	my ($self, $pattern, $with) = @_;
	return $self->_command('query_sub', 'off') unless defined $pattern;
	return $self->_command('query_sub', unpack('H*', $pattern),
		unpack('H*', $with // ''));
}

sub rewrite_snapshot
{
	my ($self, $mode, %opts) = @_;
	return $self->_command('snapshot', $mode, ($opts{hold} // 0) + 0);
}

=pod

=item rewrite_query(pattern, replacement), rewrite_query(undef)

Until clear() or rewrite_query(undef), replace every match of the Perl
regular expression pattern in the text of the client's queries (simple
Query or Parse) with the literal replacement (both may hold spaces; they
travel hex-encoded; each rewritten query counts in the stats as
query_rewritten).  Several rules apply in the order given.  The text the
first rule matched, as the client sent it, is what rewritten_seen()
returns as "query".

=cut

=pod

=item rewrite_bind(index, value), rewrite_bind(undef)

From now on the parameter number "index" (from 0) of every Bind message
with at least index + 1 text parameters is replaced by "value"; undef
stops, and so does clear().  The last value replaced is what
rewritten_seen() returns as "bind".

=cut

sub rewrite_bind
{
	my ($self, $index, $value) = @_;
	return $self->_command('bind', 'off') unless defined $index;
	return $self->_command('bind', $index + 0, unpack('H*', $value));
}

=pod

=item rewritten_seen()

A hash: "query", the last text rewrite_query() matched, and "bind", the
last Bind parameter rewrite_bind() replaced, each as it came from the
client.

=cut

sub rewritten_seen
{
	my ($self) = @_;
	my $reply = $self->_command('rewritten');
	my %h = map { my ($k, $v) = split /=/, $_, 2; ($k, pack('H*', $v // '')) }
	  split / /, $reply;
	return \%h;
}

=pod

=item replay_stream(conn), replay_copy(conn)

Replay: on the next connection other than "conn" that carries frames of
that path (stream: XLogData of a replication connection; copy: rows of
copy_frames()), send the frames recorded on connection "conn" instead,
and drop that connection's own frames for the rest of its life.  Fires
once; 'off' cancels one not yet fired.

=cut

sub replay_stream { return $_[0]->_command('replay', 'stream', $_[1]); }
sub replay_copy { return $_[0]->_command('replay', 'copy', $_[1]); }

=pod

=item seen()

The last positions seen in the clear before any rewrite, as a hash:
identify (IDENTIFY_SYSTEM's xlogpos), slot (a consistent_point), start
(START_REPLICATION's LSN), feedback (a status update's flush).

=cut

sub seen
{
	my ($self) = @_;
	my %h = map { split /=/, $_, 2 } split / /, $self->_command('seen');
	return \%h;
}

=pod

=item stats()

Counters as a hash: connections, repl_connections, open, frames_seen,
frames_tampered, and tampered_<op> per op, keepalives_seen,
keepalives_forged, rules (still active).

=cut

sub stats
{
	my ($self) = @_;
	my %h = map { split /=/, $_, 2 } split / /, $self->_command('stats');
	return \%h;
}

=pod

=item wait_tampered(n, [timeout])

Wait until at least n frames have been tampered with; returns true if so.
While waiting, calls the optional code reference "tick" (e.g. to make
the register write something) about every 200 ms.

=cut

sub wait_tampered
{
	my ($self, $n, %opts) = @_;
	my $deadline = time() + ($opts{timeout} // $self->{timeout});
	while (time() < $deadline)
	{
		return 1 if $self->stats->{frames_tampered} >= $n;
		$opts{tick}->() if $opts{tick};
		usleep(200_000);
	}
	return 0;
}

=pod

=item recorded_frames()

The frames recorded so far (the last 5000), as a list of hashes:
index, conn (connection number), seq, kind, flags, plain_len, sealed_len,
len, tampered (0/1), and stream (the ephemeral key's first hex digits).

=cut

sub recorded_frames
{
	my ($self) = @_;
	my $reply = $self->_command('frames');
	my @frames;
	foreach my $f (split / /, $reply)
	{
		next if $f eq 'ok';
		my %h = map { split /:/, $_, 2 } split /,/, $f;
		push @frames, \%h;
	}
	return @frames;
}

=pod

=item frame_hex(index)

A recorded frame as hex, exactly as the register sent it.

=cut

sub frame_hex { return $_[0]->_command('hex', $_[1]); }

=pod

=item stop()

Stop the child (bounded) and wait for it.

=cut

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	eval { $self->_command('quit'); };
	close $self->{cmd};
	close $self->{rep};
	my $deadline = time() + 10;
	while (time() < $deadline)
	{
		last if waitpid($self->{pid}, POSIX::WNOHANG()) != 0;
		usleep(50_000);
	}
	if (waitpid($self->{pid}, POSIX::WNOHANG()) == 0)
	{
		kill 'KILL', $self->{pid};
		waitpid($self->{pid}, 0);
	}
	$self->{pid} = undef;
	return;
}

sub DESTROY
{
	my ($self) = @_;
	local ($., $@, $!, $^E, $?);
	# Only the process that started the proxy stops it.
	$self->stop if $self->{pid} && $self->{owner} == $$;
	return;
}

=pod

=back

=cut

# ---------------------------------------------------------------------
# Child side
# ---------------------------------------------------------------------

# Child state, global to the child process only.
my %C;

sub _log
{
	my ($msg) = @_;
	return unless $C{log};
	my $t = sprintf('%.3f', time() - $C{t0});
	print { $C{log} } "[$t] $msg\n";
	return;
}

sub _child_main
{
	my ($self, $listen, $cmd_r, $rep_w, $parent) = @_;

	# The parent must not run DESTROY for our copy of $self.
	$self->{pid} = undef;
	$SIG{PIPE} = 'IGNORE';
	$SIG{INT} = $SIG{TERM} = sub { POSIX::_exit(0); };

	my $log;
	if (open($log, '>>', $self->{logfile}))
	{
		$log->autoflush(1);
	}
	else
	{
		$log = undef;
	}
	%C = (
		self => $self,
		log => $log,
		t0 => time(),
		listen => $listen,
		cmd => $cmd_r,
		rep => $rep_w,
		cmd_buf => '',
		conns => [],
		next_conn => 1,
		rules => [],
		next_rule => 1,
		stall_until => 0,
		refuse_until => 0,
		keepalive_ahead => 0,
		recorded => [],
		next_frame => 0,
		hide_frames => 0,
		identify => undef,
		slot_lsn => undef,
		start_lsn => undef,
		feedback => undef,
		snapshot_mode => '',
		snapshot_hold => 0,
		replay_stream => undef,
		replay_copy => undef,
		bind_index => undef,
		bind_value => undef,
		stats => {
			connections => 0,
			repl_connections => 0,
			frames_seen => 0,
			frames_tampered => 0,
			keepalives_seen => 0,
			keepalives_forged => 0,
			frames_hidden => 0,
			frames_replayed => 0,
			frames_replaced => 0,
			copy_frames_seen => 0,
			identify_seen => 0,
			identify_rewritten => 0,
			create_slot_seen => 0,
			slot_rewritten => 0,
			start_seen => 0,
			start_rewritten => 0,
			snapshot_seen => 0,
			snapshot_rewritten => 0,
			feedback_seen => 0,
			feedback_forged => 0,
			query_rewritten => 0,
			bind_seen => 0,
			bind_rewritten => 0,
			map { ("tampered_$_" => 0) }
			  qw(flip drop repeat swap truncate inject reseal mangle),
		},
	);
	$listen->blocking(0);
	$rep_w->autoflush(1);
	_log("listening on 127.0.0.1:$self->{port} -> "
		  . "$self->{target_host}:$self->{target_port}");

	while (1)
	{
		# Parent gone (the test died): stop.
		last if getppid() != $parent;

		my $rsel = IO::Select->new($listen, $cmd_r);
		my $wsel = IO::Select->new();
		my $stalled = time() < $C{stall_until};
		foreach my $c (@{ $C{conns} })
		{
			foreach my $side (qw(client server))
			{
				my $s = $c->{$side};
				next unless $s;
				$rsel->add($s);
				# a connection held after a snapshot rewrite keeps what
				# its client sends for a while
				my $held = $side eq 'server'
				  && ($c->{hold_until} // 0) > time();
				$wsel->add($s)
				  if !$stalled && !$held && length $c->{"out_$side"};
			}
		}
		my ($r, $w) = IO::Select->select($rsel, $wsel, undef, 0.1);

		foreach my $s (@{ $r // [] })
		{
			if ($s == $listen)
			{
				_accept();
			}
			elsif ($s == $cmd_r)
			{
				return unless _read_commands();
			}
			else
			{
				_read_socket($s);
			}
		}
		foreach my $s (@{ $w // [] })
		{
			_write_socket($s);
		}

		# End a stall: forward what was held.
		if ($C{stall_until} && time() >= $C{stall_until})
		{
			_log('stall over');
			$C{stall_until} = 0;
		}

		# Close connections whose peer has gone and whose output is sent.
		foreach my $c (@{ $C{conns} })
		{
			_close_conn($c, 'peer closed')
			  if $c->{closing}
			  && (!$c->{client} || !length $c->{out_client})
			  && (!$c->{server} || !length $c->{out_server});
		}
		$C{conns} = [ grep { !$_->{closed} } @{ $C{conns} } ];
	}
	return;
}

sub _accept
{
	my $client = $C{listen}->accept;
	return unless $client;
	if (time() < $C{refuse_until})
	{
		_log('refused a connection');
		close $client;
		return;
	}
	my $self = $C{self};
	my $server = IO::Socket::INET->new(
		PeerAddr => $self->{target_host},
		PeerPort => $self->{target_port},
		Proto => 'tcp',
		Timeout => 5);
	if (!$server)
	{
		_log("cannot reach the target: $!");
		close $client;
		return;
	}
	$client->blocking(0);
	$server->blocking(0);
	my $c = {
		id => $C{next_conn}++,
		client => $client,
		server => $server,
		out_client => '',       # bytes to send to the client
		out_server => '',       # bytes to send to the server
		in_server => '',        # server bytes not yet parsed
		in_client => '',        # client startup bytes not yet parsed
		client_startup => 1,    # still parsing client startup packets
		single_bytes => 0,      # single-byte answers the server owes
		repl => 0,              # frames or CopyBoth seen
		frames => 0,            # frames seen on this connection
		held => undef,          # a frame message held by swap
	};
	$C{stats}{connections}++;
	push @{ $C{conns} }, $c;
	_log("connection $c->{id} opened");
	return;
}

sub _conn_of
{
	my ($s) = @_;
	foreach my $c (@{ $C{conns} })
	{
		return ($c, 'client') if $c->{client} && $s == $c->{client};
		return ($c, 'server') if $c->{server} && $s == $c->{server};
	}
	return;
}

sub _close_conn
{
	my ($c, $why) = @_;
	return if $c->{closed};
	foreach my $side (qw(client server))
	{
		if ($c->{$side})
		{
			shutdown($c->{$side}, 2);
			close $c->{$side};
			$c->{$side} = undef;
		}
	}
	$c->{closed} = 1;
	_log("connection $c->{id} closed: $why");
	return;
}

sub _read_socket
{
	my ($s) = @_;
	my ($c, $side) = _conn_of($s);
	return unless $c;
	my $buf;
	my $n = sysread($s, $buf, 65536);
	if (!defined $n)
	{
		return if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
		$n = 0;
	}
	if ($n == 0)
	{
		# One side closed: close the other once its output is flushed.
		close $c->{$side};
		$c->{$side} = undef;
		$c->{"out_$side"} = '';
		$c->{closing} = 1;
		_log("connection $c->{id}: $side closed");
		return;
	}
	if ($side eq 'client')
	{
		_from_client($c, $buf);
	}
	else
	{
		_from_server($c, $buf);
	}
	return;
}

sub _write_socket
{
	my ($s) = @_;
	my ($c, $side) = _conn_of($s);
	return unless $c && length $c->{"out_$side"};
	my $n = syswrite($s, $c->{"out_$side"});
	if (!defined $n)
	{
		return if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
		_close_conn($c, "write to $side failed: $!");
		return;
	}
	substr($c->{"out_$side"}, 0, $n) = '';
	return;
}

# Client to server: split into messages (after the startup packets) and
# rewrite the ones a rewrite rule names; every other byte passes unchanged.
sub _from_client
{
	my ($c, $buf) = @_;
	$c->{in_client} .= $buf;
	if ($c->{opaque})
	{
		$c->{out_server} .= $c->{in_client};
		$c->{in_client} = '';
		return;
	}
	while (length $c->{in_client})
	{
		if ($c->{client_startup})
		{
			last if length $c->{in_client} < 8;
			my ($len, $code) = unpack('N N', $c->{in_client});
			if ($len < 8 || $len > 100_000)
			{
				# not a startup packet we understand: stop parsing
				$c->{opaque} = 1;
				$c->{out_server} .= $c->{in_client};
				$c->{in_client} = '';
				last;
			}
			last if length $c->{in_client} < $len;
			$c->{out_server} .= substr($c->{in_client}, 0, $len, '');
			if ($len == 8
				&& ($code == SSL_REQUEST_CODE || $code == GSSENC_REQUEST_CODE))
			{
				$c->{single_bytes}++;
				# the answer decides whether what follows is encrypted
				$c->{await_single} = 1;
				last;
			}
			# StartupMessage or CancelRequest: typed messages follow.
			$c->{client_startup} = 0;
			next;
		}
		last if $c->{await_single};
		last if length $c->{in_client} < 5;
		my ($type, $len) = unpack('a N', $c->{in_client});
		last if length $c->{in_client} < 1 + $len;
		my $msg = substr($c->{in_client}, 0, 1 + $len, '');
		$c->{out_server} .= _client_message($c, $type, $msg);
	}
	return;
}

# One typed message from the client, rewritten if a rule says so.
sub _client_message
{
	my ($c, $type, $msg) = @_;
	if ($type eq 'Q')
	{
		my $q = substr($msg, 5, length($msg) - 6);
		my $q2 = _client_query($c, $q);
		return $msg if $q2 eq $q;
		return 'Q' . pack('N', 4 + length($q2) + 1) . $q2 . "\0";
	}
	if ($type eq 'P')
	{
		# Parse: statement name, query, parameter types
		my $body = substr($msg, 5);
		my $z1 = index($body, "\0");
		my $z2 = index($body, "\0", $z1 + 1);
		return $msg if $z1 < 0 || $z2 < 0;
		my $q = substr($body, $z1 + 1, $z2 - $z1 - 1);
		my $q2 = _client_query($c, $q);
		return $msg if $q2 eq $q;
		$body = substr($body, 0, $z1 + 1) . $q2 . substr($body, $z2);
		return 'P' . pack('N', 4 + length $body) . $body;
	}
	if ($type eq 'B' && defined $C{bind_index})
	{
		return _client_bind($c, $msg);
	}
	if ($type eq 'd' && length($msg) == 5 + 34 && substr($msg, 5, 1) eq 'r')
	{
		# Standby Status Update: 'r', write, flush, apply, sendTime, reply
		$C{stats}{feedback_seen}++;
		my ($write, $flush, $apply) = unpack('Q> Q> Q>', substr($msg, 6, 24));
		$C{last_feedback} = _lsn_text($flush);
		return $msg unless defined $C{feedback};
		my $f2 = _lsn_apply($flush, $C{feedback});
		my $a2 = _lsn_apply($apply, $C{feedback});
		$a2 = $f2 if $a2 > $f2;
		my $w2 = $write > $f2 ? $write : $f2;
		substr($msg, 6, 24) = pack('Q> Q> Q>', $w2, $f2, $a2);
		$C{stats}{feedback_forged}++;
		_log("connection $c->{id}: feedback flush " . _lsn_text($flush)
			  . ' forged to ' . _lsn_text($f2));
		return $msg;
	}
	return $msg;
}

# A Bind message with one parameter replaced (rewrite_bind).
sub _client_bind
{
	my ($c, $msg) = @_;
	my $body = substr($msg, 5);
	my $pos = 0;
	foreach (1 .. 2)
	{
		my $z = index($body, "\0", $pos);
		return $msg if $z < 0;
		$pos = $z + 1;
	}
	return $msg if $pos + 2 > length $body;
	my $nfmt = unpack('n', substr($body, $pos, 2));
	my @fmt = unpack('n*', substr($body, $pos + 2, 2 * $nfmt));
	$pos += 2 + 2 * $nfmt;
	return $msg if $pos + 2 > length $body;
	my $nparam = unpack('n', substr($body, $pos, 2));
	$pos += 2;
	$C{stats}{bind_seen}++;
	my $i = $C{bind_index};
	return $msg if $i >= $nparam;
	my $format = $nfmt == 0 ? 0 : $nfmt == 1 ? $fmt[0] : $fmt[$i];
	return $msg if $format != 0;
	my $start = $pos;
	for (my $k = 0; $k < $nparam; $k++)
	{
		return $msg if $pos + 4 > length $body;
		my $len = unpack('l>', substr($body, $pos, 4));
		if ($k == $i)
		{
			return $msg if $len < 0;
			$C{last_bind} = substr($body, $pos + 4, $len);
			substr($body, $pos, 4 + $len) =
			  pack('l>', length $C{bind_value}) . $C{bind_value};
			$C{stats}{bind_rewritten}++;
			_log("connection $c->{id}: Bind parameter $i \"$C{last_bind}\" "
				  . "rewritten to \"$C{bind_value}\"");
			return 'B' . pack('N', 4 + length $body) . $body;
		}
		$pos += 4 + ($len > 0 ? $len : 0);
	}
	return $msg;
}

# A query's text, rewritten if a rule says so; notes which server answers
# (IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT) are to be rewritten.
sub _client_query
{
	my ($c, $q) = @_;
	# the session key the client gave (reseal), before any rewrite
	$c->{client_session} = lc $1
	  if $q =~ /^\s*START_REPLICATION\b.*"session"\s+'([0-9A-Fa-f]{64})'/s;
	my $first = 1;
	foreach my $sub (@{ $C{query_subs} // [] })
	{
		my ($pat, $with) = @$sub;
		if ($q =~ /$pat/)
		{
			$C{last_query} = $& if $first;
			$first = 0;
			(my $q2 = $q) =~ s/$pat/$with/g;
			$C{stats}{query_rewritten}++;
			_log("connection $c->{id}: \"$q\" rewritten to \"$q2\"");
			$q = $q2;
		}
	}
	if ($q =~ /^\s*IDENTIFY_SYSTEM\b/i)
	{
		$C{stats}{identify_seen}++;
		$c->{pending} = 'identify' if defined $C{identify};
	}
	elsif ($q =~ /^\s*CREATE_REPLICATION_SLOT\b/i)
	{
		$C{stats}{create_slot_seen}++;
		$c->{pending} = 'slot' if defined $C{slot_lsn};
	}
	elsif ($q =~ m{^(\s*START_REPLICATION\s+SLOT\s+\S+\s+LOGICAL\s+)([0-9A-Fa-f]+/[0-9A-Fa-f]+)(.*)$}s)
	{
		my ($pre, $lsn, $post) = ($1, $2, $3);
		$C{stats}{start_seen}++;
		$C{last_start} = $lsn;
		if (defined $C{start_lsn})
		{
			my $new = _lsn_text(_lsn_apply(_lsn_num($lsn), $C{start_lsn}));
			$C{stats}{start_rewritten}++;
			_log("connection $c->{id}: START_REPLICATION $lsn rewritten to $new");
			return $pre . $new . $post;
		}
	}
	elsif ($q =~ /SET\s+TRANSACTION\s+SNAPSHOT\s+'[^']*'/i)
	{
		$C{stats}{snapshot_seen}++;
		if ($C{snapshot_mode})
		{
			my $with = $C{snapshot_mode} eq 'strip' ? ''
			  : 'SET TRANSACTION ISOLATION LEVEL REPEATABLE READ';
			(my $q2 = $q) =~ s/SET\s+TRANSACTION\s+SNAPSHOT\s+'[^']*'/$with/i;
			$C{stats}{snapshot_rewritten}++;
			$c->{hold_until} = time() + $C{snapshot_hold};
			_log("connection $c->{id}: \"$q\" rewritten to \"$q2\", "
				  . "connection held $C{snapshot_hold} s");
			return $q2;
		}
	}
	return $q;
}

# A DataRow's fields (undef for NULL) and back.
sub _datarow_fields
{
	my ($msg) = @_;
	my $n = unpack('n', substr($msg, 5, 2));
	my $off = 7;
	my @f;
	for (1 .. $n)
	{
		my $len = unpack('l>', substr($msg, $off, 4));
		$off += 4;
		if ($len < 0)
		{
			push @f, undef;
			next;
		}
		push @f, substr($msg, $off, $len);
		$off += $len;
	}
	return @f;
}

sub _datarow_msg
{
	my (@f) = @_;
	my $body = pack('n', scalar @f);
	$body .= defined $_ ? pack('l>', length $_) . $_ : pack('l>', -1)
	  foreach @f;
	return 'D' . pack('N', 4 + length $body) . $body;
}

# A DataRow from the server: the answer to IDENTIFY_SYSTEM (systemid,
# timeline, xlogpos, dbname) or CREATE_REPLICATION_SLOT (slot_name,
# consistent_point, snapshot_name, output_plugin) to rewrite, or one row
# of copy_frames() (one frame, binary).
sub _server_datarow
{
	my ($c, $msg) = @_;
	my @f = _datarow_fields($msg);
	my $pending = $c->{pending} // '';
	if (@f >= 3 && $pending eq 'identify' && defined $f[2])
	{
		my $new = _lsn_text(_lsn_apply(_lsn_num($f[2]), $C{identify}));
		_log("connection $c->{id}: IDENTIFY_SYSTEM xlogpos $f[2] rewritten to $new");
		$C{last_identify} = $f[2];
		$f[2] = $new;
		$C{stats}{identify_rewritten}++;
		return _datarow_msg(@f);
	}
	if (@f >= 2 && $pending eq 'slot' && defined $f[1])
	{
		my $new = _lsn_text(_lsn_apply(_lsn_num($f[1]), $C{slot_lsn}));
		_log("connection $c->{id}: CREATE_REPLICATION_SLOT consistent_point $f[1] rewritten to $new");
		$C{last_slot} = $f[1];
		$f[1] = $new;
		$C{stats}{slot_rewritten}++;
		return _datarow_msg(@f);
	}
	if (@f == 1 && defined $f[0]
		&& length $f[0] >= FRAME_HEADER_V1
		&& substr($f[0], 0, 4) eq 'DEMB')
	{
		my $h = _frame_header($f[0]);
		_record($c, $f[0], $h, $msg, 'copy');
		$C{stats}{copy_frames_seen}++;
		return '' if _replay($c, 'copy');
	}
	return $msg;
}

# Server to client: split into messages, attack frames.
sub _from_server
{
	my ($c, $buf) = @_;
	$c->{in_server} .= $buf;
	while (length $c->{in_server})
	{
		if ($c->{opaque})
		{
			$c->{out_client} .= $c->{in_server};
			$c->{in_server} = '';
			last;
		}
		if ($c->{single_bytes} > 0)
		{
			my $answer = substr($c->{in_server}, 0, 1, '');
			$c->{out_client} .= $answer;
			$c->{single_bytes}--;
			$c->{await_single} = 0;
			# SSL or GSSAPI accepted: the rest is encrypted, pass it as is
			$c->{opaque} = 1 if $answer eq 'S' || $answer eq 'G';
			# the client's bytes held until the answer can go on now
			_from_client($c, '');
			next;
		}
		last if length $c->{in_server} < 5;
		my ($type, $len) = unpack('a N', $c->{in_server});
		last if length $c->{in_server} < 1 + $len;
		my $msg = substr($c->{in_server}, 0, 1 + $len, '');
		if ($type eq 'W')
		{
			$c->{repl} = 1;
		}
		if ($type eq 'd'
			&& $len >= 4 + XLOGDATA_HEADER + FRAME_HEADER_V1
			&& substr($msg, 5, 1) eq 'w'
			&& substr($msg, 5 + XLOGDATA_HEADER, 4) eq 'DEMB')
		{
			_on_frame($c, $msg);
		}
		elsif ($type eq 'D')
		{
			$c->{out_client} .= _server_datarow($c, $msg);
		}
		elsif ($type eq 'Z')
		{
			$c->{pending} = undef;
			$c->{out_client} .= $msg;
		}
		elsif ($type eq 'd' && $len == 4 + 18 && substr($msg, 5, 1) eq 'k')
		{
			$C{stats}{keepalives_seen}++;
			if ($C{keepalive_ahead})
			{
				my ($hi, $lo) = unpack('N N', substr($msg, 6, 8));
				my $end = $hi * 4294967296 + $lo + $C{keepalive_ahead};
				substr($msg, 6, 8) =
				  pack('N N', int($end / 4294967296), $end % 4294967296);
				substr($msg, 22, 1) = chr(1);
				$C{stats}{keepalives_forged}++;
			}
			$c->{out_client} .= $msg;
		}
		else
		{
			$c->{out_client} .= $msg;
		}
	}
	return;
}

# Parse the clear header of a frame by its version byte (offset 4): v1
# has a 132-byte header (src/seal/frame.h before issue #10), v2 a 160-byte
# header and a 64-byte signature after the sealed body, v3 (src/seal/frame.h
# now) a 176-byte header with a 32-byte session key, then a 32-byte MAC and,
# on signed frames, a 64-byte signature.
sub _frame_header
{
	my ($frame) = @_;
	my %h;
	($h{magic}, $h{version}, $h{kind}, $h{flags}, $h{sysid}, $h{dboid}) =
	  unpack('a4 C a n Q> N', $frame);
	if ($h{version} >= 3 && length $frame >= FRAME_HEADER_V3)
	{
		$h{header_size} = FRAME_HEADER_V3;
		$h{trailer} = FRAME_MAC_V3 +
		  (($h{flags} & FRAME_SIGNED_V3) ? FRAME_SIGNATURE_V3 : 0);
		$h{timeline} = unpack('N', substr($frame, 20, 4));
		$h{eph} = substr($frame, 24, 32);
		$h{session} = unpack('H64', substr($frame, 56, 32));
		(
			$h{seq}, $h{start_lsn}, $h{end_lsn}, $h{commit_lsn},
			$h{source_lsn}, $h{source_time}, $h{plain_len}, $h{sealed_len}
		) = unpack('Q> Q> Q> Q> Q> q> N N', substr($frame, 88, 56));
	}
	elsif ($h{version} >= 2 && length $frame >= FRAME_HEADER_V2)
	{
		$h{header_size} = FRAME_HEADER_V2;
		$h{trailer} = FRAME_SIGNATURE_V2;
		$h{timeline} = unpack('N', substr($frame, 20, 4));
		$h{eph} = substr($frame, 24, 32);
		$h{session} = unpack('H32', substr($frame, 56, 16));
		(
			$h{seq}, $h{start_lsn}, $h{end_lsn}, $h{commit_lsn},
			$h{source_lsn}, $h{source_time}, $h{plain_len}, $h{sealed_len}
		) = unpack('Q> Q> Q> Q> Q> q> N N', substr($frame, 72, 56));
	}
	else
	{
		$h{header_size} = FRAME_HEADER_V1;
		$h{trailer} = 0;
		$h{timeline} = 0;
		$h{eph} = substr($frame, 20, 32);
		$h{session} = '';
		(
			$h{seq}, $h{start_lsn}, $h{end_lsn}, $h{commit_lsn},
			$h{source_lsn}, $h{plain_len}, $h{sealed_len}
		) = unpack('Q> Q> Q> Q> Q> N N', substr($frame, 52, 48));
	}
	$h{stream} = unpack('H12', $h{eph});
	return \%h;
}

sub _frame_msg
{
	my ($xlog_header, $frame) = @_;
	my $payload = $xlog_header . $frame;
	return 'd' . pack('N', 4 + length $payload) . $payload;
}

sub _record
{
	my ($c, $frame, $h, $msg, $via) = @_;
	my $rec = {
		index => $C{next_frame}++,
		conn => $c->{id},
		via => $via // 'stream',
		version => $h->{version},
		seq => $h->{seq},
		kind => $h->{kind},
		flags => $h->{flags},
		start_lsn => _lsn_text($h->{start_lsn}),
		end_lsn => _lsn_text($h->{end_lsn}),
		commit_lsn => _lsn_text($h->{commit_lsn}),
		plain_len => $h->{plain_len},
		sealed_len => $h->{sealed_len},
		len => length $frame,
		stream => $h->{stream},
		tampered => 0,
		bytes => $frame,
		msg => $msg,
	};
	push @{ $C{recorded} }, $rec;
	shift @{ $C{recorded} } while @{ $C{recorded} } > MAX_RECORDED;
	return $rec;
}

# LSN helpers: numbers to "X/Y" text and back, and a rewrite spec applied
# to a position: "+N" moves it N bytes ahead, "-N" back, "X/Y" sets it.
sub _lsn_text
{
	my ($n) = @_;
	return sprintf('%X/%X', int($n / 4294967296), $n % 4294967296);
}

sub _lsn_num
{
	my ($t) = @_;
	die "not an LSN: $t\n" unless $t =~ m{^([0-9A-Fa-f]+)/([0-9A-Fa-f]+)$};
	return hex($1) * 4294967296 + hex($2);
}

sub _lsn_apply
{
	my ($n, $spec) = @_;
	return $n + $1 if $spec =~ /^\+(\d+)$/;
	return ($n > $1 ? $n - $1 : 0) if $spec =~ /^-(\d+)$/;
	return _lsn_num($spec);
}

# The recorded frames of one connection, of one path ('stream': XLogData
# of a replication connection, 'copy': rows of copy_frames()).
sub _recorded_of
{
	my ($conn, $via) = @_;
	return grep { $_->{conn} == $conn && $_->{via} eq $via }
	  @{ $C{recorded} };
}

# Replay: the first connection other than the recorded one that carries
# frames of that path gets the recorded frames instead of its own (which
# are dropped for the rest of its life).  Returns true when this frame
# was consumed by a replay.
sub _replay
{
	my ($c, $via) = @_;
	my $key = "replaying_$via";
	if (!$c->{$key} && defined $C{"replay_$via"}
		&& $C{"replay_$via"} != $c->{id})
	{
		my @old = _recorded_of($C{"replay_$via"}, $via);
		$c->{$key} = 1;
		delete $C{"replay_$via"};
		$c->{out_client} .= $_->{msg} foreach @old;
		$C{stats}{frames_replayed} += @old;
		_log("connection $c->{id}: replaying " . scalar(@old)
			  . " $via frames recorded earlier instead of its own");
	}
	if ($c->{$key})
	{
		$C{stats}{frames_replaced}++;
		return 1;
	}
	return 0;
}

sub _rule_matches
{
	my ($rule, $h) = @_;
	return 0 if $rule->{kind} ne '*' && $rule->{kind} ne $h->{kind};
	return 0 if $rule->{data_only} && $h->{plain_len} == 0;
	if (defined $rule->{signed})
	{
		return 0 unless $h->{version} >= 3;
		my $signed = ($h->{flags} & FRAME_SIGNED_V3) ? 1 : 0;
		return 0 if $signed != $rule->{signed};
	}
	return 1;
}

sub _on_frame
{
	my ($c, $msg) = @_;
	my $xlog_header = substr($msg, 5, XLOGDATA_HEADER);
	my $frame = substr($msg, 5 + XLOGDATA_HEADER);
	my $h = _frame_header($frame);
	my $rec = _record($c, $frame, $h, $msg, 'stream');

	if (!$c->{repl})
	{
		$c->{repl} = 1;
	}
	if (!$c->{counted_repl})
	{
		$c->{counted_repl} = 1;
		$C{stats}{repl_connections}++;
	}
	$C{stats}{frames_seen}++;
	$c->{frames}++;

	# A replayed stream replaces this connection's own frames.
	return if _replay($c, 'stream');

	# Hidden lag: every sealed frame vanishes, keepalives still pass.
	if ($C{hide_frames})
	{
		$rec->{tampered} = 1;
		$C{stats}{frames_hidden}++;
		return;
	}

	# Which rule, if any, fires on this frame?
	my $fire;
	foreach my $rule (@{ $C{rules} })
	{
		next unless _rule_matches($rule, $h);
		my $key = $rule->{every_stream} ? "c$c->{id}" : 'all';
		my $seen = ++$rule->{matched}{$key};
		next unless $seen == $rule->{nth};
		$fire = $rule;
		last;
	}

	my @out;
	my $op = $fire ? $fire->{op} : 'pass';
	if ($op eq 'flip')
	{
		my $off = $fire->{offset}
		  // $h->{header_size}
		  + int((length($frame) - $h->{header_size}) / 2);
		$off = length($frame) - 1 if $off >= length $frame;
		substr($frame, $off, 1) = chr(ord(substr($frame, $off, 1)) ^ 0x01);
		push @out, _frame_msg($xlog_header, $frame);
	}
	elsif ($op eq 'drop')
	{
		# nothing
	}
	elsif ($op eq 'repeat')
	{
		push @out, $msg, $msg;
	}
	elsif ($op eq 'swap')
	{
		# Held until the next frame of this connection (below).
	}
	elsif ($op eq 'truncate')
	{
		my $keep = $fire->{keep}
		  // $h->{header_size}
		  + int((length($frame) - $h->{header_size}) / 2);
		$keep = length($frame) - 1 if $keep >= length $frame;
		push @out, _frame_msg($xlog_header, substr($frame, 0, $keep));
	}
	elsif ($op eq 'inject')
	{
		my $other;
		if (defined $fire->{forge})
		{
			# sealed for this very session, as a forger who read the
			# session key off the wire would: the command gets the
			# replaced frame's session key (hex) and prints a frame (hex)
			my $hex = `$fire->{forge} $h->{session}`;
			chomp $hex;
			$other = pack('H*', $hex) if $hex =~ /^[0-9a-f]+$/;
		}
		elsif (defined $fire->{hex})
		{
			$other = pack('H*', $fire->{hex});
		}
		else
		{
			# one recorded frame, or several joined by '+', in order
			foreach my $i (split /\+/, $fire->{frame})
			{
				my ($r) = grep { $_->{index} == $i } @{ $C{recorded} };
				if (!$r)
				{
					undef $other;
					last;
				}
				$other //= [];
				push @$other, $r->{bytes};
			}
		}
		if (defined $other)
		{
			push @out, _frame_msg($xlog_header, $_)
			  foreach (ref $other ? @$other : ($other));
		}
		else
		{
			_log('inject: no such recorded frame; rule ignored');
			$op = 'pass';
		}
		push @out, $msg unless $fire->{replace} && $op ne 'pass';
	}
	elsif ($op eq 'reseal')
	{
		# what an attacker who reads (and re-seals) frames would send
		# instead: the command gets the client's own session key and the
		# frame, and prints a frame (hex)
		my $session = $c->{client_session} // ('00' x 32);
		my $fhex = unpack('H*', $frame);
		my $hex = `$fire->{command} $session $fhex`;
		chomp $hex;
		if ($hex =~ /^[0-9a-f]+$/)
		{
			push @out, _frame_msg($xlog_header, pack('H*', $hex));
		}
		else
		{
			_log('reseal: the command printed no frame; rule ignored');
			$op = 'pass';
			push @out, $msg;
		}
	}
	elsif ($op eq 'mangle')
	{
		my $f2 = _mangle($frame, $h, $fire->{how} // '');
		if (defined $f2)
		{
			push @out, _frame_msg($xlog_header, $f2);
		}
		else
		{
			_log("mangle $fire->{how}: not applicable to this frame; rule ignored");
			$op = 'pass';
			push @out, $msg;
		}
	}
	else
	{
		push @out, $msg;
	}

	# A frame held by an earlier swap goes out after this one.
	if ($c->{held} && $op ne 'swap')
	{
		push @out, $c->{held};
		$c->{held} = undef;
	}
	elsif ($op eq 'swap')
	{
		push @out, $c->{held} if $c->{held};
		$c->{held} = $msg;
	}

	if ($op ne 'pass')
	{
		$rec->{tampered} = 1;
		$C{stats}{frames_tampered}++;
		$C{stats}{"tampered_$op"}++;
		$fire->{fired}++;
		# then_hide: the frames after this one vanish (hide_frames)
		$C{hide_frames} = 1 if $fire->{then_hide};
		_log("connection $c->{id}: $op frame seq $h->{seq} kind $h->{kind} "
			  . "stream $h->{stream} plain $h->{plain_len} "
			  . "sealed $h->{sealed_len} (rule $fire->{id})");
		if (!$fire->{every_stream}
			|| ($fire->{count} && $fire->{fired} >= $fire->{count}))
		{
			$C{rules} = [ grep { $_ != $fire } @{ $C{rules} } ];
		}
	}
	$c->{out_client} .= join('', @out);
	return;
}

# A v3 frame with its trailer or layout changed (the mangle op), or undef
# when "how" does not apply to it.
sub _mangle
{
	my ($frame, $h, $how) = @_;
	return undef unless $h->{version} == 3;
	my $body_end = FRAME_HEADER_V3 + $h->{sealed_len};
	my $signed = ($h->{flags} & FRAME_SIGNED_V3) ? 1 : 0;
	return undef if length $frame != $body_end + $h->{trailer};
	my $clear_flag = sub {
		my ($f, $on) = @_;
		my $flags = unpack('n', substr($f, 6, 2));
		$flags = $on ? ($flags | FRAME_SIGNED_V3) : ($flags & ~FRAME_SIGNED_V3);
		substr($f, 6, 2) = pack('n', $flags);
		return $f;
	};
	my $garbage = join('', map { chr(($_ * 37 + 11) % 256) } 1 .. FRAME_SIGNATURE_V3);
	if ($how eq 'strip_sig')
	{
		return undef unless $signed;
		return $clear_flag->(substr($frame, 0, $body_end + FRAME_MAC_V3), 0);
	}
	if ($how eq 'cut_sig')
	{
		return undef unless $signed;
		return substr($frame, 0, $body_end + FRAME_MAC_V3);
	}
	if ($how eq 'fake_sig')
	{
		return undef if $signed;
		return $clear_flag->($frame, 1) . $garbage;
	}
	if ($how eq 'bad_sig')
	{
		return undef unless $signed;
		return substr($frame, 0, $body_end + FRAME_MAC_V3) . $garbage;
	}
	if ($how eq 'cut_mac')
	{
		return substr($frame, 0, $body_end)
		  . substr($frame, $body_end + FRAME_MAC_V3);
	}
	if ($how eq 'flip_mac')
	{
		my $f = $frame;
		substr($f, $body_end, 1) = chr(ord(substr($f, $body_end, 1)) ^ 0x01);
		return $f;
	}
	if ($how eq 'v2')
	{
		# v2: magic..eph_pub (56), a 16-byte session, seq..prev_hash (88),
		# the sealed body, a 64-byte signature
		my $f = substr($frame, 0, 56) . substr($frame, 56, 16)
		  . substr($frame, 88, 88) . substr($frame, FRAME_HEADER_V3, $h->{sealed_len})
		  . ($signed ? substr($frame, $body_end + FRAME_MAC_V3, FRAME_SIGNATURE_V3)
			: $garbage);
		substr($f, 4, 1) = chr(2);
		return $clear_flag->($f, 0);
	}
	return undef;
}

# Forget every rewrite and replay rule (the clear command).
sub _clear_rewrites
{
	$C{hide_frames} = 0;
	$C{$_} = undef foreach qw(identify slot_lsn start_lsn feedback
	  replay_stream replay_copy);
	$C{snapshot_mode} = '';
	$C{snapshot_hold} = 0;
	$C{query_subs} = [];
	$C{$_} = undef foreach qw(bind_index bind_value);
	return;
}

# Read command lines; returns false when the proxy must stop.
sub _read_commands
{
	my $n = sysread($C{cmd}, $C{cmd_buf}, 65536, length $C{cmd_buf});
	return 1 if !defined $n && ($! == EAGAIN || $! == EINTR);
	return 0 unless $n;
	while ($C{cmd_buf} =~ s/^(.*?)\n//)
	{
		my $line = $1;
		my $reply = eval { _child_command($line) } // "error $@";
		$reply =~ s/\n/ /g;
		return 0 if $reply eq 'bye';
		print { $C{rep} } "$reply\n";
	}
	return 1;
}

sub _child_command
{
	my ($line) = @_;
	my ($cmd, @args) = split / /, $line;
	_log("command: $line") unless $cmd =~ /^(stats|ping|frames|hex|seen)$/;
	if ($cmd eq 'ping')
	{
		return 'pong';
	}
	elsif ($cmd eq 'quit')
	{
		foreach my $c (@{ $C{conns} })
		{
			_close_conn($c, 'proxy stopping');
		}
		print { $C{rep} } "ok\n";
		return 'bye';
	}
	elsif ($cmd eq 'rule')
	{
		my %rule = map { split /=/, $_, 2 } @args;
		$rule{id} = $C{next_rule}++;
		$rule{matched} = {};
		$rule{fired} = 0;
		push @{ $C{rules} }, \%rule;
		return "ok $rule{id}";
	}
	elsif ($cmd eq 'clear')
	{
		$C{rules} = [];
		$C{stall_until} = 0;
		$C{refuse_until} = 0;
		$C{keepalive_ahead} = 0;
		_clear_rewrites();
		foreach my $c (@{ $C{conns} })
		{
			$c->{out_client} .= $c->{held} if $c->{held};
			$c->{held} = undef;
			$c->{hold_until} = 0;
		}
		return 'ok';
	}
	elsif ($cmd eq 'hide')
	{
		$C{hide_frames} = $args[0] ? 1 : 0;
		return 'ok';
	}
	elsif ($cmd =~ /^(identify|slot_lsn|start_lsn|feedback)$/)
	{
		die "usage: $cmd +N|-N|X/Y|off\n"
		  unless @args == 1 && $args[0] =~ m{^([-+]\d+|[0-9A-Fa-f]+/[0-9A-Fa-f]+|off)$};
		$C{$cmd} = $args[0] eq 'off' ? undef : $args[0];
		return 'ok';
	}
	elsif ($cmd eq 'query_sub')
	{
		if (@args == 1 && $args[0] eq 'off')
		{
			$C{query_subs} = [];
			return 'ok';
		}
		die "usage: query_sub pattern-hex [replacement-hex] | off\n"
		  unless @args >= 1 && @args <= 2;
		my ($pat, $with) = map { pack('H*', $_) } @args;
		push @{ $C{query_subs} }, [ qr/$pat/, $with // '' ];
		return 'ok';
	}
	elsif ($cmd eq 'snapshot')
	{
		die "usage: snapshot replace|strip|off [hold seconds]\n"
		  unless @args >= 1 && $args[0] =~ /^(replace|strip|off)$/;
		$C{snapshot_mode} = $args[0] eq 'off' ? '' : $args[0];
		$C{snapshot_hold} = ($args[1] // 0) + 0;
		return 'ok';
	}
	elsif ($cmd eq 'replay')
	{
		die "usage: replay stream|copy connection|off\n"
		  unless @args == 2 && $args[0] =~ /^(stream|copy)$/
		  && $args[1] =~ /^(\d+|off)$/;
		$C{"replay_$args[0]"} = $args[1] eq 'off' ? undef : $args[1] + 0;
		return 'ok';
	}
	elsif ($cmd eq 'bind')
	{
		if (@args == 1 && $args[0] eq 'off')
		{
			$C{bind_index} = $C{bind_value} = undef;
			return 'ok';
		}
		die "usage: bind index hexvalue | off\n"
		  unless @args == 2 && $args[0] =~ /^\d+$/
		  && $args[1] =~ /^(?:[0-9a-f]{2})*$/;
		$C{bind_index} = $args[0] + 0;
		$C{bind_value} = pack('H*', $args[1]);
		return 'ok';
	}
	elsif ($cmd eq 'rewritten')
	{
		return join(' ', map { "$_=" . unpack('H*', $C{"last_$_"} // '') }
			  qw(query bind));
	}
	elsif ($cmd eq 'seen')
	{
		# the last values seen in the clear, before any rewrite
		return join(' ', map { "$_=" . ($C{"last_$_"} // '') }
			  qw(identify slot start feedback));
	}
	elsif ($cmd eq 'keepalive')
	{
		$C{keepalive_ahead} = $args[0] + 0;
		return 'ok';
	}
	elsif ($cmd eq 'stall')
	{
		$C{stall_until} = time() + $args[0];
		return 'ok';
	}
	elsif ($cmd eq 'refuse')
	{
		$C{refuse_until} = time() + $args[0];
		return 'ok';
	}
	elsif ($cmd eq 'cut')
	{
		my $n = 0;
		foreach my $c (@{ $C{conns} })
		{
			_close_conn($c, 'cut');
			$n++;
		}
		$C{conns} = [];
		return "ok $n";
	}
	elsif ($cmd eq 'stats')
	{
		my %s = %{ $C{stats} };
		$s{open} = scalar @{ $C{conns} };
		$s{rules} = scalar @{ $C{rules} };
		return join(' ', map { "$_=$s{$_}" } sort keys %s);
	}
	elsif ($cmd eq 'frames')
	{
		my @f;
		foreach my $r (@{ $C{recorded} })
		{
			push @f, join(',',
				map { "$_:$r->{$_}" }
				  qw(index conn via version seq kind flags start_lsn end_lsn
				  commit_lsn plain_len sealed_len len stream tampered));
		}
		return join(' ', 'ok', @f);
	}
	elsif ($cmd eq 'hex')
	{
		my ($r) = grep { $_->{index} == $args[0] } @{ $C{recorded} };
		die "no recorded frame $args[0]\n" unless $r;
		return unpack('H*', $r->{bytes});
	}
	die "unknown command $cmd\n";
}

1;
