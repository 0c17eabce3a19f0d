
# Copyright (c) data_embassy developers

# Privileges and keys across two live sites:
# - a plain role can read no key file, change nothing, and cannot read
#   data_embassy.registers (conninfo may hold a password);
# - members of pg_monitor read data_embassy.lag, failover_status and
#   embassies;
# - the register streams to pinned embassy keys only, whoever asks, even a
#   role with REPLICATION over a replication connection;
# - rotating the embassy key (a new embassy cluster with a new identity)
#   loses no change that was committed while the rotation ran.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

my $schema = q{
CREATE TABLE citizen (id integer PRIMARY KEY, name text NOT NULL);
CREATE SEQUENCE doc_no;
CREATE TABLE document (no bigint PRIMARY KEY DEFAULT nextval('doc_no'),
	citizen integer NOT NULL, kind text);
};
$reg->safe_psql('postgres', $schema);
$emb->safe_psql('postgres', $schema);
$reg->safe_psql('postgres', q{
	INSERT INTO citizen SELECT g, 'citizen ' || g FROM generate_series(1, 1000) g;
	INSERT INTO document (citizen, kind) SELECT g, 'passport' FROM generate_series(1, 1000) g;
});

# The embassy's conninfo carries a password (trust ignores it): it must
# not be readable by anyone but the table's owner.
# (Cluster::connstr quotes dbname, which would need escaping inside SQL)
my $reg_conninfo = 'host=' . $reg->host . ' port=' . $reg->port . ' dbname=postgres';
my $conninfo = "$reg_conninfo password=s3cret-replication";
DataEmbassy::link_sites($reg, $emb, 'population',
	copy_data => 1, conninfo => $conninfo);
DataEmbassy::wait_caught_up($reg, $emb, 'population', msg => 'linked');

my $ekey = DataEmbassy::public_key($emb);
my $rkey = DataEmbassy::public_key($reg);
my $slot = $reg->safe_psql('postgres',
	q{SELECT slot_name FROM data_embassy.embassy_pins WHERE name = 'embassy'});

foreach my $node ($reg, $emb)
{
	$node->safe_psql('postgres', q{
		CREATE ROLE plain LOGIN;
		CREATE ROLE watcher LOGIN IN ROLE pg_monitor;
		GRANT SELECT ON ALL TABLES IN SCHEMA public TO plain, watcher;
	});
}

# Run SQL as a role; returns (ok, stdout, stderr).
sub as_role
{
	my ($node, $role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql,
		extra_params => [ '-U', $role ]);
	return ($ret == 0, $out, $err);
}

sub refused
{
	my ($node, $role, $sql, $what, $pattern) = @_;
	$pattern //= qr/permission denied|must be superuser|must be a member|not allowed/i;
	my ($ok, $out, $err) = as_role($node, $role, $sql);
	ok(!$ok && $err =~ $pattern, "$role: $what is refused")
	  or diag("ok=$ok out=$out err=$err");
	return;
}

sub allowed
{
	my ($node, $role, $sql, $what) = @_;
	my ($ok, $out, $err) = as_role($node, $role, $sql);
	ok($ok, "$role: $what") or diag($err);
	return $out;
}

# ---- a plain role ----

foreach my $node ($reg, $emb)
{
	my $site = $node == $reg ? 'register' : 'embassy';
	foreach my $role (qw(plain watcher))
	{
		refused($node, $role,
			q{SELECT pg_read_binary_file('data_embassy/identity.key')},
			"reading the key file at the $site");
		refused($node, $role,
			q{SELECT pg_read_file('data_embassy/identity.key', 0, 10)},
			"reading the key file as text at the $site");
		refused($node, $role, q{SELECT pg_ls_dir('data_embassy')},
			"listing the key directory at the $site");
		refused($node, $role, q{SELECT data_embassy.generate_key()},
			"generate_key() at the $site");
	}
}

refused($emb, 'plain',
	"SELECT data_embassy.add_register('r2', 'host=/nonexistent', '$rkey')",
	'add_register()');
refused($emb, 'plain', q{SELECT data_embassy.drop_register('population')},
	'drop_register()');
refused($emb, 'plain', q{SELECT data_embassy.pause_register('population')},
	'pause_register()');
refused($emb, 'plain', q{SELECT data_embassy.resume_register('population')},
	'resume_register()');
refused($emb, 'plain', q{SELECT * FROM data_embassy.promote('population')},
	'promote()');
