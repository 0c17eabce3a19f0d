
# Failover: the write guard before promotion, sequences, promote() with the
# register lost and as a planned switch-over, the fence, a crash in the
# middle of promote(), and who may do what.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

my $ddl = q{
	CREATE TABLE person (id bigserial PRIMARY KEY, code text UNIQUE, name text);
	CREATE TABLE document (id serial PRIMARY KEY, person_id bigint REFERENCES person, number text);
	CREATE SEQUENCE ticket_seq START 1000 INCREMENT 10;
};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
$reg->safe_psql('postgres', q{
	INSERT INTO person (code, name) SELECT 'C' || g, 'name ' || g FROM generate_series(1, 500) g;
	INSERT INTO document (person_id, number) SELECT g, 'D' || g FROM generate_series(1, 500) g;
});

DataEmbassy::link_sites($reg, $emb, 'population', copy_data => 1);
DataEmbassy::wait_caught_up($reg, $emb, 'population');

# --- the write guard -------------------------------------------------------
$reg->safe_psql('postgres', q{
	INSERT INTO person (code, name) SELECT 'S' || g, 'streamed ' || g FROM generate_series(1, 500) g;
});
DataEmbassy::wait_caught_up($reg, $emb, 'population');

for my $sql (
	"INSERT INTO person (code, name) VALUES ('local', 'x')",
	"UPDATE person SET name = 'x' WHERE id = 1",
	"DELETE FROM document WHERE id = 1",
	"TRUNCATE document",
	"COPY person (code, name) FROM STDIN")
{
	my ($ret, $out, $err) = $emb->psql('postgres', $sql);
	isnt($ret, 0, "refused at the embassy before promotion: $sql");
	like($err, qr/cannot .* table "public\.(person|document)"/, 'with the documented error');
	like($err, qr/HINT:.*data_embassy\.promote\('population'\)/, 'and a hint on how to promote');
}
is($emb->safe_psql('postgres', 'SELECT count(*) FROM person'), '1000', 'reads are not blocked');

# --- sequences -------------------------------------------------------------
# Values handed out by the register, in rows and in rolled-back work.
$reg->safe_psql('postgres', q{
	SELECT nextval('ticket_seq') FROM generate_series(1, 50);
	BEGIN; SELECT nextval('person_id_seq') FROM generate_series(1, 300); ROLLBACK;
	INSERT INTO person (code, name) VALUES ('last', 'last before the loss');
});
DataEmbassy::wait_caught_up($reg, $emb, 'population');
my $reg_person_max = $reg->safe_psql('postgres', q{SELECT last_value FROM person_id_seq});
my $reg_ticket = $reg->safe_psql('postgres', q{SELECT last_value FROM ticket_seq});

# Heartbeats every second: a sealed proof older than two seconds is stale.
$emb->safe_psql('postgres', q{
	ALTER SYSTEM SET data_embassy.heartbeat_interval = '1s';
	SELECT pg_reload_conf();
});
ok( $emb->poll_query_until('postgres',
		q{SELECT caught_up AND lag_time = '0' AND contact_age < '2 s'
		  FROM data_embassy.lag WHERE register = 'population'}),
	'idle and alive: caught up, with a fresh sealed proof');
is($emb->safe_psql('postgres', q{
	SELECT fs.caught_up, fs.unreplicated_bytes, l.retries, l.failing_since IS NULL
	FROM data_embassy.failover_status fs JOIN data_embassy.lag l USING (register)}),
	't|0|0|t', 'failover_status says caught up, no retries');

# --- the home site is lost --------------------------------------------------
$reg->stop('immediate');
ok(DataEmbassy::wait_state($emb, 'population', 'disconnected'), 'disconnected');

# The views do not say "caught up": lag_time grows from the last sealed
# proof, across the worker's retries.
ok( $emb->poll_query_until('postgres',
		q{SELECT lag_time > '2 s' AND NOT caught_up AND retries >= 2
				 AND failing_since IS NOT NULL
		  FROM data_embassy.lag WHERE register = 'population'}),
	'register down: lag_time past two heartbeat intervals, retries counted');
my $fs = $emb->safe_psql('postgres', q{
	SELECT state, can_promote, caught_up, last_contact_at IS NOT NULL,
		   contact_age > '2 s', lag_time >= contact_age,
		   unreplicated_bytes IS NOT NULL
	FROM data_embassy.failover_status WHERE register = 'population'});
is($fs, 'disconnected|t|f|t|t|t|t',
	'failover_status shows the loss, how old the last sealed proof is, and no catch-up');
my ($lag1, $retries1) = split /\|/, $emb->safe_psql('postgres', q{
	SELECT extract(epoch FROM lag_time), retries
	FROM data_embassy.lag WHERE register = 'population'});
ok( $emb->poll_query_until('postgres',
		qq{SELECT retries > $retries1 FROM data_embassy.lag
		   WHERE register = 'population'}),
	'the worker keeps retrying');
