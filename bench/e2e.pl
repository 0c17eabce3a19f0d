#!/usr/bin/perl
#
# bench/e2e.pl - end-to-end benchmark of data_embassy against PostgreSQL 15's
# native logical replication (pgoutput, binary and text) and, when Debian's
# postgresql-15-pglogical is installed, pglogical.
#
# It starts a register and an embassy cluster on loopback (free ports, a
# temporary directory, stopped and removed at the end), gives every system
# its own register and embassy databases, and measures, on the same clusters
# in the same run:
#
#   copy    initial copy of a big table (add_register / copy_data = true)
#   bulk    one transaction inserting N rows, one UPDATE and one DELETE of
#           all of them: seconds from the register's COMMIT returning until
#           the change is visible at the embassy; bytes on the wire per row
#   oltp    pgbench TPC-B on the register: TPS, lag (bytes and seconds)
#           sampled every second, catch-up time after the load
#   mem     peak memory of the walsender and the apply worker during one
#           very large transaction, with a perf CPU profile of both
#
# Every figure but mem is the median of --rounds runs, the systems taking
# turns (native, de, native, de...); only the system being measured is
# connected, the others are disabled / paused.  The table goes to stdout and
# <results>/latest.txt, the raw numbers to <results>/raw.json, the OLTP lag
# curves to <results>/oltp_lag.png.
#
# Run it through bench/run.sh, which installs what it needs and builds the
# extension; as root this script runs the clusters as the "postgres" user.
# perl bench/e2e.pl --help lists the options.

use strict;
use warnings;

use DBI;
use DBD::Pg ();
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use FindBin;
use Getopt::Long;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(strftime WNOHANG);
use Time::HiRes qw(time sleep);

$| = 1;

# ---------------------------------------------------------------- options

my %opt = (
	rounds       => 3,
	rows         => 1_000_000,    # bulk
	copy_rows    => 15_000_000,   # initial copy
	mem_rows     => 10_000_000,   # memory / profile
	oltp_seconds => 60,
	ceiling_seconds => 0,         # 0: half of oltp_seconds
	clients      => 4,
	jobs         => 2,
	scale        => 10,
	port_base    => 56600,
	phases       => 'copy,bulk,oltp,mem',
	systems      => '',
	oltp_systems => 'native_bin,de',
	results      => "$FindBin::Bin/results",
	keep         => 0,
	quick        => 0,
	profile      => 1,
);
my $usage = <<"EOF";
usage: bench/run.sh [options]        (or: perl bench/e2e.pl [options])

  --quick              small sizes, short OLTP: a few minutes, for development
  --rounds R           runs per figure, median reported        [$opt{rounds}]
  --rows N             bulk transaction rows                    [$opt{rows}]
  --copy-rows S        initial-copy table rows                  [$opt{copy_rows}]
  --mem-rows M         rows of the memory/profile transaction   [$opt{mem_rows}]
  --oltp-seconds T     pgbench -T                               [$opt{oltp_seconds}]
  --ceiling-seconds C  pgbench -T of the no-replication ceiling [T/2]
  --clients C --jobs J pgbench -c / -j                          [$opt{clients} / $opt{jobs}]
  --scale K            pgbench scale factor                     [$opt{scale}]
  --phases LIST        any of copy,bulk,oltp,mem                [$opt{phases}]
  --systems LIST       bulk systems: native_bin,native_text,de,pglogical and,
                       not by default, native_stream (binary, streaming = on)
                       [all available]
  --oltp-systems LIST  OLTP systems besides the no-replication ceiling
                                                                [$opt{oltp_systems}]
  --no-profile         skip perf during the memory phase
  --port-base P        first port tried for the two clusters   [$opt{port_base}]
  --results DIR        where latest.txt, raw.json, oltp_lag.png go
  --keep               leave the clusters running and say where
  --bindir DIR         PostgreSQL binaries (and so the installation) to use
                       [/usr/lib/postgresql/15/bin]
EOF
my @ARGS = @ARGV;
GetOptions(
	'quick'          => \$opt{quick},
	'rounds=i'       => \$opt{rounds},
	'rows=i'         => \$opt{rows},
	'copy-rows=i'    => \$opt{copy_rows},
	'mem-rows=i'     => \$opt{mem_rows},
	'oltp-seconds=i' => \$opt{oltp_seconds},
	'ceiling-seconds=i' => \$opt{ceiling_seconds},
	'clients=i'      => \$opt{clients},
	'jobs=i'         => \$opt{jobs},
	'scale=i'        => \$opt{scale},
	'phases=s'       => \$opt{phases},
	'systems=s'      => \$opt{systems},
	'oltp-systems=s' => \$opt{oltp_systems},
	'profile!'       => \$opt{profile},
	'port-base=i'    => \$opt{port_base},
	'results=s'      => \$opt{results},
	'keep'           => \$opt{keep},
	'bindir=s'       => \$opt{bindir},
	'help'           => sub { print $usage; exit 0 },
) or die $usage;

# --quick sets small sizes unless given explicitly on the command line.
if ($opt{quick})
{
	my %q = (
		rows => 100_000, copy_rows => 500_000, mem_rows => 500_000,
		oltp_seconds => 10, scale => 2);
	for my $k (keys %q)
	{
		(my $flag = $k) =~ tr/_/-/;
		$opt{$k} = $q{$k} unless grep { /^--\Q$flag\E(=|$)/ } @ARGS;
	}
}

my %phase = map { $_ => 1 } split /,/, $opt{phases};
# The ceiling (TPS without replication) has no lag to follow: half as long
# keeps the default run under 20 minutes on 2 cores.
$opt{ceiling_seconds} ||= int(($opt{oltp_seconds} + 1) / 2);

# ---------------------------------------------------------------- environment

my $BINDIR = $opt{bindir} || '/usr/lib/postgresql/15/bin';
$BINDIR = `pg_config --bindir` =~ s/\s+$//r unless -x "$BINDIR/postgres";
my $PKGLIBDIR = `$BINDIR/pg_config --pkglibdir` =~ s/\s+$//r;
my $AS_ROOT = $> == 0;
my $RUN_USER = $AS_ROOT ? 'postgres' : scalar getpwuid($>);

my $HAVE_DE  = -f "$PKGLIBDIR/data_embassy.so";
my $HAVE_PGL = -f "$PKGLIBDIR/pglogical.so";

# The library under test: its identity now and at the end (another install
# during the run would mix two builds), and whether it is a sanitizer build.
sub de_lib_id
{
	my @st = stat "$PKGLIBDIR/data_embassy.so" or return 'none';
	return "size $st[7], modified " . strftime('%Y-%m-%d %H:%M:%S', localtime $st[9]);
}
my $DE_LIB0 = de_lib_id();
my $DE_ASAN = $HAVE_DE && `nm -D $PKGLIBDIR/data_embassy.so 2>/dev/null` =~ /__asan_/;
my $KNOWS_OPL = `$BINDIR/postgres --describe-config 2>/dev/null` =~ /^output_plugin_libraries\t/m;
my $PG_VERSION = `$BINDIR/postgres --version` =~ s/\s+$//r;

my @ALL_SYSTEMS = ('native_bin', 'de', 'native_text', 'pglogical');
my @KNOWN_SYSTEMS = (@ALL_SYSTEMS, 'native_stream');
my @SYSTEMS = $opt{systems} ? split(/,/, $opt{systems}) : @ALL_SYSTEMS;
for my $s (@SYSTEMS)
{
	die "unknown system \"$s\" (known: @KNOWN_SYSTEMS)\n"
	  unless grep { $_ eq $s } @KNOWN_SYSTEMS;
}
@SYSTEMS = grep { $_ ne 'de' || $HAVE_DE } @SYSTEMS;
@SYSTEMS = grep { $_ ne 'pglogical' || $HAVE_PGL } @SYSTEMS;
my @OLTP_SYSTEMS = grep { my $s = $_; grep { $_ eq $s } @SYSTEMS }
  split /,/, $opt{oltp_systems};
my $USE_PGL = grep { $_ eq 'pglogical' } @SYSTEMS;

my %LABEL = (
	native_bin  => 'native binary',
	native_text => 'native text',
	native_stream => 'native stream',
	de          => 'data_embassy',
	pglogical   => 'pglogical',
	plain       => 'no replication');

my $T_START = time;
my $LOAD0 = `cat /proc/loadavg` =~ s/^(\S+ \S+ \S+).*\n?/$1/r;
sub elapsed { sprintf '%4.0fs', time - $T_START }
sub say { print '[', elapsed(), '] ', @_, "\n" }

# ---------------------------------------------------------------- helpers

sub median
{
	my @v = sort { $a <=> $b } grep { defined } @_;
	return undef unless @v;
	return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub percentile
{
	my ($p, @v) = @_;
	@v = sort { $a <=> $b } grep { defined } @v;
	return undef unless @v;
	my $i = int($p / 100 * @v + 0.999999) - 1;
	$i = 0 if $i < 0;
	$i = $#v if $i > $#v;
	return $v[$i];
}

sub max_of { my $m; for (@_) { $m = $_ if defined && (!defined $m || $_ > $m) } $m }

# Run a command as the cluster user (postgres when we are root), its
# output going to $TMP/commands.log.
my $TMP;
sub run_as_user
{
	my @cmd = @_;
	unshift @cmd, 'runuser', '-u', $RUN_USER, '--' if $AS_ROOT;
	my $pid = fork // die "fork: $!";
	if ($pid == 0)
	{
		open STDOUT, '>>', "$TMP/commands.log" or POSIX::_exit(126);
		open STDERR, '>&', \*STDOUT;
		no warnings 'exec';
		exec { $cmd[0] } @cmd;
		POSIX::_exit(127);
	}
	waitpid $pid, 0;
	return $? if wantarray;
	$? == 0 or die "command failed (" . ($? >> 8) . "): @cmd (see $TMP/commands.log)\n";
}

sub port_is_free
{
	my ($port) = @_;
	my $s = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'tcp',
		ReuseAddr => 0, Listen => 1);
	return 0 unless $s;
	close $s;
	return 1;
}