refused($emb, 'plain', q{SELECT * FROM data_embassy.promote()},
	'promote() of all registers');
refused($emb, 'plain', q{SELECT conninfo FROM data_embassy.registers},
	'reading data_embassy.registers');
refused($emb, 'watcher', q{SELECT conninfo FROM data_embassy.registers},
	'reading data_embassy.registers');
refused($emb, 'plain', q{SELECT * FROM data_embassy.lag}, 'reading the lag view');
refused($emb, 'plain', q{UPDATE data_embassy.registers SET paused = true},
	'updating data_embassy.registers');
refused($emb, 'plain', q{DELETE FROM citizen},
	'writing a replicated table', qr/permission denied|replicated|read-only|cannot/i);

refused($reg, 'plain', "SELECT data_embassy.add_embassy('thief', repeat('5a', 32) || repeat('ed', 32))",
	'add_embassy()');
refused($reg, 'plain', q{SELECT data_embassy.drop_embassy('embassy')},
	'drop_embassy()');
refused($reg, 'plain', "SELECT count(*) FROM data_embassy.copy_frames('$ekey', repeat('0', 32), 'no_slot', '00000003-00000002-1')",
	'copy_frames()');
refused($reg, 'plain', q{SELECT * FROM data_embassy.embassies}, 'reading the embassies view');
refused($reg, 'plain', q{INSERT INTO data_embassy.embassy_pins (name, embassy_key, slot_name)
	VALUES ('thief', repeat('5a', 32) || repeat('ed', 32), 'x')}, 'inserting a pin directly');

# Nothing changed.
is($emb->safe_psql('postgres', q{SELECT name || ':' || paused FROM data_embassy.registers}),
	'population:false', 'the register is still there and not paused');
is($reg->safe_psql('postgres', q{SELECT string_agg(name, ',') FROM data_embassy.embassy_pins}),
	'embassy', 'the register has its one pin');

# ---- pg_monitor ----

my $lag = allowed($emb, 'watcher',
	q{SELECT register || ':' || state FROM data_embassy.lag}, 'reads data_embassy.lag');
like($lag, qr/^population:(streaming|catching_up)$/, 'watcher sees the register streaming');
allowed($emb, 'watcher', q{SELECT register, can_promote FROM data_embassy.failover_status},
	'reads data_embassy.failover_status');
my $emb_view = allowed($reg, 'watcher',
	q{SELECT name || ':' || active FROM data_embassy.embassies}, 'reads data_embassy.embassies');
is($emb_view, 'embassy:true', 'watcher sees the embassy streaming');
my ($ok, $out) = as_role($emb, 'watcher',
	q{SELECT count(*) FROM data_embassy.lag l WHERE l::text LIKE '%s3cret%'});
is($out, '0', 'the lag view shows no password');

# ---- key rotation: a new embassy cluster with its own key ----

# A writer that keeps committing during the whole rotation.
my $n = 10000;
sub write_some
{
	my ($what) = @_;
	foreach (1 .. 3)
	{
		$n++;
		$reg->safe_psql('postgres', qq{
			INSERT INTO citizen VALUES ($n, '$what');
			INSERT INTO document (citizen, kind) VALUES ($n, '$what');});
	}
	return;
}

write_some('before rotation');
my $emb2 = DataEmbassy::embassy_node('embassy2');
$emb2->safe_psql('postgres', $schema);
write_some('new embassy built');

# step 1: pin the new embassy's key at the register
my $ekey2 = DataEmbassy::public_key($emb2);
isnt($ekey2, $ekey, 'the new embassy has its own key');
$reg->safe_psql('postgres', "SELECT data_embassy.add_embassy('embassy-2026', '$ekey2')");
write_some('new key pinned');

# step 2: add the register at the new embassy, with the initial copy
$emb2->safe_psql('postgres',
	"SELECT data_embassy.add_register('population', '$reg_conninfo', '$rkey', true)");
write_some('copy started');

# step 3: both stream
DataEmbassy::wait_caught_up($reg, $emb2, 'population', msg => 'new embassy caught up');
write_some('both streaming');
DataEmbassy::wait_caught_up($reg, $emb, 'population', msg => 'old embassy still streaming');
DataEmbassy::wait_caught_up($reg, $emb2, 'population', msg => 'new embassy streaming');
is($reg->safe_psql('postgres',
		q{SELECT string_agg(name || ':' || active, ',' ORDER BY name) FROM data_embassy.embassies}),
	'embassy:true,embassy-2026:true', 'the register streams to both embassies');

