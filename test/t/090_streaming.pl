
# Transactions streamed before their commit (stream.c): a large transaction
# alone is applied as it arrives; one that meets other transactions is
# spooled and applied at its commit; subtransaction rollbacks, whole
# rollbacks, two large transactions interleaved, a worker killed in the
# middle and streaming switched off all end with identical tables.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');

# A tiny reorder buffer makes every transaction of a few thousand rows
# stream; DEBUG1 shows which way each was applied.
my $emb = DataEmbassy::embassy_node('embassy', extra_conf => q{
data_embassy.decoding_work_mem = 64kB
log_min_messages = debug1
restart_after_crash = on
});

my $ddl = q{
	CREATE TABLE person (id int PRIMARY KEY, name text NOT NULL, n int);
	CREATE TABLE event (id bigserial PRIMARY KEY, what text);
	CREATE TABLE doc (id int PRIMARY KEY, body text)};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);

DataEmbassy::link_sites($reg, $emb, 'reg', copy_data => 0);
ok(DataEmbassy::wait_state($emb, 'reg', 'streaming'), 'streaming');

# Wait until the embassy's log, from the given offset, matches a pattern.
sub wait_log
{
	my ($offset, $re, $what) = @_;
	my $ok = 0;
	foreach (1 .. $PostgreSQL::Test::Utils::timeout_default * 10)
	{
		my $log = slurp_file($emb->logfile, $offset);
		if ($log =~ $re)
		{
			$ok = 1;
			last;
		}
		select(undef, undef, undef, 0.1);
	}
	ok($ok, $what);
	return $ok;
}

# 1. Alone: applied as it arrives, with a subtransaction rolled back in
# the middle, one released, and TOASTed values.
my $off = -s $emb->logfile;
$reg->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO person SELECT g, 'person ' || g, 0 FROM generate_series(1, 20000) g;
	SAVEPOINT a;
	UPDATE person SET n = -1 WHERE id % 2 = 0;
	INSERT INTO event (what) SELECT 'rolled back ' || g FROM generate_series(1, 3000) g;
	ROLLBACK TO a;
	SAVEPOINT b;
	DELETE FROM person WHERE id % 10 = 0;
	SAVEPOINT c;
	INSERT INTO doc SELECT g, repeat(md5(g::text), 1000) FROM generate_series(1, 50) g;
	RELEASE c;
	RELEASE b;
	UPDATE person SET n = n + 1 WHERE id % 3 = 0;
	INSERT INTO event (what) SELECT 'kept ' || g FROM generate_series(1, 3000) g;
	COMMIT});
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'alone: caught up');
wait_log($off, qr/streamed transaction \d+ committed, applied as it arrived/,
	'alone: applied as it arrived');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is($emb->safe_psql('postgres', q{SELECT count(*) FROM event WHERE what LIKE 'rolled%'}),
	'0', 'alone: the rolled back subtransaction left nothing');
# event was first written inside the subtransaction that rolled back, and
# again after it: it is recorded as a replica, so guarded
is($emb->safe_psql('postgres',
		q{SELECT count(*) FROM data_embassy.replicated_relations WHERE relid = 'event'::regclass}),
	'1', 'alone: a table first written in a rolled back subtransaction is a recorded replica');
is($emb->psql('postgres', q{INSERT INTO event (what) VALUES ('local')}), 3,
	'alone: and guarded');

# 2. A large transaction that rolls back leaves nothing, and the next one
# applies.
$off = -s $emb->logfile;
$reg->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO person SELECT g, 'ghost ' || g, 0 FROM generate_series(100001, 120000) g;
	ROLLBACK;
	INSERT INTO event (what) VALUES ('after the rollback')});
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'rollback: caught up');
wait_log($off, qr/streamed transaction \d+ rolled back/,
	'rollback: the embassy saw the streamed rollback');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM person WHERE id > 100000'),
	'0', 'rollback: nothing of it applied');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# 2b. A change the embassy refuses in a transaction applied as it
# arrives: the error context names the streamed transaction as in progress
# (its commit is not known yet), and the worker goes on once the cause is
# gone.
$emb->safe_psql('postgres', 'ALTER TABLE person ALTER n SET NOT NULL');
$off = -s $emb->logfile;
$reg->safe_psql('postgres', q{
	INSERT INTO person SELECT g, 'no n ' || g, NULL FROM generate_series(900001, 920000) g});
wait_log($off,
	qr/CONTEXT:  replication target relation "public\.person", row \(id\)=\(\d+\)\n\s*processing INSERT record of register "reg" in streamed transaction \d+, in progress/,
	'refused in a streamed transaction: the context says it is in progress');
$emb->safe_psql('postgres', 'ALTER TABLE person ALTER n DROP NOT NULL');
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'refused in a streamed transaction: caught up once allowed');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# 3. A large transaction meets small ones committed meanwhile: it is
# spooled and applied at its commit, after them.
$off = -s $emb->logfile;
my $big = $reg->background_psql('postgres');
$big->query_safe('BEGIN');
$big->query_safe(q{INSERT INTO person SELECT g, 'big ' || g, 1
	FROM generate_series(200001, 215000) g});