sub free_port
{
	my ($from) = @_;
	for my $p ($from .. $from + 400)
	{
		return $p if port_is_free($p);
	}
	die "no free port from $from\n";
}

# ---------------------------------------------------------------- clusters

$TMP = tempdir('de-bench.XXXXXX', TMPDIR => 1, CLEANUP => 0);
chmod 0755, $TMP;
if ($AS_ROOT) { my (undef, undef, $uid, $gid) = getpwnam($RUN_USER); chown $uid, $gid, $TMP; }
my %CLUSTERS;     # name => { dir, port, log }
my @STARTED;

sub start_cluster
{
	my ($name, $port, $conf) = @_;
	my $dir = "$TMP/$name";
	run_as_user("$BINDIR/initdb", '-D', $dir, '-U', 'postgres', '--auth=trust',
		'-E', 'UTF8', '--locale=C', '--no-sync', '-N') ;
	my $common = <<"EOF";
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 100
shared_buffers = 1GB
max_wal_size = 16GB
min_wal_size = 1GB
checkpoint_timeout = 30min
autovacuum = off
jit = off
max_worker_processes = 32
max_logical_replication_workers = 16
max_sync_workers_per_subscription = 2
max_wal_senders = 20
max_replication_slots = 20
wal_sender_timeout = 300s
wal_receiver_timeout = 300s
log_min_messages = warning
log_line_prefix = '%m [%p] %b '
EOF
	open my $fh, '>>', "$dir/postgresql.conf" or die;
	print $fh $common, $conf;
	close $fh;
	run_as_user("$BINDIR/pg_ctl", '-D', $dir, '-l', "$TMP/$name.log", '-w',
		'-t', '120', 'start', '-o', '');
	push @STARTED, $dir;
	$CLUSTERS{$name} = { dir => $dir, port => $port, log => "$TMP/$name.log" };
	return $CLUSTERS{$name};
}

sub stop_all
{
	for my $dir (reverse @STARTED)
	{
		eval { run_as_user("$BINDIR/pg_ctl", '-D', $dir, '-m', 'fast', '-w', '-t', '60', 'stop') };
		eval { run_as_user("$BINDIR/pg_ctl", '-D', $dir, '-m', 'immediate', '-w', 'stop') } if $@;
	}
	@STARTED = ();
}

my @CHILDREN;
our %BROKEN;
my $MAIN_PID = $$;
sub cleanup
{
	return unless $$ == $MAIN_PID;
	kill 'TERM', @CHILDREN if @CHILDREN;
	if ($opt{keep} && @STARTED)
	{
		say "clusters kept in $TMP; stop them with:";
		print "  runuser -u $RUN_USER -- $BINDIR/pg_ctl -D $_ stop\n" for @STARTED;
		return;
	}
	stop_all();
	# keep the server logs of a run where something failed
	if (%BROKEN && $TMP && -d $TMP)
	{
		make_path("$opt{results}/logs");
		system('cp', "$TMP/$_", "$opt{results}/logs/") for grep { -f "$TMP/$_" } qw(reg.log emb.log commands.log);
		print "server logs kept in $opt{results}/logs\n";
	}
	remove_tree($TMP) if $TMP && -d $TMP;
}
$SIG{INT} = $SIG{TERM} = sub { say "interrupted"; cleanup(); exit 130 };
END { my $rc = $?; cleanup(); $? = $rc; }

# ---------------------------------------------------------------- SQL

my %DBH;    # "cluster/db" => handle (in this process only)

sub db
{
	my ($cl, $dbname) = @_;
	my $key = "$cl/$dbname/$$";
	my $h = $DBH{$key};
	return $h if $h && $h->ping;
	$h = DBI->connect(
		"dbi:Pg:host=127.0.0.1;port=$CLUSTERS{$cl}{port};dbname=$dbname",
		'postgres', '',
		{ AutoCommit => 1, RaiseError => 1, PrintError => 0,
		  AutoInactiveDestroy => 1, pg_server_prepare => 0 })
	  or die "cannot connect to $cl/$dbname: $DBI::errstr\n";
	$h->do("SET application_name = 'de-bench'");
	$h->do('SET client_min_messages = warning');
	$DBH{$key} = $h;
	return $h;
}

sub sql { my ($cl, $d, $q, @b) = @_; db($cl, $d)->do($q, undef, @b) }
sub q1
{
	my ($cl, $d, $q, @b) = @_;
	my @r = db($cl, $d)->selectrow_array($q, undef, @b);
	return $r[0];
}
sub qrow { my ($cl, $d, $q, @b) = @_; db($cl, $d)->selectrow_hashref($q, undef, @b) }

sub lsn2int
{
	my ($lsn) = @_;
	return undef unless defined $lsn && $lsn =~ m{^([0-9A-Fa-f]+)/([0-9A-Fa-f]+)$};
	return hex($1) * 4294967296 + hex($2);
}

# The same kind of maintenance on both sites at once (one core each):
# $reg_sql in register database $rdb, $emb_sql in embassy database $edb.
sub on_both
{
	my ($rdb, $reg_sql, $edb, $emb_sql) = @_;
	my $h = db('reg', $rdb);
	$h->do($reg_sql, { pg_async => DBD::Pg::PG_ASYNC() });
	my $err;
	eval { sql('emb', $edb, $emb_sql) if defined $edb; 1 } or $err = $@;
	$h->pg_result;
	die $err if $err;
}

sub checkpoint_both { on_both('postgres', 'CHECKPOINT', 'postgres', 'CHECKPOINT') }

sub reg_lsn { lsn2int(q1('reg', 'postgres', 'SELECT pg_current_wal_lsn()')) }

sub conninfo
{
	my ($db) = @_;
	return "host=127.0.0.1 port=$CLUSTERS{reg}{port} dbname=$db user=postgres";
}

# Wait until $cond->() is true; poll every $step seconds; die after $timeout.
sub wait_for
{
	my ($what, $timeout, $step, $cond, $diag) = @_;
	my $t0 = time;
	while (1)
	{
		my $r = $cond->();
		return $r if $r;
		if (time - $t0 > $timeout)
		{
			my $d = $diag ? $diag->() : '';
			die "timed out after ${timeout}s waiting for $what" . ($d ? ": $d" : '') . "\n";
		}
		sleep $step;
	}
}

# ---------------------------------------------------------------- schema

# A population register row of about 120 bytes (pg_column_size of the row
# is printed in the report).
my $PERSON_DDL = <<'EOF';
CREATE TABLE person (
	id            bigint PRIMARY KEY,
	identity_code text NOT NULL,
	first_name    text NOT NULL,
	last_name     text NOT NULL,
	birth_date    date NOT NULL,
	address       text NOT NULL,
	amount        numeric(12,2) NOT NULL
);
EOF

sub person_insert_sql
{
	my ($lo, $hi) = @_;
	return <<"EOF";
INSERT INTO person
SELECT g,
	((3 + (h & 3)) % 7)::text || to_char(date '1930-01-01' + ((h >> 4) % 32000)::int, 'YYMMDD')
		|| lpad(((h >> 20) % 10000)::text, 4, '0'),
	(ARRAY['Mari','Jaan','Anna','Peeter','Kadri','Andres','Liis','Toomas','Kati','Mart',
		'Eve','Jüri','Tiina','Rein','Maria','Aivar','Sirje','Priit','Helen','Margus',
		'Kristiina','Urmas','Marika','Tõnu','Piret','Indrek','Anu','Raivo','Kaja','Lauri',
		'Merle','Siim'])[1 + ((h >> 8) % 32)::int],
	(ARRAY['Tamm','Saar','Sepp','Mägi','Kask','Kukk','Rebane','Ilves','Pärn','Koppel',
		'Lepik','Kuusk','Karu','Lill','Vaher','Kallas','Luik','Mets','Raud','Kivi',
		'Põder','Kuusik','Ots','Oja','Teder','Laur','Rand','Kruus','Jõgi','Paju',
		'Vaino','Nurk'])[1 + ((h >> 13) % 32)::int],
	date '1930-01-01' + ((h >> 4) % 32000)::int,
	(ARRAY['Narva mnt','Pärnu mnt','Tartu mnt','Tehnika','Kalevi','Riia','Vabaduse pst',
		'Mustamäe tee','Sõpruse pst','Paldiski mnt','Lai','Pikk','Raekoja','Jaama',
		'Kooli','Aia'])[1 + ((h >> 18) % 16)::int]
		|| ' ' || (1 + (h >> 22) % 150) || '-' || (1 + (h >> 30) % 90) || ', '
		|| (ARRAY['Tallinn','Tartu','Narva','Pärnu','Viljandi','Rakvere','Kuressaare',
			'Haapsalu'])[1 + ((h >> 37) % 8)::int]
		|| ' ' || (10000 + (h >> 40) % 90000) || ', '
		|| (ARRAY['Harju','Tartu','Ida-Viru','Pärnu','Viljandi','Lääne-Viru','Saare',
			'Lääne'])[1 + ((h >> 37) % 8)::int] || ' maakond',
	((h >> 24) % 10000000) / 100.0
FROM (SELECT g, hashint8extended(g, 0) & 9223372036854775807 AS h
	  FROM generate_series(${lo}::bigint, ${hi}::bigint) g) s
EOF
}