my $lag2 = $emb->safe_psql('postgres', q{
	SELECT extract(epoch FROM lag_time)
	FROM data_embassy.lag WHERE register = 'population'});
cmp_ok($lag2, '>', $lag1, 'lag_time does not reset on a retry');

# A planned switch-over needs a sealed proof made after the call began: with
# the register down there is none, and nothing is promoted.
my ($ret, $out, $err) = $emb->psql('postgres',
	"SELECT * FROM data_embassy.promote('population', wait_for_catchup => '2 s')");
isnt($ret, 0, 'promote(wait_for_catchup) with the register down fails');
like($err, qr/register "population" could not be proven caught up within 2000 ms; nothing was promoted/,
	'saying no proof came');
like($err, qr/accept_data_loss/, 'and how to accept the loss');
is($emb->safe_psql('postgres', q{SELECT state FROM data_embassy.registers}),
	'streaming', 'the register is not promoted');
ok(DataEmbassy::wait_state($emb, 'population', 'disconnected'),
	'the worker goes on trying');
($ret, $out, $err) = $emb->psql('postgres',
	"SELECT * FROM data_embassy.promote('population', '1 s', NULL)");
like($err, qr/accept_data_loss must not be null/, 'accept_data_loss NULL is refused');

# Non-admin roles may not promote; pg_monitor may look.
$emb->safe_psql('postgres', q{
	CREATE ROLE clerk LOGIN; CREATE ROLE watcher LOGIN IN ROLE pg_monitor;
});
($ret, $out, $err) = $emb->psql('postgres', "SELECT data_embassy.promote('population')",
	extra_params => ['-U', 'clerk']);
isnt($ret, 0, 'a plain role cannot promote');
like($err, qr/permission denied/, 'permission denied');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM data_embassy.failover_status',
		extra_params => ['-U', 'watcher']),
	'1', 'pg_monitor reads failover_status');
($ret, $out, $err) = $emb->psql('postgres', 'SELECT conninfo FROM data_embassy.registers',
	extra_params => ['-U', 'watcher']);
isnt($ret, 0, 'pg_monitor cannot read conninfo');

# Unknown name.
($ret, $out, $err) = $emb->psql('postgres', "SELECT data_embassy.promote('nosuch')");
like($err, qr/register "nosuch" does not exist/, 'promoting an unknown register is an error');

my $row;
($ret, $row, $err) = $emb->psql('postgres', q{
	SELECT register, promoted_at IS NOT NULL, applied_lsn IS NOT NULL,
		   unreplicated_bytes
	FROM data_embassy.promote('population', wait_for_catchup => '1 s',
							  accept_data_loss => true)});
my $promoted_unreplicated = (split /\|/, $row)[3];
is($row, "population|t|t|$promoted_unreplicated", 'promote() with accept_data_loss returns its row');
like($err, qr/WARNING:  register "population" is promoted without proof that it caught up/,
	'with a warning that no proof came');

($ret, $out, $err) = $emb->psql('postgres', "SELECT data_embassy.promote('population')");
like($err, qr/register "population" is already promoted/, 'a second promote is an error');

is($emb->safe_psql('postgres',
		q{SELECT state, can_promote, promoted_at IS NOT NULL, unreplicated_bytes
		  FROM data_embassy.failover_status}),
	"promoted|f|t|$promoted_unreplicated",
	'failover_status shows the promotion and the unreplicated bytes promote() reported');

# Application writes succeed, with ids above everything the register used.
$emb->safe_psql('postgres', q{
	INSERT INTO person (code, name) SELECT 'E' || g, 'after failover' FROM generate_series(1, 100) g;
	INSERT INTO document (person_id, number) SELECT id, 'N' || id FROM person WHERE code LIKE 'E%';
});
cmp_ok($emb->safe_psql('postgres', q{SELECT min(id) FROM person WHERE code LIKE 'E%'}),
	'>', $reg_person_max, 'new person ids are above every id the register handed out');
cmp_ok($emb->safe_psql('postgres', q{SELECT nextval('ticket_seq')}),
	'>', $reg_ticket, 'other sequences too');
is($emb->safe_psql('postgres', q{SELECT count(*) FROM person}), '1101', 'all rows there');

# The fence holds across restarts and against the old primary.
$emb->restart;
$reg->start;
$reg->safe_psql('postgres', "INSERT INTO person (code, name) VALUES ('zombie', 'old primary')");
sleep 3;
is($emb->safe_psql('postgres', q{SELECT state || ':' || coalesce(worker_pid::text, 'none')
		FROM data_embassy.lag WHERE register = 'population'}),
	'promoted:none', 'no worker after a restart');
is($emb->safe_psql('postgres', q{SELECT count(*) FROM person WHERE code = 'zombie'}),
	'0', 'the old primary does not replicate again');