# step 4: retire the old embassy: drop_register there, drop_embassy here
$emb->safe_psql('postgres', q{SELECT data_embassy.drop_register('population')});
write_some('old register dropped');
$reg->safe_psql('postgres', q{SELECT data_embassy.drop_embassy('embassy')});
write_some('old pin dropped');

is($reg->safe_psql('postgres',
		q{SELECT string_agg(name, ',') FROM data_embassy.embassy_pins}),
	'embassy-2026', 'only the new pin is left');
is($reg->safe_psql('postgres',
		"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'0', 'the old embassy slot is gone');
my ($ret, $stdout, $stderr) = $reg->psql('postgres',
	"SELECT count(*) FROM data_embassy.copy_frames('$ekey', repeat('0', 32), 'no_slot', '00000003-00000002-1')");
ok($ret != 0 && $stderr =~ /not pinned/, 'the old key is no longer served')
  or diag($stderr);

DataEmbassy::wait_caught_up($reg, $emb2, 'population', msg => 'new embassy after rotation');
my $rows = DataEmbassy::compare_tables($reg, $emb2, 'postgres');
is($emb2->safe_psql('postgres', q{SELECT count(*) FROM citizen WHERE id > 10000}),
	$n - 10000, 'every change committed during the rotation is at the new embassy');
note("rotation: $rows rows compared, " . ($n - 10000) . ' rows written during it');

# ---- the register streams only to pinned keys ----
# (last: a register that crashed here would take the other checks with it)

# a well-formed key that nobody pinned
my $unpinned = ('5a' x 32) . ('ed' x 32);
$reg->safe_psql('postgres', q{CREATE ROLE replicator LOGIN REPLICATION});

# by SQL, even as superuser
$reg->safe_psql('postgres',
	q{SELECT pg_create_logical_replication_slot('thief_slot', 'data_embassy')});
$reg->safe_psql('postgres', q{INSERT INTO citizen VALUES (5001, 'after the thief came')});
($ret, $stdout, $stderr) = $reg->psql('postgres',
	"SELECT count(*) FROM pg_logical_slot_get_binary_changes('thief_slot', NULL, NULL, 'embassy_key', '$unpinned')");
ok($ret != 0 && $stderr =~ /not pinned/,
	'pg_logical_slot_get_binary_changes with an unpinned key is refused')
  or diag($stderr);
($ret, $stdout, $stderr) = $reg->psql('postgres',
	"SELECT count(*) FROM pg_logical_slot_get_binary_changes('thief_slot', NULL, NULL)");
ok($ret != 0 && $stderr =~ /embassy_key/, 'without a key it is refused too')
  or diag($stderr);

# over a replication connection, as a role with REPLICATION
my $repl_conn = $reg->connstr('postgres') . ' replication=database user=replicator';
($ret, $stdout, $stderr) = $reg->psql('postgres',
	"START_REPLICATION SLOT thief_slot LOGICAL 0/0 (embassy_key '$unpinned')",
	connstr => $repl_conn, timeout => 30, timed_out => \my $timed_out1);
ok(!$timed_out1 && $ret != 0 && $stderr =~ /not pinned/,
	'START_REPLICATION with an unpinned key is refused to a REPLICATION role')
  or diag("ret=$ret err=$stderr");
($ret, $stdout, $stderr) = $reg->psql('postgres',
	"START_REPLICATION SLOT thief_slot LOGICAL 0/0 (embassy_key 'xyz')",
	connstr => $repl_conn, timeout => 30, timed_out => \my $timed_out2);
ok(!$timed_out2 && $ret != 0 && $stderr =~ /embassy_key|invalid/i,
	'START_REPLICATION with a malformed key is refused')
  or diag("ret=$ret err=$stderr");
# the slot kept everything: nothing was consumed by the refused attempts
is($reg->safe_psql('postgres',
		q{SELECT count(*) > 0 FROM pg_logical_slot_peek_binary_changes('thief_slot', NULL, NULL, 'embassy_key', '}
		  . $ekey2 . q{')}),
	't', 'the refused reads consumed nothing from the slot');
$reg->safe_psql('postgres', q{SELECT pg_drop_replication_slot('thief_slot')});

$emb2->stop;
$emb->stop;
$reg->stop;
done_testing();