my $HEARTBEAT_DDL = <<'EOF';
CREATE TABLE bench_heartbeat (id int PRIMARY KEY, ts timestamptz NOT NULL);
EOF

# ---------------------------------------------------------------- systems

# Each system has a register database and an embassy database of its own.
my %SYS = (
	native_bin  => { rdb => 'bench_nb',  edb => 'emb_nb',  sub => 'sub_nb' },
	native_text => { rdb => 'bench_nt',  edb => 'emb_nt',  sub => 'sub_nt' },
	native_stream => { rdb => 'bench_ns', edb => 'emb_ns', sub => 'sub_ns' },
	de          => { rdb => 'bench_de',  edb => 'emb_de',  reg => 'reg_de' },
	pglogical   => { rdb => 'bench_pgl', edb => 'emb_pgl', sub => 'sub_pgl' },
	plain       => { rdb => 'bench_plain' },
);
# %BROKEN (declared above): system => why it was dropped from the run

sub is_native { $_[0] =~ /^native/ }

my ($EMB_KEY, $REG_KEY);
sub site_keys
{
	# One identity per cluster; generate_key() fails if it already exists.
	my ($rdb, $edb) = @_;
	for ([ 'reg', $rdb ], [ 'emb', $edb ])
	{
		my ($cl, $d) = @$_;
		my $k = eval { q1($cl, $d, 'SELECT data_embassy.public_key()') };
		q1($cl, $d, 'SELECT data_embassy.generate_key()') unless $k;
	}
	$REG_KEY = q1('reg', $rdb, 'SELECT data_embassy.public_key()');
	$EMB_KEY = q1('emb', $edb, 'SELECT data_embassy.public_key()');
}

sub de_status
{
	my ($s) = @_;
	return qrow('emb', $SYS{$s}{edb},
		'SELECT * FROM data_embassy.lag WHERE register = ?', $SYS{$s}{reg}) // {};
}

sub pgl_slot
{
	my ($s) = @_;
	$SYS{$s}{slot} //= q1('emb', $SYS{$s}{edb},
		'SELECT sub_slot_name FROM pglogical.subscription WHERE sub_name = ?',
		$SYS{$s}{sub});
	return $SYS{$s}{slot};
}

# Name of the slot on the register, its walsender and the apply worker.
sub slot_name
{
	my ($s) = @_;
	return $SYS{$s}{sub} if is_native($s);
	return $SYS{$s}{slot} if $s eq 'de';
	return pgl_slot($s);
}

sub walsender_pid
{
	my ($s) = @_;
	return q1('reg', 'postgres',
		'SELECT active_pid FROM pg_replication_slots WHERE slot_name = ?',
		slot_name($s));
}

sub worker_pid
{
	my ($s) = @_;
	my $e = $SYS{$s}{edb};
	return q1('emb', $e,
		'SELECT pid FROM pg_stat_subscription WHERE subname = ? AND relid IS NULL',
		$SYS{$s}{sub}) if is_native($s);
	return de_status($s)->{worker_pid} if $s eq 'de';
	return q1('emb', $e,
		q{SELECT pid FROM pg_stat_activity
		  WHERE datname = ? AND backend_type LIKE 'pglogical apply%'}, $e);
}

# Position up to which the embassy has applied the register's WAL: the
# replication origin (native, pglogical: end of the last applied commit) or
# data_embassy.lag.applied_lsn.
sub applied_lsn
{
	my ($s) = @_;
	my $e = $SYS{$s}{edb};
	return lsn2int(de_status($s)->{applied_lsn}) if $s eq 'de';
	my $origin = $SYS{$s}{origin} //= is_native($s)
	  ? 'pg_' . q1('emb', $e, 'SELECT oid FROM pg_subscription WHERE subname = ?', $SYS{$s}{sub})
	  : pgl_slot($s);
	return lsn2int(q1('emb', $e,
		q{SELECT s.remote_lsn FROM pg_replication_origin_status s
		  JOIN pg_replication_origin o ON o.roident = s.local_id WHERE o.roname = ?},
		$origin));
}