is($reg->safe_psql('postgres', q{SELECT count(*) FROM data_embassy.embassies WHERE active}),
	'0', 'nothing streams from the old primary');
($ret, $out, $err) = $emb->psql('postgres',
	"SELECT data_embassy.add_register('population', 'dbname=postgres', '"
	  . DataEmbassy::public_key($reg) . "')");
like($err, qr/already exists/, 'add_register of a promoted name needs a drop first');

# --- planned switch-over ----------------------------------------------------
my $reg2 = DataEmbassy::register_node('register2');
$emb->safe_psql('postgres', 'CREATE DATABASE planned');
$emb->safe_psql('planned', 'CREATE EXTENSION data_embassy');
$reg2->safe_psql('postgres', 'CREATE TABLE t (id serial PRIMARY KEY, v text)');
$emb->safe_psql('planned', 'CREATE TABLE t (id serial PRIMARY KEY, v text)');
DataEmbassy::link_sites($reg2, $emb, 'planned', embassy_db => 'planned', copy_data => 0);
ok(DataEmbassy::wait_state($emb, 'planned', 'streaming', 'planned'), 'second register streaming');
$reg2->safe_psql('postgres', "INSERT INTO t (v) SELECT 'v' || g FROM generate_series(1, 20000) g");
my $before = $reg2->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$row = $emb->safe_psql('planned',
	qq{SELECT unreplicated_bytes, source_lsn >= '$before', applied_lsn >= '$before'
	   FROM data_embassy.promote('planned', '30 s')});
is($row, '0|t|t',
	'planned switch-over: caught up with a sealed proof made after the call began, unreplicated_bytes = 0');
is($emb->safe_psql('planned',
		q{SELECT f.state, f.unreplicated_bytes, f.source_lsn = p.source_lsn,
				 f.applied_lsn = p.promoted_lsn
		  FROM data_embassy.failover_status f
			   JOIN data_embassy.promotions p USING (register)}),
	'promoted|0|t|t', 'failover_status agrees with promote()');
DataEmbassy::compare_tables($reg2, $emb, 'postgres', 'planned');

# --- a crash in the middle of promote() -------------------------------------
my $reg3 = DataEmbassy::register_node('register3');
$emb->safe_psql('postgres', 'CREATE DATABASE crashy');
$emb->safe_psql('crashy', 'CREATE EXTENSION data_embassy');
$reg3->safe_psql('postgres', 'CREATE TABLE t (id serial PRIMARY KEY, v text)');
$emb->safe_psql('crashy', 'CREATE TABLE t (id serial PRIMARY KEY, v text)');
DataEmbassy::link_sites($reg3, $emb, 'crashy', embassy_db => 'crashy', copy_data => 0);
ok(DataEmbassy::wait_state($emb, 'crashy', 'streaming', 'crashy'), 'third register streaming');
$reg3->safe_psql('postgres', "INSERT INTO t (v) SELECT 'v' || g FROM generate_series(1, 100) g");
DataEmbassy::wait_caught_up($reg3, $emb, 'crashy', embassy_db => 'crashy');

my ($pout, $perr) = ('', '');
my $h = IPC::Run::start(
	[
		'psql', '-X', '-d', $emb->connstr('crashy'),
		'-c', "SET data_embassy.test_promote_delay = '5s'",
		'-c', "SELECT * FROM data_embassy.promote('crashy')"
	],
	'>', \$pout, '2>', \$perr);
ok($emb->poll_query_until('crashy',
		q{SELECT state = 'promoting' FROM data_embassy.lag WHERE register = 'crashy'}),
	'promote() is under way');
$emb->kill9;
$h->finish;
DataEmbassy::start_after_kill($emb);

my $state = $emb->safe_psql('crashy', q{SELECT state FROM data_embassy.registers WHERE name = 'crashy'});
is($state, 'streaming', 'a crash before promote() commits leaves the register not promoted');
ok(DataEmbassy::wait_state($emb, 'crashy', 'streaming', 'crashy'), 'and replicating again');
($ret, $out, $err) = $emb->psql('crashy', "INSERT INTO t (v) VALUES ('local')");
isnt($ret, 0, 'with the write guard still on');
$reg3->safe_psql('postgres', "INSERT INTO t (v) VALUES ('after crash')");
DataEmbassy::wait_caught_up($reg3, $emb, 'crashy', embassy_db => 'crashy');
DataEmbassy::compare_tables($reg3, $emb, 'postgres', 'crashy');
$row = $emb->safe_psql('crashy', q{SELECT register FROM data_embassy.promote('crashy')});
is($row, 'crashy', 'promote after the crash completes');
$emb->safe_psql('crashy', "INSERT INTO t (v) VALUES ('local')");
pass('writes accepted after promotion');

$_->stop for ($emb, $reg, $reg2, $reg3);
done_testing();
