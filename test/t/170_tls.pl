
# Copyright (c) data_embassy developers

# The README's "TLS between the sites", step by step: a CA made with
# openssl, a server certificate for the register (localhost, 127.0.0.1), a
# client certificate for the embassy's replication role, ssl = on at the
# register and its pg_hba.conf lines (hostnossl ... reject first, then
# hostssl ... cert, then a broader host line that must never be reached by
# the embassy's role).  The embassy links with sslmode=verify-full and its
# client certificate, copies and streams over TLS (pg_stat_ssl at the
# register shows it), physical replication is refused to its role, and a
# conninfo with sslmode=disable, or one trusting another CA, leaves the
# register disconnected with the reason in last_error.
#
# The TLS rule (require_tls): a conninfo is judged on what libpq would
# use, service file included.  A service that moves the register to a host
# that is not local, without verify-ca or verify-full, is refused by
# add_register, and by the worker at its next connection (last_error says
# why, and nothing is applied); the opt-out shows in the views, and the
# link comes back over verify-full.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

# Run openssl; fail the test with its output if it fails.
sub openssl
{
	my @args = @_;
	my ($stdout, $stderr);
	my $ok = IPC::Run::run([ 'openssl', @args ], '>', \$stdout, '2>', \$stderr);
	BAIL_OUT("openssl @args failed: $stderr") unless $ok;
	return;
}

my $dir = PostgreSQL::Test::Utils::tempdir();

# A CA, the register's server certificate, the embassy's client
# certificate (CN = the role it logs in as), and a second CA that signed
# none of them.
openssl('req', '-new', '-x509', '-nodes', '-days', '2',
	'-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
	'-subj', '/CN=data_embassy test CA',
	'-addext', 'basicConstraints=critical,CA:TRUE',
	'-addext', 'keyUsage=critical,keyCertSign,cRLSign',
	'-keyout', "$dir/ca.key", '-out', "$dir/ca.crt");
openssl('req', '-new', '-x509', '-nodes', '-days', '2',
	'-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
	'-subj', '/CN=another CA',
	'-addext', 'basicConstraints=critical,CA:TRUE',
	'-addext', 'keyUsage=critical,keyCertSign,cRLSign',
	'-keyout', "$dir/other_ca.key", '-out', "$dir/other_ca.crt");

open(my $ext, '>', "$dir/server.ext") or die $!;
print $ext "subjectAltName = DNS:localhost, IP:127.0.0.1\n";
close $ext;
openssl('req', '-new', '-nodes',
	'-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
	'-subj', '/CN=localhost',
	'-keyout', "$dir/server.key", '-out', "$dir/server.csr");
openssl('x509', '-req', '-days', '2', '-in', "$dir/server.csr",
	'-CA', "$dir/ca.crt", '-CAkey', "$dir/ca.key", '-CAcreateserial',
	'-extfile', "$dir/server.ext", '-out', "$dir/server.crt");

openssl('req', '-new', '-nodes',
	'-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
	'-subj', '/CN=embassy_repl',
	'-keyout', "$dir/embassy.key", '-out', "$dir/embassy.csr");
openssl('x509', '-req', '-days', '2', '-in', "$dir/embassy.csr",
	'-CA', "$dir/ca.crt", '-CAkey', "$dir/ca.key", '-CAcreateserial',
	'-out', "$dir/embassy.crt");

# private keys: mode 0600, owned by the user the clusters run as (us)
chmod 0600, "$dir/ca.key", "$dir/other_ca.key", "$dir/server.key",
  "$dir/embassy.key";
foreach my $key ('server.key', 'embassy.key')
{
	my @st = stat("$dir/$key");
	is(sprintf('%04o', $st[2] & 07777), '0600', "$key has mode 0600");
	is($st[4], $>, "$key is owned by the user the clusters run as");
}

# The register: TLS on, TCP on 127.0.0.1, and the README's pg_hba.conf.
my $reg = DataEmbassy::register_node('register');
my $port = $reg->port;
$reg->append_conf('postgresql.conf', qq{
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
ssl_ca_file = '$dir/ca.crt'
});
open(my $hba, '>', $reg->data_dir . '/pg_hba.conf') or die $!;
print $hba qq{
# the test's own connections, over the Unix socket
local   all           all                              trust
local   replication   all                              trust
# the embassy (the README's lines): TLS and its client certificate, no
# physical replication
hostnossl all         embassy_repl   all               reject
host      replication embassy_repl   all               reject
hostssl   postgres    embassy_repl   127.0.0.1/32      cert
# broader lines: the embassy's role never reaches them
host      all         all            127.0.0.1/32      trust
host      replication all            127.0.0.1/32      trust
};
close $hba;
$reg->restart;

my $ddl = q{
	CREATE TABLE person (id bigserial PRIMARY KEY, code text, name text);
};
$reg->safe_psql('postgres', $ddl . q{
	INSERT INTO person (code, name)
	SELECT 'C' || g, 'n' || g FROM generate_series(1, 1000) g;
	CREATE ROLE embassy_repl LOGIN REPLICATION;
});

