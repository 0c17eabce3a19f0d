
# Copyright (c) data_embassy developers

# One table's trouble neither blocks nor repeats the others in the initial
# copy.  The embassy's tables differ from the register's where a DBA's
# schema might: "b" has a NOT NULL the register does not have (one row
# there has a NULL), "d" a unique index only the embassy has (two rows
# there share a value).  The copy commits every other table ("a", "c")
# and leaves b and d out, each recorded with the error (table, row key,
# constraint) in table_resyncs as 'failed'; the lag view says the register
# is not caught up while they wait (tables_not_ready).  Changes to all
# four tables go on at the register meanwhile (a TRUNCATE of d among
# them): a and c stream, b and d are copied on their own after each
# failure, with a growing backoff.  Once b's NOT NULL is dropped,
# retry_register() copies it at once (well inside its backoff); once d's
# index is dropped, its next copy by backoff succeeds.  Every table ends
# identical to the register's, a's rows were copied once (their xmin
# never changes), and the lag view says caught up.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy',
	extra_conf => "data_embassy.retry_interval = 2s\n");

my $ddl = q{
	CREATE TABLE a (id integer PRIMARY KEY, v text);
	CREATE TABLE b (id integer PRIMARY KEY, v text, w integer);
	CREATE TABLE c (id integer PRIMARY KEY, v integer);
	CREATE TABLE d (id integer PRIMARY KEY, v text);
};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);

# what only the embassy forbids
$emb->safe_psql('postgres', q{
	ALTER TABLE b ALTER COLUMN w SET NOT NULL;
	CREATE UNIQUE INDEX d_v_embassy ON d (v);
});
$reg->safe_psql('postgres', q{
	INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 20000) g;
	INSERT INTO b SELECT g, 'b' || g, CASE WHEN g = 700 THEN NULL ELSE g END
		FROM generate_series(1, 1000) g;
	INSERT INTO c SELECT g, g FROM generate_series(1, 20000) g;
	INSERT INTO d SELECT g, CASE WHEN g = 51 THEN 'd50' ELSE 'd' || g END
		FROM generate_series(1, 100) g;
});

sub q_emb { return $emb->safe_psql('postgres', $_[0]); }
sub q_reg { return $reg->safe_psql('postgres', $_[0]); }

sub resync_row
{
	my ($table) = @_;
	return q_emb(
		"SELECT state || '|' || coalesce(last_error, '') || '|' || (failed_at IS NOT NULL)::int
		 FROM data_embassy.table_resyncs WHERE relation = '$table'::regclass");
}

sub same_table
{
	my ($t, $msg) = @_;
	is(DataEmbassy::table_digest($emb, 'postgres', $t),
		DataEmbassy::table_digest($reg, 'postgres', $t), $msg);
}

# Wait until the register's writes so far have reached the embassy's
# tables a and c (b and d may be behind while they wait for a copy).
sub wait_streamed
{
	my ($msg) = @_;
	my $target = q_reg('SELECT pg_current_wal_lsn()');
	ok( $emb->poll_query_until('postgres',
			qq{SELECT applied_lsn >= '$target' FROM data_embassy.lag
			   WHERE register = 'r'}),
		$msg);
}

my $log_start = -s $emb->logfile;
DataEmbassy::link_sites($reg, $emb, 'r');

# 1. The copy commits without b and d.
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'),
	'streaming after an initial copy in which two tables failed');
ok( $emb->poll_query_until('postgres',
		q{SELECT count(*) = 2 FROM data_embassy.table_resyncs
		  WHERE state = 'failed'}),
	'table_resyncs lists the two tables as failed');
same_table('a', 'a copied while b and d failed');
same_table('c', 'c copied after b failed');
is(q_emb('SELECT count(*) FROM b') . '/' . q_emb('SELECT count(*) FROM d'),
	'0/0', 'none of the rows of b and d applied');

my ($bstate, $berr, $bat) = split /\|/, resync_row('b');
is($bstate, 'failed', "b's state");
like($berr, qr/null value in column "w" of relation "b" violates not-null constraint/,
	"b's error names the column and the constraint");
like($berr, qr/relation "public\.b"/, "b's error names the table");
like($berr, qr/\(id\)=\(700\)/, "b's error names the row's key");
is($bat, '1', "b's failure time is recorded");
my (undef, $derr) = split /\|/, resync_row('d');
like($derr, qr/duplicate key value violates unique constraint "d_v_embassy"/,
	"d's error names the constraint");
like($derr, qr/Key \(v\)=\(d50\) already exists/, "d's error names the key");

my $log = slurp_file($emb->logfile, $log_start);
like($log,
	qr/WARNING:  register "r" is ready to stream from \S+ after its initial copy, which left out the rows of 2 tables/,
	'the end of the copy says two tables were left out');
like($log, qr/WARNING:  null value in column "w" of relation "b"/,
	"b's error is in the log as a warning");
is(scalar(() = $log =~ /initial copy started at/g), 1,
	'the initial copy ran once');

is(q_emb(q{SELECT caught_up::text || '/' || tables_not_ready
		   FROM data_embassy.lag WHERE register = 'r'}),
	'false/2', 'the lag view: not caught up, two tables not ready');
is(q_emb(q{SELECT caught_up FROM data_embassy.failover_status
		   WHERE register = 'r'}),
	'f', 'failover_status: not caught up');