$reg->safe_psql('postgres', q{INSERT INTO event (what) VALUES ('small 1')});
$reg->safe_psql('postgres', q{UPDATE person SET n = n + 100 WHERE id = 1});
$big->query_safe('SAVEPOINT s');
$big->query_safe(q{UPDATE person SET name = 'undone' WHERE id > 200000});
$big->query_safe('ROLLBACK TO s');
$big->query_safe(q{UPDATE person SET n = n + 5 WHERE id BETWEEN 200001 AND 205000});
$reg->safe_psql('postgres', q{INSERT INTO event (what) VALUES ('small 2')});
$big->query_safe('COMMIT');
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'interleaved: caught up');
wait_log($off, qr/streamed transaction \d+ is spooled from now on/,
	'interleaved: the transaction was spooled when another one came');
wait_log($off, qr/streamed transaction \d+ committed, applied from its spool file/,
	'interleaved: applied from its spool file');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is($emb->safe_psql('postgres', q{SELECT count(*) FROM person WHERE name = 'undone'}),
	'0', 'interleaved: the rolled back subtransaction left nothing');

# 4. Two large transactions streamed in turns, committed in the other order.
my $other = $reg->background_psql('postgres');
$big->query_safe('BEGIN');
$other->query_safe('BEGIN');
foreach my $i (0 .. 3)
{
	my $b = 300000 + $i * 5000;
	my $o = 400000 + $i * 5000;
	$big->query_safe("INSERT INTO person SELECT g, 'first ' || g, $i FROM generate_series($b + 1, $b + 5000) g");
	$other->query_safe("INSERT INTO person SELECT g, 'second ' || g, $i FROM generate_series($o + 1, $o + 5000) g");
}
$other->query_safe('DELETE FROM person WHERE id % 7 = 0 AND id > 400000');
$other->query_safe('COMMIT');
$big->query_safe('UPDATE person SET n = n * 2 WHERE id > 300000 AND id < 400000');
$big->query_safe('COMMIT');
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'two at once: caught up');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# 5. The apply worker is killed while a large transaction is half applied:
# the register streams it again from its start.
$off = -s $emb->logfile;
$big->query_safe('BEGIN');
$big->query_safe(q{INSERT INTO person SELECT g, 'killed ' || g, 0
	FROM generate_series(500001, 520000) g});
wait_log($off, qr/streamed transaction \d+ is applied as it arrives/,
	'killed: the transaction is being applied');
my $wpid = DataEmbassy::lag_row($emb, 'reg')->{worker_pid};
ok($wpid, "apply worker $wpid running");
kill 'KILL', $wpid if $wpid;
$big->query_safe(q{UPDATE person SET n = 7 WHERE id > 500000});
$big->query_safe('COMMIT');
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'killed: caught up');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# 5b. A loop with an exception block in each turn: one subtransaction per
# turn, some rolled back.  Past 64 nested local subtransactions the
# transaction is spooled instead.
$off = -s $emb->logfile;
$reg->safe_psql('postgres', q{
	DO $$
	BEGIN
		FOR i IN 1 .. 300 LOOP
			BEGIN
				INSERT INTO event (what) SELECT 'turn ' || i || '.' || g
				FROM generate_series(1, 20) g;
				IF i % 7 = 0 THEN
					RAISE EXCEPTION 'undo turn %', i;
				END IF;
			EXCEPTION WHEN raise_exception THEN
				NULL;
			END;
		END LOOP;
	END
	$$});
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'subtransactions: caught up');
wait_log($off, qr/streamed transaction \d+ is spooled from now on: too many subtransactions/,
	'subtransactions: spooled past 64 levels');
is($emb->safe_psql('postgres', q{SELECT count(*) FROM event WHERE what LIKE 'turn %'}),
	'5160', 'subtransactions: the turns kept, none of the undone');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# 6. Streaming switched off: large transactions come after their commit.
$emb->append_conf('postgresql.conf', 'data_embassy.stream_in_progress = off');
$emb->reload;
# a new stream picks the setting up
$emb->safe_psql('postgres', q{SELECT data_embassy.pause_register('reg')});
$emb->safe_psql('postgres', q{SELECT data_embassy.resume_register('reg')});
ok(DataEmbassy::wait_state($emb, 'reg', 'streaming'), 'resumed without streaming');
$off = -s $emb->logfile;
$reg->safe_psql('postgres', q{
	UPDATE person SET n = n + 1;
	DELETE FROM person WHERE id % 5 = 0});
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'not streamed: caught up');
my $log = slurp_file($emb->logfile, $off);
unlike($log, qr/streamed transaction/, 'not streamed: no streamed transaction');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

$big->quit;
$other->quit;
$emb->stop;
$reg->stop;
done_testing();