my $emb = DataEmbassy::embassy_node('embassy');
$emb->safe_psql('postgres', $ddl);

my $tls = "host=127.0.0.1 port=$port dbname=postgres user=embassy_repl"
  . " sslmode=verify-full sslrootcert=$dir/ca.crt"
  . " sslcert=$dir/embassy.crt sslkey=$dir/embassy.key";

# what pg_hba.conf lets through, tried with psql
sub try_connect
{
	my ($conninfo) = @_;
	my ($stdout, $stderr);
	IPC::Run::run([ 'psql', '-X', '-A', '-t', '-d', $conninfo, '-c', 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' ],
		'>', \$stdout, '2>', \$stderr);
	chomp $stdout;
	return ($stdout, $stderr);
}
my ($out, $err) = try_connect($tls);
is($out, 't', 'the embassy role connects with TLS and its certificate');
($out, $err) = try_connect(
	"host=127.0.0.1 port=$port dbname=postgres user=embassy_repl sslmode=disable");
like($err, qr/pg_hba\.conf rejects connection .* no encryption/,
	'without TLS the hostnossl line rejects it before the broader host line');
($out, $err) = try_connect(
	"host=127.0.0.1 port=$port dbname=postgres user=embassy_repl"
	  . " sslmode=verify-full sslrootcert=$dir/ca.crt");
like($err, qr/certificate authentication failed|connection requires a valid client certificate/,
	'with TLS but no client certificate it is refused');
($out, $err) = try_connect(
	"host=127.0.0.1 port=$port dbname=postgres user=embassy_repl"
	  . " sslmode=verify-full sslrootcert=$dir/other_ca.crt"
	  . " sslcert=$dir/embassy.crt sslkey=$dir/embassy.key");
like($err, qr/certificate verify failed/,
	'verify-full refuses a server its CA did not sign');
($out, $err) = try_connect("$tls replication=true");
like($err, qr/pg_hba\.conf rejects replication connection .* "embassy_repl"/,
	'physical replication (a base backup of the cluster) is refused to the role');
($out, $err) = try_connect(
	"host=localhost port=$port dbname=postgres user=embassy_repl"
	  . " sslmode=verify-full sslrootcert=$dir/ca.crt"
	  . " sslcert=$dir/embassy.crt sslkey=$dir/embassy.key");
is($out, 't', 'the server certificate is valid for localhost too');

# The link, over TLS: initial copy, then streaming.
DataEmbassy::link_sites($reg, $emb, 'population', copy_data => 1,
	conninfo => $tls);
DataEmbassy::wait_caught_up($reg, $emb, 'population',
	msg => 'initial copy over TLS');
$reg->safe_psql('postgres', q{
	INSERT INTO person (code, name)
	SELECT 'S' || g, 's' || g FROM generate_series(1, 500) g;
	UPDATE person SET name = upper(name) WHERE id % 3 = 0;
	DELETE FROM person WHERE id % 7 = 0;
});
DataEmbassy::wait_caught_up($reg, $emb, 'population',
	msg => 'streaming over TLS');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# the walsender serving the embassy is on TLS, with the client certificate
is($reg->safe_psql('postgres', q{
	SELECT s.ssl, s.client_dn, r.usename, host(r.client_addr)
	FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
	WHERE r.application_name LIKE 'data_embassy%'}),
	't|/CN=embassy_repl|embassy_repl|127.0.0.1',
	'pg_stat_ssl shows the embassy\'s walsender on TLS with its certificate');
is($reg->safe_psql('postgres',
		'SELECT active, client_addr FROM data_embassy.embassies'),
	't|127.0.0.1', 'the embassies view shows the connection');
is($emb->safe_psql('postgres', q{
	SELECT l.require_tls, f.require_tls, r.require_tls
	FROM data_embassy.lag l JOIN data_embassy.failover_status f USING (register)
		 JOIN data_embassy.registers r ON r.name = l.register
	WHERE l.register = 'population'}),
	't|t|t', 'require_tls is on by default and the views show it');

$emb->safe_psql('postgres', "SELECT data_embassy.drop_register('population')");
is($reg->safe_psql('postgres',
		q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'data_embassy%'}),
	'0', 'drop_register dropped the slot over TLS');

# The register reached through a service file, as libpq reads it: the
# embassy's postmaster (and so its workers) gets PGSERVICEFILE.
my $rkey = DataEmbassy::public_key($reg);
my $service_file = "$dir/pg_service.conf";
sub write_services
{
	my ($tls_host, $tls_sslmode) = @_;
	open(my $fh, '>', $service_file) or die $!;
	print $fh qq{[register_tls]
host=$tls_host
port=$port
dbname=postgres
user=embassy_repl
connect_timeout=1
sslmode=$tls_sslmode
sslrootcert=$dir/ca.crt
sslcert=$dir/embassy.crt
sslkey=$dir/embassy.key

[register_far]
host=192.0.2.1
port=$port
dbname=postgres
user=embassy_repl
};
	close $fh;
	return;
}
write_services('127.0.0.1', 'verify-full');
$ENV{PGSERVICEFILE} = $service_file;
$emb->restart;