# a's rows as copied: a copy that repeated would write them again
my $a_xmins = q_emb(q{SELECT count(DISTINCT xmin::text) || ':' || min(xmin::text)
					  FROM a WHERE id <= 20000 AND id % 100 <> 0});

# 2. Changes to every table meanwhile; a and c stream, b and d wait.
q_reg(q{
	INSERT INTO a SELECT g, 'new' FROM generate_series(20001, 20100) g;
	UPDATE a SET v = 'updated' WHERE id % 100 = 0;
	INSERT INTO b SELECT g, 'new', g FROM generate_series(1001, 1100) g;
	UPDATE b SET v = 'updated' WHERE id % 50 = 0;
	DELETE FROM b WHERE id BETWEEN 10 AND 19;
	UPDATE c SET v = -v WHERE id % 3 = 0;
	TRUNCATE d;
	INSERT INTO d SELECT g, CASE WHEN g = 31 THEN 'd30' ELSE 'd' || g END
		FROM generate_series(1, 60) g;
});
wait_streamed('a and c stream while b and d wait for their copies');
same_table('a', 'a identical while b and d wait');
same_table('c', 'c identical while b and d wait');
is(q_emb('SELECT state FROM data_embassy.lag'), 'streaming',
	'the worker streams on');

# 3. b's copies fail again, each a little later than the one before.
my $fails_b = qr/the new copy of table "b" failed; it will be tried again/;
ok( poll_log(sub { scalar(() = $_[0] =~ /$fails_b/g) >= 3 }),
	"b's copy is tried again after each failure");
my @times = map { /^(\d+-\d+-\d+ [\d:.]+)/ ? $1 : () }
  grep { /$fails_b/ } split /\n/, slurp_file($emb->logfile, $log_start);
my @gaps;
for my $i (1 .. $#times)
{
	push @gaps, q_emb("SELECT extract(epoch FROM '$times[$i]'::timestamp
						- '$times[$i-1]'::timestamp)");
}
note("gaps between b's failed copies: @gaps");
ok(@gaps >= 2 && $gaps[-1] > $gaps[0] && $gaps[0] >= 1.5,
	'the pause between copies of b grows');

# 4. The DBA fixes b and asks for a retry: b is copied at once.  Just
# after b's fourth failure its next copy is 16 s away.
my $nfail = scalar(() = slurp_file($emb->logfile, $log_start) =~ /$fails_b/g);
ok(poll_log(sub { scalar(() = $_[0] =~ /$fails_b/g) > $nfail }),
	'one more failure of b');
my $t0 = time;
$emb->safe_psql('postgres', 'ALTER TABLE b ALTER COLUMN w DROP NOT NULL');
my $retried = q_emb(q{SELECT data_embassy.retry_register('r')});
ok( $emb->poll_query_until('postgres',
		q{SELECT NOT EXISTS (SELECT FROM data_embassy.table_resyncs
							 WHERE relation = 'b'::regclass
							   AND state <> 'ready')}),
	'b is ready after retry_register()');
my $took = time - $t0;
note("b ready ${took}s after retry_register()");
is($retried, 't', 'retry_register() says it brought something forward');
ok($took < 7, 'b was copied well before its backoff would have let it');
wait_streamed('caught up after b');
same_table('b', 'b identical, with the changes made while it waited');
q_reg(q{UPDATE b SET w = NULL WHERE id = 1001; DELETE FROM b WHERE id = 1002});
wait_streamed('b streams');
same_table('b', 'b streams after its copy');

# 5. d still fails; its index dropped, its next copy by backoff succeeds.
like((split /\|/, resync_row('d'))[1], qr/duplicate key value.*Key \(v\)=\(d30\)/,
	"d's error now names the key of the register's current rows");
$emb->safe_psql('postgres', 'DROP INDEX d_v_embassy');
ok( $emb->poll_query_until('postgres',
		q{SELECT NOT EXISTS (SELECT FROM data_embassy.table_resyncs
							 WHERE state <> 'ready')}),
	'd is copied by its backoff without retry_register()');

# 6. Everything identical, caught up; a was copied once.
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is(q_emb(q{SELECT caught_up::text || '/' || tables_not_ready
		   FROM data_embassy.lag WHERE register = 'r'}),
	'true/0', 'the lag view: caught up, every table ready');
is(q_emb(q{SELECT count(DISTINCT xmin::text) || ':' || min(xmin::text)
		   FROM a WHERE id <= 20000 AND id % 100 <> 0}),
	$a_xmins, "a's copied rows are those of the one copy");
$log = slurp_file($emb->logfile, $log_start);
is(scalar(() = $log =~ /initial copy started at/g), 1,
	'the initial copy ran once in all');
is(q_reg(q{SELECT count(*) FROM pg_replication_slots WHERE temporary}),
	'0', 'no temporary slot left at the register');

# 7. resync_register() copies everything again, with nothing failing now.
q_emb(q{SELECT data_embassy.resync_register('r')});
ok(poll_log(sub { scalar(() = $_[0] =~ /register "r" is ready to stream from/g) >= 2 }),
	'resync_register() copied the register again');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is(q_emb(q{SELECT count(*) FROM data_embassy.table_resyncs WHERE state <> 'ready'}),
	'0', 'no table waits after resync_register()');

$emb->stop;
$reg->stop;
done_testing();

# Poll the embassy's log (since the test began) until $cond holds.
sub poll_log
{
	my ($cond) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		return 1 if $cond->(slurp_file($emb->logfile, $log_start));
		usleep(200_000);
	}
	return 0;
}
