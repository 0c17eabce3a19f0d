
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

Client to server, bytes pass through unchanged; the proxy only watches the
startup packets so that it knows when the server answers an SSLRequest or a
GSSENCRequest with a single byte.  Server to client, it splits the stream
into protocol messages.  A CopyData message ('d') whose payload starts with
'w' (XLogData: 'w', dataStart, walEnd, sendTime, 25 bytes) and whose data
starts with the frame magic "DEMB" carries one data_embassy frame (132-byte
clear header, then the sealed body; see src/frame.h).  Those frames are
recorded and, when a rule says so, attacked:

  flip      XOR one byte inside the sealed body (or at "offset")
  drop      do not forward the frame
  repeat    forward it twice
  swap      hold it and forward it after the next frame
  truncate  cut it to "keep" bytes (default: header + half the sealed body)
            and fix the message length, so the protocol stays valid
  inject    send another frame (recorded earlier by this proxy: frame =>
            its index, or several indexes joined by '+'; or hex => the
            frame as hex) before this one, with this message's XLogData
            header; replace => 1 sends it instead of this one

Keepalives ('d' messages whose payload starts with 'k': walEnd,
sendTime, replyRequested) pass unchanged unless forge_keepalives(N) is on:
then each one's walEnd is moved N bytes ahead and a reply is requested,
as a forger on an unencrypted path could.  Every other message, the
startup and the non-CopyData protocol pass through unchanged.  Commands that act on connections: stall (hold both
directions of every connection for N seconds), cut (close every
connection), refuse (close new connections at once for N seconds).

A rule applies to the nth frame (default 1) that matches it: of kind 'S'
(default; kind => 'C' or '*'), and with a body (data_only, default 1;
position frames carry none).  By default a rule fires once, on whichever
connection; every_stream => 1 makes it fire on the nth matching frame of
every replication connection, this one included, until clear() (or until
it has fired "count" times).

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
	FRAME_HEADER_SIZE => 132,
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
every_stream, count, kind, data_only, offset (flip), keep (truncate),
frame (inject: an index of recorded_frames(), or several joined by '+'),
hex (inject: a frame given as hex), replace (inject).

=cut

sub tamper
{
	my ($self, $op, %opts) = @_;
	croak "mitm: unknown op $op"
	  unless $op =~ /^(flip|drop|repeat|swap|truncate|inject)$/;
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
		stats => {
			connections => 0,
			repl_connections => 0,
			frames_seen => 0,
			frames_tampered => 0,
			keepalives_seen => 0,
			keepalives_forged => 0,
			map { ("tampered_$_" => 0) }
			  qw(flip drop repeat swap truncate inject),
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
				$wsel->add($s)
				  if !$stalled && length $c->{"out_$side"};
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

# Client to server: pass through, watching only the startup packets.
sub _from_client
{
	my ($c, $buf) = @_;
	$c->{out_server} .= $buf;
	return unless $c->{client_startup};
	$c->{in_client} .= $buf;
	while (length $c->{in_client} >= 8)
	{
		my ($len, $code) = unpack('N N', $c->{in_client});
		last if length $c->{in_client} < $len;
		substr($c->{in_client}, 0, $len) = '';
		if ($len == 8
			&& ($code == SSL_REQUEST_CODE || $code == GSSENC_REQUEST_CODE))
		{
			$c->{single_bytes}++;
			next;
		}
		# StartupMessage or CancelRequest: typed messages follow.
		$c->{client_startup} = 0;
		$c->{in_client} = '';
		last;
	}
	return;
}

# Server to client: split into messages, attack frames.
sub _from_server
{
	my ($c, $buf) = @_;
	$c->{in_server} .= $buf;
	while (length $c->{in_server})
	{
		if ($c->{single_bytes} > 0)
		{
			$c->{out_client} .= substr($c->{in_server}, 0, 1, '');
			$c->{single_bytes}--;
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
			&& $len >= 4 + XLOGDATA_HEADER + FRAME_HEADER_SIZE
			&& substr($msg, 5, 1) eq 'w'
			&& substr($msg, 5 + XLOGDATA_HEADER, 4) eq 'DEMB')
		{
			_on_frame($c, $msg);
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

# Parse the clear header of a frame (see src/frame.h).
sub _frame_header
{
	my ($frame) = @_;
	my %h;
	(
		$h{magic}, $h{version}, $h{kind}, $h{flags}, $h{sysid_hi},
		$h{sysid_lo}, $h{dboid}, $h{eph}, $h{seq_hi}, $h{seq_lo}
	) = unpack('a4 C a n N N N a32 N N', $frame);
	$h{seq} = $h{seq_hi} * 4294967296 + $h{seq_lo};
	($h{plain_len}, $h{sealed_len}) = unpack('N N', substr($frame, 92, 8));
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
	my ($c, $frame, $h) = @_;
	my $rec = {
		index => $C{next_frame}++,
		conn => $c->{id},
		seq => $h->{seq},
		kind => $h->{kind},
		flags => $h->{flags},
		plain_len => $h->{plain_len},
		sealed_len => $h->{sealed_len},
		len => length $frame,
		stream => $h->{stream},
		tampered => 0,
		bytes => $frame,
	};
	push @{ $C{recorded} }, $rec;
	shift @{ $C{recorded} } while @{ $C{recorded} } > MAX_RECORDED;
	return $rec;
}

sub _rule_matches
{
	my ($rule, $h) = @_;
	return 0 if $rule->{kind} ne '*' && $rule->{kind} ne $h->{kind};
	return 0 if $rule->{data_only} && $h->{plain_len} == 0;
	return 1;
}

sub _on_frame
{
	my ($c, $msg) = @_;
	my $xlog_header = substr($msg, 5, XLOGDATA_HEADER);
	my $frame = substr($msg, 5 + XLOGDATA_HEADER);
	my $h = _frame_header($frame);
	my $rec = _record($c, $frame, $h);

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
		  // FRAME_HEADER_SIZE + int((length($frame) - FRAME_HEADER_SIZE) / 2);
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
		  // FRAME_HEADER_SIZE + int((length($frame) - FRAME_HEADER_SIZE) / 2);
		$keep = length($frame) - 1 if $keep >= length $frame;
		push @out, _frame_msg($xlog_header, substr($frame, 0, $keep));
	}
	elsif ($op eq 'inject')
	{
		my $other;
		if (defined $fire->{hex})
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
	_log("command: $line") unless $cmd =~ /^(stats|ping|frames|hex)$/;
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
		foreach my $c (@{ $C{conns} })
		{
			$c->{out_client} .= $c->{held} if $c->{held};
			$c->{held} = undef;
		}
		return 'ok';
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
				  qw(index conn seq kind flags plain_len sealed_len len
				  stream tampered));
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