my ($ret, $stdout, $stderr) = $emb->psql('postgres',
	"SELECT data_embassy.add_register('far', 'service=register_far', '$rkey', false)");
isnt($ret, 0, 'add_register refuses a service that names another host without verify-full');
like($stderr,
	qr/connection to register "far" must use sslmode "verify-full" or "verify-ca".*DETAIL:  Host "192\.0\.2\.1" is not on this machine, and libpq would connect to it with sslmode "prefer"\..*HINT:  .*require_tls => false/s,
	'the refusal names the host of the service file, the sslmode, and the opt-out');

# The table holds the rows the first link copied; the new slot starts now.
$emb->safe_psql('postgres',
	"SELECT data_embassy.add_register('svc', 'service=register_tls', '$rkey', false)");
ok(DataEmbassy::wait_state($emb, 'svc', 'streaming'),
	'the worker connects through the service and makes its slot');
$reg->safe_psql('postgres',
	"INSERT INTO person (code, name) VALUES ('T1', 'over the service')");
ok( $emb->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM person WHERE code = 'T1'"),
	'a register reached through a verify-full service streams');
is($reg->safe_psql('postgres', q{
	SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
	WHERE r.application_name LIKE 'data_embassy%'}),
	't', 'the service\'s connection is on TLS');

# The service moves the register to another host without verify-full; the
# worker is cut off and, at its next connection, refuses the conninfo
# without connecting.
write_services('192.0.2.1', 'require');
$reg->safe_psql('postgres', q{
	SELECT pg_terminate_backend(pid) FROM pg_stat_replication
	WHERE application_name LIKE 'data_embassy%'});
ok( $emb->poll_query_until('postgres', q{
		SELECT state = 'disconnected' AND last_error LIKE
			'connection to register "svc" must use sslmode "verify-full" or "verify-ca": Host "192.0.2.1" is not on this machine, and libpq would connect to it with sslmode "require".'
		FROM data_embassy.lag WHERE register = 'svc'}),
	'the worker refuses the moved service; last_error says why');
$reg->safe_psql('postgres',
	"INSERT INTO person (code, name) VALUES ('T2', 'while refused')");
is($emb->safe_psql('postgres', "SELECT count(*) FROM person WHERE code = 'T2'"),
	'0', 'nothing is applied while the conninfo is refused');

# The opt-out shows in the views, and the worker then tries the host (it
# never answers: connect_timeout=1).
$emb->safe_psql('postgres',
	"SELECT data_embassy.alter_register('svc', require_tls => false)");
is($emb->safe_psql('postgres', q{
	SELECT l.require_tls, f.require_tls
	FROM data_embassy.lag l JOIN data_embassy.failover_status f USING (register)
	WHERE l.register = 'svc'}),
	'f|f', 'the opt-out shows in lag and failover_status');
ok( $emb->poll_query_until('postgres', q{
		SELECT state = 'disconnected' AND last_error NOT LIKE '%must use sslmode%'
		FROM data_embassy.lag WHERE register = 'svc'}),
	'opted out, the worker tries the host itself');

# Back to the register over verify-full, with the rule on again.
write_services('127.0.0.1', 'verify-full');
($ret, $stdout, $stderr) = $emb->psql('postgres',
	"SELECT data_embassy.alter_register('svc', require_tls => true)");
is($ret, 0, 'alter_register turns the rule on again');
is($stderr, '', 'without a warning: the service verifies the register');
ok( $emb->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM person WHERE code = 'T2'"),
	'the link comes back over verify-full with what was held back');
DataEmbassy::wait_caught_up($reg, $emb, 'svc', msg => 'and catches up');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
$emb->safe_psql('postgres', "SELECT data_embassy.drop_register('svc')");

# What the embassy says when the link is refused.
foreach my $case (
	[
		'sslmode=disable',
		"host=127.0.0.1 port=$port dbname=postgres user=embassy_repl sslmode=disable",
		qr/pg_hba\.conf rejects connection .* no encryption/
	],
	[
		'another CA',
		"host=127.0.0.1 port=$port dbname=postgres user=embassy_repl"
		  . " sslmode=verify-full sslrootcert=$dir/other_ca.crt"
		  . " sslcert=$dir/embassy.crt sslkey=$dir/embassy.key",
		qr/certificate verify failed/
	])
{
	my ($label, $conninfo, $why) = @$case;
	$emb->safe_psql('postgres',
		"SELECT data_embassy.add_register('refused', "
		  . DataEmbassy::sql_quote($conninfo) . ", '$rkey', false)");
	ok( $emb->poll_query_until('postgres', q{
			SELECT state = 'disconnected' AND last_error IS NOT NULL
			FROM data_embassy.lag WHERE register = 'refused'}),
		"$label: the register is disconnected");
	like(DataEmbassy::lag_row($emb, 'refused')->{last_error}, $why,
		"$label: last_error says why");
	is($reg->safe_psql('postgres',
			q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'data_embassy%'}),
		'0', "$label: no slot was made at the register");
	$emb->safe_psql('postgres', "SELECT data_embassy.drop_register('refused')");
}

$emb->stop;
$reg->stop;
done_testing();