sub diag_system
{
	my ($s) = @_;
	return '' unless $s eq 'de';
	my $st = eval { de_status($s) } // {};
	return join ' ', map { "$_=" . ($st->{$_} // 'NULL') }
	  qw(state worker_pid applied_lsn source_lsn last_error);
}

# Wait until everything the register wrote so far is applied.  A heartbeat
# commit after the position makes sure the origin of native subscriptions
# (which moves only at commits) passes it.
sub wait_caught_up
{
	my ($s, $timeout) = @_;
	my $target = reg_lsn();
	sql('reg', $SYS{$s}{rdb}, 'UPDATE bench_heartbeat SET ts = clock_timestamp()');
	wait_for("$s to catch up", $timeout // 600, 0.05, sub {
		my $a = eval { applied_lsn($s) };
		return defined $a && $a >= $target;
	}, sub { diag_system($s) });
}

sub disable_system
{
	my ($s) = @_;
	my $e = $SYS{$s}{edb};
	if (is_native($s)) { sql('emb', $e, "ALTER SUBSCRIPTION $SYS{$s}{sub} DISABLE") }
	elsif ($s eq 'de') { sql('emb', $e, 'SELECT data_embassy.pause_register(?)', $SYS{$s}{reg}) }
	else { sql('emb', $e, 'SELECT pglogical.alter_subscription_disable(?, true)', $SYS{$s}{sub}) }
	wait_for("$s walsender to go", 60, 0.1, sub { !walsender_pid($s) });
}

sub enable_system
{
	my ($s) = @_;
	my $e = $SYS{$s}{edb};
	if (is_native($s)) { sql('emb', $e, "ALTER SUBSCRIPTION $SYS{$s}{sub} ENABLE") }
	elsif ($s eq 'de') { sql('emb', $e, 'SELECT data_embassy.resume_register(?)', $SYS{$s}{reg}) }
	else { sql('emb', $e, 'SELECT pglogical.alter_subscription_enable(?, true)', $SYS{$s}{sub}) }
	wait_for("$s to connect", 120, 0.1,
		sub { walsender_pid($s) && worker_pid($s) }, sub { diag_system($s) });
}

# Only $s streams; every other system is disabled.
my %ENABLED;
sub only_enable
{
	my ($s) = @_;
	for my $o (keys %ENABLED)
	{
		next if !$ENABLED{$o} || (defined $s && $o eq $s);
		disable_system($o);
		$ENABLED{$o} = 0;
	}
	return unless defined $s && $s ne 'plain';
	unless ($ENABLED{$s}) { enable_system($s); $ENABLED{$s} = 1; }
	wait_caught_up($s);
}

# Run $code for system $s; on error mark the system broken and go on.
sub guarded
{
	my ($s, $what, $code) = @_;
	return undef if $BROKEN{$s};
	my @r = eval { $code->() };
	if ($@)
	{
		chomp(my $err = $@);
		say "!! $LABEL{$s}: $what failed: $err";
		$BROKEN{$s} = "$what: $err";
		return undef;
	}
	return wantarray ? @r : $r[0];
}

# ---------------------------------------------------------------- samplers

# Fork a child that runs $body->() every $interval seconds, appending what
# it returns to $file, until it is sent SIGTERM.
sub start_sampler
{
	my ($file, $interval, $body) = @_;
	my $pid = fork // die "fork: $!";
	if ($pid == 0)
	{
		%DBH = ();
		my $stop = 0;
		$SIG{TERM} = sub { $stop = 1 };
		$SIG{INT} = 'IGNORE';
		open my $fh, '>', $file or die "$file: $!";
		select((select($fh), $| = 1)[0]);
		my $next = time;
		while (!$stop)
		{
			my $line = eval { $body->() };
			print $fh $line if defined $line;
			$next += $interval;
			my $d = $next - time;
			if ($d > 0) { sleep $d }
			else { $next = time }    # late: no burst to catch up
		}
		close $fh;
		POSIX::_exit(0);
	}
	push @CHILDREN, $pid;
	return $pid;
}

sub stop_child
{
	my ($pid) = @_;
	kill 'TERM', $pid;
	waitpid $pid, 0;
	@CHILDREN = grep { $_ != $pid } @CHILDREN;
}

sub proc_status
{
	my ($pid) = @_;
	my %s;
	open my $fh, '<', "/proc/$pid/status" or return undef;
	while (my $l = <$fh>) { $s{$1} = $2 if $l =~ /^(\w+):\s+(\d+) kB/ }
	return \%s;
}

# Bytes the walsender's socket has sent and had acknowledged (tcp_info
# bytes_acked, via ss): the replication stream's payload on the wire,
# CopyData framing and keepalives included.
sub socket_bytes
{
	my ($pid) = @_;
	return undef unless $pid;
	my $out = `ss -tinpH state established '( sport = :$CLUSTERS{reg}{port} )' 2>/dev/null`;
	my @lines = split /\n/, $out;
	for (my $i = 0; $i < @lines; $i++)
	{
		next unless $lines[$i] =~ /pid=$pid,/;
		my $info = join ' ', @lines[$i .. ($i + 1 < @lines ? $i + 1 : $i)];
		return $1 if $info =~ /bytes_acked:(\d+)/;
	}
	return undef;
}

# ---------------------------------------------------------------- setup

my %R;    # results: $R{phase}{metric}{system} = [values per round]
my %NOTE;
sub record { my ($ph, $m, $s, $v) = @_; push @{ $R{$ph}{$m}{$s} }, $v if defined $v }

sub setup_clusters
{
	my $p1 = free_port($opt{port_base});
	my $p2 = free_port($p1 + 1);
	my $opl = "output_plugin_libraries = 'pgoutput, test_decoding"
	  . ($HAVE_DE ? ", data_embassy" : '') . ($USE_PGL ? ", pglogical_output" : '')
	  . "'\n";
	my $reg_conf = "wal_level = logical\n"
	  . ($KNOWS_OPL ? $opl : '')
	  . ($USE_PGL ? "shared_preload_libraries = 'pglogical'\n" : '');
	my @pre = (($HAVE_DE ? 'data_embassy' : ()), ($USE_PGL ? 'pglogical' : ()));
	my $emb_conf = ($USE_PGL ? "wal_level = logical\n" : "wal_level = replica\n")
	  . (@pre ? "shared_preload_libraries = '" . join(', ', @pre) . "'\n" : '')
	  . ($HAVE_DE ? "data_embassy.retry_interval = 1s\n" : '');
	say "starting register on port $p1 and embassy on port $p2 in $TMP";
	start_cluster('reg', $p1, $reg_conf);
	start_cluster('emb', $p2, $emb_conf);
	my $ddl = $PERSON_DDL =~ s/CREATE TABLE/CREATE TEMP TABLE/r;
	sql('reg', 'postgres', $ddl);
	sql('reg', 'postgres', person_insert_sql(1, 10000));
	$NOTE{row_bytes} = q1('reg', 'postgres', 'SELECT round(avg(pg_column_size(p.*))) FROM person p');
	sql('reg', 'postgres', 'DROP TABLE person');
}

sub create_db
{
	my ($cl, $d) = @_;
	sql($cl, 'postgres', "CREATE DATABASE $d");
}

sub pgbench_init
{
	my ($cl, $d, $steps) = @_;
	my @cmd = ("$BINDIR/pgbench", '-i', '-q', '-s', $opt{scale}, '-h', '127.0.0.1',
		'-p', $CLUSTERS{$cl}{port}, '-U', 'postgres');
	push @cmd, '-I', $steps if $steps;
	system("@cmd $d >>$TMP/pgbench-init.log 2>&1") == 0
	  or die "pgbench -i failed on $cl/$d (see $TMP/pgbench-init.log)\n";
}

# Databases, tables and pgbench data of every system, then its subscription
# with an initial copy of the pgbench data; afterwards everything is
# disabled so that only the measured system streams.
sub setup_streaming
{
	my @sys = (@SYSTEMS, 'plain');
	for my $s (@sys)
	{
		my ($r, $e) = @{ $SYS{$s} }{qw(rdb edb)};
		create_db('reg', $r);
		sql('reg', $r, $PERSON_DDL);
		sql('reg', $r, $HEARTBEAT_DDL);
		sql('reg', $r, 'INSERT INTO bench_heartbeat VALUES (1, now())');
		pgbench_init('reg', $r) if $phase{oltp};
		next if $s eq 'plain';
		create_db('emb', $e);
		sql('emb', $e, $PERSON_DDL);
		sql('emb', $e, $HEARTBEAT_DDL);
		pgbench_init('emb', $e, 'dtp') if $phase{oltp};
	}
	for my $s (@SYSTEMS)
	{
		my ($r, $e) = @{ $SYS{$s} }{qw(rdb edb)};
		guarded($s, 'setup', sub {
			if (is_native($s))
			{
				sql('reg', $r, 'CREATE PUBLICATION pub FOR ALL TABLES');
				my $bin = $s eq 'native_text' ? 'false' : 'true';
				my $stream = $s eq 'native_stream' ? 'on' : 'off';
				sql('emb', $e, "CREATE SUBSCRIPTION $SYS{$s}{sub} CONNECTION '"
					  . conninfo($r) . "' PUBLICATION pub WITH (binary = $bin, streaming = $stream, copy_data = true)");
			}
			elsif ($s eq 'de')
			{
				sql('reg', $r, 'CREATE EXTENSION data_embassy');
				sql('emb', $e, 'CREATE EXTENSION data_embassy');
				site_keys($r, $e);
				$SYS{de}{slot} = q1('reg', $r, "SELECT data_embassy.add_embassy('bench', ?)", $EMB_KEY);
				sql('emb', $e, 'SELECT data_embassy.add_register(?, ?, ?, copy_data => true)',
					$SYS{de}{reg}, conninfo($r), $REG_KEY);
			}
			else
			{
				sql('reg', $r, 'CREATE EXTENSION pglogical');
				sql('emb', $e, 'CREATE EXTENSION pglogical');
				sql('reg', $r, 'SELECT pglogical.create_node(?, ?)', 'reg', conninfo($r));
				sql('emb', $e, 'SELECT pglogical.create_node(?, ?)', 'emb',
					"host=127.0.0.1 port=$CLUSTERS{emb}{port} dbname=$e user=postgres");
				# pglogical's default set replicates updates and deletes and so
				# wants a primary key: pgbench_history goes insert-only.
				for my $t (@{ db('reg', $r)->selectcol_arrayref(
					q{SELECT c.oid::regclass::text FROM pg_class c
					  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'}) })
				{
					my $haspk = q1('reg', $r,
						q{SELECT count(*) FROM pg_index WHERE indrelid = ?::regclass AND indisprimary}, $t);
					sql('reg', $r, 'SELECT pglogical.replication_set_add_table(?, ?)',
						$haspk ? 'default' : 'default_insert_only', $t);
				}
				sql('emb', $e, q{SELECT pglogical.create_subscription(
					subscription_name := ?, provider_dsn := ?,
					synchronize_structure := false, synchronize_data := true)},
					$SYS{$s}{sub}, conninfo($r));
			}
			$ENABLED{$s} = 1;
		});
	}
	for my $s (@SYSTEMS)
	{
		guarded($s, 'initial sync', sub {
			my $e = $SYS{$s}{edb};
			if (is_native($s))
			{
				wait_for("$s initial sync", 1800, 0.2, sub {
					q1('emb', $e, q{SELECT count(*) = 0 FROM pg_subscription_rel
						WHERE srsubstate <> 'r'}) });
			}
			elsif ($s eq 'pglogical')
			{
				sql('emb', $e, 'SELECT pglogical.wait_for_subscription_sync_complete(?)', $SYS{$s}{sub});
			}
			wait_for("$s walsender", 120, 0.2, sub { walsender_pid($s) }, sub { diag_system($s) });
			wait_caught_up($s, 1800);
		});
	}
	only_enable(undef);
}

# ---------------------------------------------------------------- bulk

sub vacuum_person
{
	my ($s) = @_;
	on_both($SYS{$s}{rdb}, 'VACUUM person', $SYS{$s}{edb}, 'VACUUM person');
	checkpoint_both();
}

# One bulk operation on the register, timed from its COMMIT returning to the
# moment its last row is visible at the embassy (the systems apply the
# transaction as one local transaction, so any of its rows becoming visible
# means all are).  Also counts bytes on the walsender's socket.
sub bulk_op
{
	my ($s, $op, $n) = @_;
	my ($r, $e) = @{ $SYS{$s} }{qw(rdb edb)};
	my $timeout = 120 + $n / 2000;
	my $ws = walsender_pid($s);
	my $wire0 = socket_bytes($ws);
	my $de0 = $s eq 'de' ? de_status($s) : undef;
	my %sql = (
		insert => person_insert_sql(1, $n),
		update => 'UPDATE person SET amount = amount + 1',
		delete => 'DELETE FROM person');
	my $probe_id = $n;
	my $expect;
	my $t0 = time;
	sql('reg', $r, $sql{$op});
	my $t1 = time;
	$expect = q1('reg', $r, 'SELECT amount FROM person WHERE id = ?', $probe_id)
	  if $op eq 'update';
	my $edbh = db('emb', $e);
	my $sth = $edbh->prepare('SELECT amount FROM person WHERE id = $1');
	wait_for("$s $op applied", $timeout, 0.01, sub {
		$sth->execute($probe_id);
		my ($v) = $sth->fetchrow_array;
		$sth->finish;
		return $op eq 'insert' ? defined $v
		  : $op eq 'update' ? (defined $v && $v == $expect)
		  : !defined $v;
	}, sub { diag_system($s) });
	my $t2 = time;
	wait_caught_up($s, $timeout);
	my $wire1 = socket_bytes($ws);
	my $samews = ($ws // 0) == (walsender_pid($s) // -1);
	# Both sites agree?
	my $chk = 'SELECT count(*) || \'/\' || coalesce(sum(amount), 0) FROM person';
	my ($a, $b) = (q1('reg', $r, $chk), q1('emb', $e, $chk));
	die "$op: register has $a, embassy $b (count/sum)\n" if $a ne $b;
	my %res = (commit_to_applied => $t2 - $t1, statement => $t1 - $t0);
	$res{wire_per_row} = ($wire1 - $wire0) / $n
	  if defined $wire0 && defined $wire1 && $samews;
	if ($de0)
	{
		my $de1 = de_status($s);
		if (($de1->{worker_pid} // 0) == ($de0->{worker_pid} // -1))
		{
			$res{de_wire_per_row} = ($de1->{wire_bytes} - $de0->{wire_bytes}) / $n
			  if defined $de1->{wire_bytes} && defined $de0->{wire_bytes};
			$res{de_plain_per_row} = ($de1->{plain_bytes} - $de0->{plain_bytes}) / $n
			  if defined $de1->{plain_bytes} && defined $de0->{plain_bytes};
		}
	}
	return \%res;
}

sub phase_bulk
{
	my $n = $opt{rows};
	say "== bulk: $n rows, $opt{rounds} rounds, systems: @SYSTEMS";
	for my $round (1 .. $opt{rounds})
	{
		for my $s (@SYSTEMS)
		{
			guarded($s, "bulk round $round", sub {
				only_enable($s);
				vacuum_person($s);
				wait_caught_up($s);
				for my $op (qw(insert update delete))
				{
					my $res = bulk_op($s, $op, $n);
					record('bulk', "${op}_s", $s, $res->{commit_to_applied});
					record('bulk', "${op}_stmt_s", $s, $res->{statement});
					record('bulk', "${op}_wire", $s, $res->{wire_per_row});
					record('bulk', "${op}_de_wire", $s, $res->{de_wire_per_row});
					record('bulk', "${op}_de_plain", $s, $res->{de_plain_per_row});
					say sprintf "  round %d %-14s %-6s commit->applied %7.2fs  (statement %6.2fs)  wire %s B/row",
					  $round, $LABEL{$s}, $op, $res->{commit_to_applied}, $res->{statement},
					  defined $res->{wire_per_row} ? sprintf('%.1f', $res->{wire_per_row}) : '?';
				}
			});
		}
	}
}

# ---------------------------------------------------------------- oltp

sub phase_oltp
{
	my @sys = ('plain', grep { !$BROKEN{$_} } @OLTP_SYSTEMS);
	say "== oltp: pgbench -c $opt{clients} -j $opt{jobs} -T $opt{oltp_seconds} (ceiling $opt{ceiling_seconds}; scale $opt{scale}), "
	  . "$opt{rounds} rounds, systems: @sys";
	for my $round (1 .. $opt{rounds})
	{
		for my $s (@sys)
		{
			guarded($s, "oltp round $round", sub { oltp_run($s, $round) });
		}
	}
}

sub oltp_run
{
	my ($s, $round) = @_;
	my ($r, $e) = @{ $SYS{$s} }{qw(rdb edb)};
	only_enable($s);
	for my $t (qw(pgbench_accounts pgbench_branches pgbench_tellers pgbench_history))
	{
		on_both($r, "VACUUM $t", $e, "VACUUM $t");
	}
	checkpoint_both();
	# the origins of native and pglogical move only at commits: let them
	# pass the WAL of the vacuums before the lag is sampled
	wait_caught_up($s) unless $s eq 'plain';

	# Lag sampler: every second it reads the register's WAL position L and
	# right after the embassy's applied position A (lag in bytes = L - A);
	# then it polls A every 10 ms and, once A >= L, records how long that
	# took (lag in seconds: how old the register's state is when the
	# embassy has it).
	my $datf = "$TMP/lag.$s.$round";
	my $t0 = time;
	my (@pending, $next_sample);
	my $sampler = $s eq 'plain' ? undef : start_sampler($datf, 0.01, sub {
		my $now = time;
		my $out = '';
		if (!defined $next_sample || $now >= $next_sample)
		{
			$next_sample = ($next_sample // $now) + 1.0;
			my $l = reg_lsn();
			my $a = applied_lsn($s);
			return undef unless defined $l && defined $a;
			push @pending, [ $now, $l, $l > $a ? $l - $a : 0 ];
		}
		my $a = applied_lsn($s);
		return undef unless defined $a;
		$now = time;
		while (@pending && $a >= $pending[0][1])
		{
			my $p = shift @pending;
			$out .= sprintf "%.2f %d %.4f\n", $p->[0] - $t0, $p->[2], $now - $p->[0];
		}
		return $out;
	});
	my $secs = $s eq 'plain' ? $opt{ceiling_seconds} : $opt{oltp_seconds};
	my $out = `$BINDIR/pgbench -n -c $opt{clients} -j $opt{jobs} -T $secs -h 127.0.0.1 -p $CLUSTERS{reg}{port} -U postgres $r 2>&1`;
	my $t_end = time;
	my ($tps) = $out =~ /tps = ([\d.]+) \(without initial connection time\)/;
	die "pgbench failed: $out\n" unless defined $tps;
	my $catchup;
	if ($s ne 'plain')
	{
		# Caught up once the embassy has applied the register's WAL position
		# at the end of the load; a marker committed right after it gives
		# the origins of native and pglogical (which move at commits) a
		# commit to pass it with.
		my $lsn_end = reg_lsn();
		sql('reg', $r, 'UPDATE bench_heartbeat SET ts = clock_timestamp() WHERE id = 1');
		wait_for("$s to catch up after the load", 600, 0.01, sub {
			my $a = applied_lsn($s);
			return defined $a && $a >= $lsn_end;
		}, sub { diag_system($s) });
		$catchup = time - $t_end;
		sleep 0.05;
		stop_child($sampler);
	}
	record('oltp', 'tps', $s, $tps);
	my $msg = sprintf "  round %d %-14s tps %8.1f", $round, $LABEL{$s}, $tps;
	if ($s ne 'plain')
	{
		my (@b, @sec, @rows);
		open my $fh, '<', $datf or die;
		while (my $l = <$fh>)
		{
			my ($t, $bytes, $sec) = split ' ', $l;
			push @rows, [ $t, $bytes, $sec ];
			next if $t > $opt{oltp_seconds};
			push @b, $bytes if $bytes >= 0;
			push @sec, $sec;
		}
		close $fh;
		record('oltp', 'lag_bytes_max', $s, max_of(@b));
		record('oltp', 'lag_bytes_p95', $s, percentile(95, @b));
		record('oltp', 'lag_s_max', $s, max_of(@sec));
		record('oltp', 'lag_s_p95', $s, percentile(95, @sec));
		record('oltp', 'catchup_s', $s, $catchup);
		$R{oltp_series}{$s}{$round} = \@rows;
		$msg .= sprintf "  lag p95 %.0f kB / %.2fs, max %.0f kB / %.2fs, catch-up %.2fs",
		  (percentile(95, @b) // 0) / 1024, percentile(95, @sec) // 0,
		  (max_of(@b) // 0) / 1024, max_of(@sec) // 0, $catchup;
	}
	say $msg;
}

# ---------------------------------------------------------------- copy

# A table of S rows in its own register database, copied at subscription /
# add_register time into a fresh table at the embassy; timed from the call
# until every row is there and the system streams.  Runs before the
# streaming setup, so that nothing else decodes meanwhile.
sub phase_copy
{
	my $S = $opt{copy_rows};
	my @sys = grep { $_ eq 'native_bin' || $_ eq 'de' } @SYSTEMS;
	say "== copy: $S rows, $opt{rounds} rounds, systems: @sys";
	create_db('reg', 'bench_copy');
	# Filled by two sessions (one per core), the primary key built after.
	sql('reg', 'bench_copy', $PERSON_DDL =~ s/ PRIMARY KEY//r);
	my @kids;
	for my $half (0, 1)
	{
		my $pid = fork // die "fork: $!";
		if ($pid == 0)
		{
			%DBH = ();
			my $chunk = 1_000_000;
			for (my $lo = 1 + $half * $chunk; $lo <= $S; $lo += 2 * $chunk)
			{
				my $hi = $lo + $chunk - 1;
				$hi = $S if $hi > $S;
				sql('reg', 'bench_copy', person_insert_sql($lo, $hi));
			}
			POSIX::_exit(0);
		}
		push @kids, $pid;
	}
	for (@kids) { waitpid $_, 0; die "filling the copy table failed\n" if $?; }
	sql('reg', 'bench_copy', 'ALTER TABLE person ADD PRIMARY KEY (id)');
	sql('reg', 'bench_copy', 'VACUUM ANALYZE person');
	sql('reg', 'bench_copy', 'CREATE PUBLICATION pubcopy FOR TABLE person');
	my $size = q1('reg', 'bench_copy', q{SELECT pg_table_size('person')});
	$NOTE{copy_bytes} = $size;
	say sprintf "  table ready: %d rows, %.0f MB (%s)", $S, $size / 1048576, elapsed();
	for my $s (@sys)
	{
		create_db('emb', "copy_$s");
		if ($s eq 'de')
		{
			guarded($s, 'copy setup', sub {
				sql('reg', 'bench_copy', 'CREATE EXTENSION data_embassy');
				sql('emb', "copy_$s", 'CREATE EXTENSION data_embassy');
				site_keys('bench_copy', "copy_$s");
				sql('reg', 'bench_copy', "SELECT data_embassy.add_embassy('bench', ?)", $EMB_KEY);
			});
		}
	}
	my $timeout = 300 + $S / 10000;
	for my $round (1 .. $opt{rounds})
	{
		for my $s (@sys)
		{
			guarded($s, "copy round $round", sub {
				my $e = "copy_$s";
				sql('emb', $e, 'DROP TABLE IF EXISTS person');
				sql('emb', $e, $PERSON_DDL);
				checkpoint_both();
				my $t0 = time;
				if ($s eq 'de')
				{
					sql('emb', $e, 'SELECT data_embassy.add_register(?, ?, ?, copy_data => true)',
						'copy', conninfo('bench_copy'), $REG_KEY);
					wait_for('data_embassy copy', $timeout, 0.1, sub {
						my $st = qrow('emb', $e, q{SELECT * FROM data_embassy.lag WHERE register = 'copy'});
						die "worker error: $st->{last_error}\n"
						  if $st && $st->{state} eq 'error';
						return $st && $st->{state} eq 'streaming';
					}, sub {
						my $st = qrow('emb', $e, q{SELECT * FROM data_embassy.lag WHERE register = 'copy'}) // {};
						join ' ', map { "$_=" . ($st->{$_} // 'NULL') } qw(state rows_applied last_error);
					});
				}
				else
				{
					sql('emb', $e, "CREATE SUBSCRIPTION subcopy CONNECTION '" . conninfo('bench_copy')
						  . "' PUBLICATION pubcopy WITH (binary = true, copy_data = true)");
					wait_for('native copy', $timeout, 0.1, sub {
						q1('emb', $e, q{SELECT count(*) > 0 AND bool_and(srsubstate = 'r')
							FROM pg_subscription_rel}) });
				}
				# Every row there? (a count, outside the timing unless short)
				my $t1 = time;
				my $n = q1('emb', $e, 'SELECT count(*) FROM person');
				if ($n != $S)
				{
					wait_for("$s copy rows", $timeout, 0.5, sub {
						q1('emb', $e, 'SELECT count(*) FROM person') == $S });
					$t1 = time;
				}
				my $secs = $t1 - $t0;
				record('copy', 'copy_s', $s, $secs);
				say sprintf "  round %d %-14s %7.2fs  %8.0f rows/s  %6.1f MB/s",
				  $round, $LABEL{$s}, $secs, $S / $secs, $size / 1048576 / $secs;
				if ($s eq 'de') { sql('emb', $e, q{SELECT data_embassy.drop_register('copy')}) }
				else { sql('emb', $e, 'DROP SUBSCRIPTION subcopy') }
			});
			if ($BROKEN{$s} && $s eq 'de')
			{
				# leave nothing behind that would stop the streaming setup
				eval { sql('emb', "copy_$s", q{SELECT data_embassy.drop_register('copy')}) };
			}
		}
	}
	eval { sql('reg', 'bench_copy', q{SELECT data_embassy.drop_embassy('bench')}) };
	# Tables are dropped, not the databases: pglogical's supervisor (2.4.2)
	# never absorbs the barrier DROP DATABASE waits for.
	for my $s (@sys) { eval { sql('emb', "copy_$s", 'DROP TABLE IF EXISTS person') } }
	eval { sql('reg', 'bench_copy', 'DROP PUBLICATION pubcopy') };
	eval { sql('reg', 'bench_copy', 'DROP TABLE person') };
	# A failed copy should not keep data_embassy out of the other phases.
	if ($BROKEN{de} && $BROKEN{de} =~ /^copy/)
	{
		$NOTE{de_copy_error} = delete $BROKEN{de};
	}
	$_->disconnect for map { $DBH{$_} } grep { /copy/ } keys %DBH;
	delete $DBH{$_} for grep { /copy/ } keys %DBH;
	say "  (data_embassy copy failed: $NOTE{de_copy_error}; streaming phases go on)"
	  if $NOTE{de_copy_error};
}

# ---------------------------------------------------------------- memory + profile

sub perf_usable
{
	return 0 unless $opt{profile} && $AS_ROOT;
	return 0 if system('perf --version >/dev/null 2>&1');
	# Hardware counters are often missing in VMs; the software clock works.
	my $ok = system("perf record -q -e cpu-clock -o $TMP/perf.check -- true >/dev/null 2>&1") == 0;
	unlink "$TMP/perf.check";
	return $ok;
}

# Sample counts by process and library from a perf.data file.
sub perf_breakdown
{
	my ($file, $pids) = @_;
	my (%tot, %lib, %sym);
	open my $fh, '-|', "perf script -i $file -F pid,ip,sym,dso 2>/dev/null" or return undef;
	while (my $l = <$fh>)
	{
		next unless $l =~ /^\s*(\d+)\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$/;
		my ($pid, $sym, $dso) = ($1, $2, $3);
		$tot{$pid}++;
		my $class = $dso =~ /libzstd/ ? 'zstd' : $dso =~ /libcrypto|libssl/ ? 'openssl' : 'other';
		$lib{$pid}{$class}++;
		$sym{"$sym ($dso)" =~ s{\(.*/}{(}r}++;
	}
	close $fh;
	my @top = (sort { $sym{$b} <=> $sym{$a} } keys %sym)[0 .. 14];
	my $all = 0; $all += $_ for values %tot;
	return { tot => \%tot, lib => \%lib, top => [ map { [ $_, $sym{$_} ] } grep { defined } @top ], all => $all };
}

# Fresh walsender and apply worker (so that the high-water marks belong to
# this test): disable and enable; if the same processes survive, end them.
sub restart_processes
{
	my ($s) = @_;
	my ($w0, $a0) = (walsender_pid($s), worker_pid($s));
	disable_system($s);
	enable_system($s);
	my ($w1, $a1) = (walsender_pid($s), worker_pid($s));
	if (($a1 // 0) == ($a0 // -1))
	{
		sql('emb', 'postgres', 'SELECT pg_terminate_backend(?)', $a1);
		wait_for("$s new worker", 120, 0.2, sub { my $p = worker_pid($s); $p && $p != $a1 });
	}
	wait_for("$s new walsender", 120, 0.2, sub { my $p = walsender_pid($s); $p && $p != ($w0 // 0) });
	wait_caught_up($s);
}

sub phase_mem
{
	my $M = $opt{mem_rows};
	my @sys = grep { !$BROKEN{$_} && ($_ eq 'native_bin' || $_ eq 'de') } @SYSTEMS;
	my $perf = perf_usable();
	$NOTE{perf} = $perf ? 'perf record -e cpu-clock -F 999' : ($opt{profile}
		? 'perf unusable here (needs root and a working perf record -e cpu-clock)'
		: 'disabled (--no-profile)');
	say "== mem: one transaction of $M rows, systems: @sys; profile: $NOTE{perf}";
	for my $s (@sys)
	{
		guarded($s, 'mem', sub {
			my ($r, $e) = @{ $SYS{$s} }{qw(rdb edb)};
			only_enable($s);
			sql('reg', $r, 'TRUNCATE person');
			wait_caught_up($s);
			vacuum_person($s);
			restart_processes($s);
			my ($ws, $ap) = (walsender_pid($s), worker_pid($s));
			my $memf = "$TMP/mem.$s";
			my $sampler = start_sampler($memf, 0.2, sub {
				my @o;
				for ([ 'walsender', $ws ], [ 'worker', $ap ])
				{
					my $st = proc_status($_->[1]) or next;
					push @o, join ' ', $_->[0], map { $st->{$_} // 0 } qw(VmHWM VmRSS RssAnon RssShmem);
				}
				return join('', map { "$_\n" } @o);
			});
			my $perfpid;
			my $perff = "$TMP/perf.$s.data";
			if ($perf)
			{
				$perfpid = fork // die;
				if ($perfpid == 0)
				{
					open STDOUT, '>', "$TMP/perf.$s.log"; open STDERR, '>&', \*STDOUT;
					no warnings "exec";
					exec 'perf', 'record', '-q', '-e', 'cpu-clock', '-F', '999',
					  '-p', "$ws,$ap", '-o', $perff;
					POSIX::_exit(127);
				}
				sleep 0.5;
			}
			sql('reg', $r, person_insert_sql(1, $M));
			my $t1 = time;
			my $sth = db('emb', $e)->prepare('SELECT 1 FROM person WHERE id = $1');
			wait_for("$s big transaction applied", 600 + $M / 2000, 0.05, sub {
				$sth->execute($M); my ($v) = $sth->fetchrow_array; $sth->finish; $v },
				sub { diag_system($s) });
			my $secs = time - $t1;
			if ($perfpid) { kill 'INT', $perfpid; waitpid $perfpid, 0; }
			stop_child($sampler);
			my %peak;
			open my $fh, '<', $memf or die;
			while (my $l = <$fh>)
			{
				my ($who, $hwm, $rss, $anon, $shm) = split ' ', $l;
				$peak{$who}{hwm} = max_of($peak{$who}{hwm}, $hwm);
				$peak{$who}{anon} = max_of($peak{$who}{anon}, $anon);
				$peak{$who}{rss} = max_of($peak{$who}{rss}, $rss);
			}
			close $fh;
			for my $who (qw(walsender worker))
			{
				record('mem', "${who}_anon_mb", $s, defined $peak{$who}{anon} ? $peak{$who}{anon} / 1024 : undef);
				record('mem', "${who}_hwm_mb", $s, defined $peak{$who}{hwm} ? $peak{$who}{hwm} / 1024 : undef);
			}
			record('mem', 'commit_to_applied_s', $s, $secs);
			say sprintf "  %-14s walsender peak RssAnon %.1f MB (VmHWM %.1f MB), worker peak RssAnon %.1f MB (VmHWM %.1f MB); commit->applied %.1fs",
			  $LABEL{$s}, map({ ($_ // 0) / 1024 } $peak{walsender}{anon}, $peak{walsender}{hwm},
				  $peak{worker}{anon}, $peak{worker}{hwm}), $secs;
			if ($perfpid)
			{
				my $b = perf_breakdown($perff);
				if ($b && $b->{all})
				{
					my ($z, $o, $n) = (0, 0, 0);
					for my $pid (keys %{ $b->{tot} })
					{
						$z += $b->{lib}{$pid}{zstd} // 0;
						$o += $b->{lib}{$pid}{openssl} // 0;
						$n += $b->{tot}{$pid};
						my $who = $pid == $ws ? 'walsender' : $pid == $ap ? 'worker' : "pid $pid";
						$R{profile}{$s}{$who} = {
							samples => $b->{tot}{$pid},
							zstd => ($b->{lib}{$pid}{zstd} // 0) / $b->{tot}{$pid} * 100,
							openssl => ($b->{lib}{$pid}{openssl} // 0) / $b->{tot}{$pid} * 100 };
					}
					record('profile', 'zstd_pct', $s, $z / $n * 100);
					record('profile', 'openssl_pct', $s, $o / $n * 100);
					record('profile', 'cpu_s', $s, $n / 999);
					$R{profile}{$s}{top} = $b->{top};
					say sprintf "  %-14s profile: %d samples (%.1f CPU s), zstd %.1f%%, OpenSSL %.1f%%",
					  $LABEL{$s}, $n, $n / 999, $z / $n * 100, $o / $n * 100;
				}
			}
			sql('reg', $r, 'TRUNCATE person');
			wait_caught_up($s);
		});
	}
}

# ---------------------------------------------------------------- report

my @REPORT;
sub out { push @REPORT, join('', @_) }

sub fmt
{
	my ($v, $unit) = @_;
	return 'n/a' unless defined $v;
	return sprintf('%.0f', $v) if abs($v) >= 1000;
	return sprintf('%.1f', $v) if abs($v) >= 10;
	return sprintf('%.2f', $v);
}

sub med { my ($ph, $m, $s) = @_; median(@{ $R{$ph}{$m}{$s} // [] }) }

my @CHECKS;
sub check
{
	my ($what, $ok, $detail) = @_;
	push @CHECKS, sprintf '  [%s] %s: %s', !defined $ok ? ' n/a' : $ok ? 'PASS' : 'FAIL', $what, $detail;
}

sub table_row
{
	my ($label, $cols, $vals, $base) = @_;
	my $line = sprintf '  %-38s', $label;
	for my $c (@$cols) { $line .= sprintf ' %13s', fmt($vals->{$c}) }
	my $b = $vals->{$base // 'native_bin'};
	my $d = $vals->{de};
	$line .= sprintf ' %10s', (defined $b && defined $d && $b != 0) ? sprintf('%.2fx', $d / $b) : '';
	out $line;
}

sub report
{
	my @cols = grep { $_ ne 'plain' } @SYSTEMS;
	my $ncpu = `nproc` =~ s/\s+$//r;
	out "data_embassy end-to-end benchmark, " . strftime('%Y-%m-%d %H:%M', localtime);
	out "$PG_VERSION, $ncpu CPUs, loopback, $opt{rounds} rounds per figure (median), "
	  . sprintf('%.0f', (time - $T_START) / 60) . " min"
	  . ($opt{quick} ? ' (--quick)' : '');
	out "load average at the start: $LOAD0, at the end: " . (`cat /proc/loadavg` =~ s/^(\S+ \S+ \S+).*\n?/$1/r);
	out "data_embassy.so: $DE_LIB0" . ($DE_ASAN ? ' -- AN ASAN BUILD: its figures mean little' : '');
	out "  !! it was replaced during the run (now " . de_lib_id() . "): the figures may mix two builds"
	  if de_lib_id() ne $DE_LIB0;
	out "row: population register person, about " . ($NOTE{row_bytes} // '?') . " bytes (pg_column_size)";
	out '';
	my $head = sprintf '  %-38s', '';
	$head .= sprintf ' %13s', $LABEL{$_} for @cols;
	$head .= sprintf ' %10s', 'de/native';
	if ($R{bulk})
	{
		out "Bulk: one transaction of $opt{rows} rows; commit on the register -> visible at the embassy";
		out $head;
		for my $op (qw(insert update delete))
		{
			my %v = map { my $t = med('bulk', "${op}_s", $_); ($_ => $t ? $opt{rows} / $t : undef) } @cols;
			table_row("$op rows/s (higher better)", \@cols, \%v);
		}
		for my $op (qw(insert update delete))
		{
			my %v = map { ($_ => med('bulk', "${op}_s", $_)) } @cols;
			table_row("$op seconds", \@cols, \%v);
		}
		for my $op (qw(insert update delete))
		{
			my %v = map { ($_ => med('bulk', "${op}_stmt_s", $_)) } @cols;
			table_row("($op statement on register, s)", \@cols, \%v);
		}
		out '';
		out "Wire: bytes per row on the walsender's TCP socket (tcp_info bytes_acked, ss)";
		out $head;
		for my $op (qw(insert update delete))
		{
			my %v = map { ($_ => med('bulk', "${op}_wire", $_)) } @cols;
			table_row("$op B/row (lower better)", \@cols, \%v);
		}
		my %tot = map { my $s = $_; my @p = map { med('bulk', "${_}_wire", $s) } qw(insert update delete);
			($s => (grep { !defined } @p) ? undef : ($p[0] + $p[1] + $p[2]) / 3) } @cols;
		table_row('all three B/row', \@cols, \%tot);
		if (grep { defined med('bulk', "${_}_de_wire", 'de') } qw(insert update delete))
		{
			out sprintf '  data_embassy.lag: wire_bytes/row insert %s update %s delete %s; plain_bytes/row %s %s %s',
			  map { fmt(med('bulk', $_, 'de')) }
			  qw(insert_de_wire update_de_wire delete_de_wire insert_de_plain update_de_plain delete_de_plain);
		}
		out '';
		my %ins = map { ($_ => med('bulk', 'insert_s', $_)) } @cols;
		if (defined $ins{de} && defined $ins{native_bin})
		{
			my $r = $ins{native_bin} / $ins{de};
			check('bulk insert rows/s >= 1.5x native binary', $r >= 1.5, sprintf('%.2fx', $r));
		}
		else { check('bulk insert rows/s >= 1.5x native binary', undef, 'not measured') }
		for my $op (qw(update delete))
		{
			my $de = med('bulk', "${op}_s", 'de');
			my @others = grep { defined } map { med('bulk', "${op}_s", $_) } grep { $_ ne 'de' } @cols;
			my $best = (sort { $a <=> $b } @others)[0];
			if (defined $de && defined $best)
			{
				my $r = $best / $de;
				check("bulk $op rows/s >= 1.2x the best of native and pglogical", $r >= 1.2, sprintf('%.2fx', $r));
			}
			else { check("bulk $op rows/s >= 1.2x the best of native and pglogical", undef, 'not measured') }
		}
		if (defined $tot{de} && defined $tot{native_bin})
		{
			my $r = $tot{de} / $tot{native_bin};
			my $rt = defined $tot{native_text} ? sprintf(' (vs pgoutput text %.2fx)', $tot{de} / $tot{native_text}) : '';
			check('wire bytes/row <= 0.3x pgoutput (binary)', $r <= 0.3, sprintf('%.2fx%s', $r, $rt));
		}
		else { check('wire bytes/row <= 0.3x pgoutput', undef, 'not measured') }
	}
	if ($R{oltp})
	{
		my @oc = ('plain', grep { $_ ne 'plain' } @OLTP_SYSTEMS);
		my $h = sprintf '  %-38s', '';
		$h .= sprintf ' %13s', $LABEL{$_} for @oc;
		$h .= sprintf ' %10s', 'de/native';
		out '';
		out "OLTP: pgbench TPC-B -c $opt{clients} -j $opt{jobs} -T $opt{oltp_seconds} (ceiling -T $opt{ceiling_seconds}), scale $opt{scale}; lag sampled every second";
		out $h;
		my %v;
		%v = map { ($_ => med('oltp', 'tps', $_)) } @oc; table_row('register TPS (higher better)', \@oc, \%v);
		%v = map { ($_ => map { defined $_ ? $_ / 1024 : undef } med('oltp', 'lag_bytes_p95', $_)) } @oc; table_row('lag p95, kB', \@oc, \%v);
		%v = map { ($_ => map { defined $_ ? $_ / 1024 : undef } med('oltp', 'lag_bytes_max', $_)) } @oc; table_row('lag max, kB', \@oc, \%v);
		my $ms = sub { defined $_[0] ? $_[0] * 1000 : undef };
		%v = map { ($_ => $ms->(med('oltp', 'lag_s_p95', $_))) } @oc; table_row('lag p95, ms', \@oc, \%v);
		%v = map { ($_ => $ms->(med('oltp', 'lag_s_max', $_))) } @oc; table_row('lag max, ms', \@oc, \%v);
		%v = map { ($_ => $ms->(med('oltp', 'catchup_s', $_))) } @oc; table_row('catch-up after the load, ms', \@oc, \%v);
		my ($dt, $nt) = (med('oltp', 'tps', 'de'), med('oltp', 'tps', 'native_bin'));
		my $range = sub {
			my @v = sort { $a <=> $b } @{ $R{oltp}{tps}{ $_[0] } // [] };
			@v ? sprintf('%.0f-%.0f', $v[0], $v[-1]) : '?';
		};
		check('OLTP register TPS with data_embassy >= native', defined $dt && defined $nt ? $dt >= $nt : undef,
			defined $dt && defined $nt
			? sprintf('%.0f vs %.0f (%.2fx; rounds %s vs %s)', $dt, $nt, $dt / $nt, $range->('de'), $range->('native_bin'))
			: 'not measured');
		# "<= native" within what the measurement can tell apart: the 10 ms
		# poll, one WAL page (what the register writes between the sampler's
		# two reads), and 5%.
		for ([ 'lag_s_p95', 'OLTP lag p95 (time) <= native', 'ms', 10, 1000 ],
			[ 'lag_bytes_p95', 'OLTP lag p95 (bytes) <= native', 'B', 8192, 1 ],
			[ 'catchup_s', 'OLTP catch-up <= native', 'ms', 20, 1000 ])
		{
			my ($m, $what, $u, $res, $scale) = @$_;
			my ($d, $n) = map { defined $_ ? $_ * $scale : undef }
			  (med('oltp', $m, 'de'), med('oltp', $m, 'native_bin'));
			my $ok = defined $d && defined $n ? $d <= $n * 1.05 + $res : undef;
			check($what, $ok,
				defined $d && defined $n
				? sprintf('%s%s vs %s%s%s', fmt($d), $u, fmt($n), $u,
					$d > $n ? sprintf(' (resolution %s%s + 5%%)', $res, $u) : '')
				: 'not measured');
		}
	}
	if ($R{copy})
	{
		my @cc = grep { $R{copy}{copy_s}{$_} } qw(native_bin de);
		my $h = sprintf '  %-38s', '';
		$h .= sprintf ' %13s', $LABEL{$_} for @cc;
		$h .= sprintf ' %10s', 'de/native';
		out '';
		out sprintf "Initial copy: %d rows, %.0f MB table; from the call until every row is there", $opt{copy_rows},
		  ($NOTE{copy_bytes} // 0) / 1048576;
		out $h;
		my %v = map { my $t = med('copy', 'copy_s', $_); ($_ => $t ? $opt{copy_rows} / $t : undef) } @cc;
		table_row('rows/s (higher better)', \@cc, \%v);
		%v = map { ($_ => med('copy', 'copy_s', $_)) } @cc;
		table_row('seconds', \@cc, \%v);
		my ($d, $n) = (med('copy', 'copy_s', 'de'), med('copy', 'copy_s', 'native_bin'));
		check('initial copy >= 1.0x native', defined $d && defined $n ? $n / $d >= 1.0 : undef,
			defined $d && defined $n ? sprintf('%.2fx', $n / $d) : 'not measured');
	}
	if ($R{mem})
	{
		my @mc = grep { $R{mem}{worker_anon_mb}{$_} } qw(native_bin de);
		my $h = sprintf '  %-38s', '';
		$h .= sprintf ' %13s', $LABEL{$_} for @mc;
		$h .= sprintf ' %10s', 'de/native';
		out '';
		out "Memory: one transaction of $opt{mem_rows} rows; /proc/<pid>/status sampled every 0.2 s (one run)";
		out $h;
		for ([ 'walsender_anon_mb', 'walsender peak RssAnon, MB' ], [ 'worker_anon_mb', 'apply worker peak RssAnon, MB' ],
			[ 'walsender_hwm_mb', 'walsender VmHWM, MB (incl. shmem)' ], [ 'worker_hwm_mb', 'apply worker VmHWM, MB (incl. shmem)' ],
			[ 'commit_to_applied_s', 'commit -> applied, s' ])
		{
			my $m = $_->[0];
			my %v = map { ($_ => med('mem', $m, $_)) } @mc;
			table_row($_->[1], \@mc, \%v);
		}
		my ($w, $a) = (med('mem', 'walsender_anon_mb', 'de'), med('mem', 'worker_anon_mb', 'de'));
		check('memory: walsender and apply worker peak < 64 MB', defined $w && defined $a ? ($w < 64 && $a < 64) : undef,
			defined $w && defined $a ? sprintf('walsender %.1f MB, worker %.1f MB (private, RssAnon)', $w, $a) : 'not measured');
	}
	if ($R{profile})
	{
		out '';
		out "CPU profile of walsender + apply worker during the memory run ($NOTE{perf})";
		for my $s (grep { $R{profile}{$_} } qw(native_bin de))
		{
			my ($z, $o, $c) = map { med('profile', $_, $s) } qw(zstd_pct openssl_pct cpu_s);
			next unless defined $z;
			my $per = join ', ', map { my $p = $R{profile}{$s}{$_};
				sprintf '%s %.1f CPU s: zstd %.1f%% OpenSSL %.1f%%', $_, $p->{samples} / 999, $p->{zstd}, $p->{openssl} }
			  grep { $_ ne 'top' } sort keys %{ $R{profile}{$s} };
			out sprintf '  %-14s zstd %.1f%%, OpenSSL %.1f%% of %.1f CPU s (%s)', $LABEL{$s}, $z, $o, $c, $per;
			if ($R{profile}{$s}{top})
			{
				out "    top symbols: " . join('; ', map { sprintf '%s %.1f%%', $_->[0], $_->[1] / ($c * 999) * 100 }
					@{ $R{profile}{$s}{top} }[0 .. 7]);
			}
		}
		my ($z, $o) = (med('profile', 'zstd_pct', 'de'), med('profile', 'openssl_pct', 'de'));
		check('zstd + OpenSSL < 15% of the pipeline CPU', defined $z ? $z + $o < 15 : undef,
			defined $z ? sprintf('%.1f%%', $z + $o) : 'not measured');
	}
	elsif ($phase{mem}) { check('zstd + OpenSSL < 15% of the pipeline CPU', undef, "not measured: $NOTE{perf}") }
	if (%BROKEN || $NOTE{de_copy_error})
	{
		out '';
		out 'Failures:';
		out "  $LABEL{$_}: $BROKEN{$_}" for sort keys %BROKEN;
		out "  data_embassy copy: $NOTE{de_copy_error}" if $NOTE{de_copy_error};
	}
	out '';
	out 'Targets:';
	out $_ for @CHECKS;
	out '';
	out 'How: bulk = seconds from the COMMIT of the register\'s statement returning until the row with the last id';
	out '  (or its new amount, or its absence) is visible at the embassy, polled every 10 ms; each system applies';
	out '  the transaction as one local transaction; count and sum(amount) are compared afterwards. Wire =';
	out '  tcp_info bytes_acked of the walsender\'s socket before/after the transaction (its payload: CopyData';
	out '  framing and keepalives included). OLTP lag: bytes = register pg_current_wal_lsn() - applied position';
	out '  (data_embassy.lag.applied_lsn; native/pglogical: replication origin remote_lsn); seconds = time until the';
	out '  applied position reaches that pg_current_wal_lsn() (polled every 10 ms).';
	out '  Catch-up = from the end of pgbench until the applied position reaches the register\'s position then.';
	out '  Memory: RssAnon is private memory; VmHWM also counts shared buffers the process touched. A walsender';
	out '  holds up to logical_decoding_work_mem (64 MB) of a transaction in its reorder buffer before it spills';
	out '  or streams, whatever the output plugin.';
	out '  Each system streams alone, the others disabled.';

	my $text = join("\n", @REPORT) . "\n";
	print "\n", $text;
	make_path($opt{results});
	open my $fh, '>', "$opt{results}/latest.txt" or die "$opt{results}/latest.txt: $!";
	print $fh $text;
	close $fh;
	open $fh, '>', "$opt{results}/raw.json" or die;
	print $fh JSON::PP->new->canonical->pretty->encode({ options => \%opt, results => \%R, notes => \%NOTE,
		broken => \%BROKEN, version => $PG_VERSION });
	close $fh;
	plot_lag();
	say "wrote $opt{results}/latest.txt, raw.json" . (-f "$opt{results}/oltp_lag.png" ? ', oltp_lag.png' : '');
}

# OLTP lag over time, one curve per system, from its middle round (round 2
# of 3).  Lag seconds above, MB of WAL below.
sub plot_lag
{
	return unless $R{oltp_series};
	if (system('command -v gnuplot >/dev/null 2>&1'))
	{
		say 'gnuplot not found: no oltp_lag.png';
		return;
	}
	my (@plots_s, @plots_b);
	for my $s (sort keys %{ $R{oltp_series} })
	{
		my $rounds = $R{oltp_series}{$s};
		my @r = sort { $a <=> $b } keys %$rounds;
		my $pick = $r[$#r / 2];
		my $f = "$opt{results}/oltp_lag_$s.dat";
		open my $fh, '>', $f or die;
		print $fh "# seconds_since_start lag_bytes lag_seconds ($LABEL{$s}, round $pick)\n";
		printf $fh "%s %s %s\n", @$_ for @{ $rounds->{$pick} };
		close $fh;
		push @plots_s, "'$f' using 1:3 with lines lw 2 title '$LABEL{$s}'";
		push @plots_b, "'$f' using 1:(\$2/1048576) with lines lw 2 title '$LABEL{$s}'";
	}
	my $gp = <<"EOF";
set terminal pngcairo size 1000,800 noenhanced
set output '$opt{results}/oltp_lag.png'
set multiplot layout 2,1 title 'Replication lag under pgbench TPC-B -c $opt{clients} -T $opt{oltp_seconds} (load ends at the dashed line)'
set grid
set yrange [0:*]
set key top left
set arrow from $opt{oltp_seconds}, graph 0 to $opt{oltp_seconds}, graph 1 nohead dt 2
set ylabel 'lag, seconds'
plot @{[ join ', ', @plots_s ]}
set xlabel 'seconds since the load started'
set ylabel 'lag, MB of WAL'
plot @{[ join ', ', @plots_b ]}
unset multiplot
EOF
	open my $fh, '|-', 'gnuplot 2>/dev/null' or return;
	print $fh $gp;
	close $fh;
}

# ---------------------------------------------------------------- main

say "warning: $PKGLIBDIR/data_embassy.so is an AddressSanitizer build" if $DE_ASAN;
say "data_embassy e2e benchmark: phases $opt{phases}; bulk systems @SYSTEMS"
  . ($HAVE_DE ? '' : ' (data_embassy.so is not installed)')
  . ($HAVE_PGL ? '' : ' (pglogical not installed)');
setup_clusters();
phase_copy() if $phase{copy};
if ($phase{bulk} || $phase{oltp} || $phase{mem})
{
	say '== setting up the streaming systems';
	setup_streaming();
	say '  ready (' . elapsed() . ')';
}
phase_bulk() if $phase{bulk};
phase_oltp() if $phase{oltp};
phase_mem() if $phase{mem};
only_enable(undef) unless $opt{keep};
report();
