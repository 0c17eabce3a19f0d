# Copyright (c) data_embassy developers

# What resync_table() cannot keep aside while a table is copied again, and
# promote() in the middle of such a copy.  The copy worker is held at the
# embassy by a row lock (its DELETE of the table's old rows waits for it),
# after it has taken its snapshot at the register, so that the register's
# changes of the test come for sure while the copy runs.
#  1. A TRUNCATE of the table at the register, between changes to it, in a
#     transaction that commits while the copy worker waits for its snapshot:
#     the changes kept aside are dropped and the table copied once more
#     after the running copy; it ends identical to the register.
#  2. The same with a TRUNCATE committed after the copy's snapshot, which
#     comes to the apply worker before it has seen the copy commit.
#  3. ALTER TABLE ... ADD COLUMN at the register (and at the embassy) after
#     changes kept aside: the register describes the table anew, same.
#  4. promote() while a copy is held up (and more tables wait for theirs):
#     it succeeds, with a WARNING naming those tables.
# Throughout, another table keeps streaming.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use DataEmbassy;

# part 2 stalls the stream at the register's walsender for a while; large
# transactions come after their commit, whole
my $reg = DataEmbassy::register_node('register',
	extra_conf => "wal_sender_timeout = 5min\n");
my $emb = DataEmbassy::embassy_node('embassy',
	extra_conf => "data_embassy.stream_in_progress = off\n");

# big and eleven small tables t01 .. t11 (for the names in the warning)
my $ddl = q{
	CREATE TABLE big (id bigserial PRIMARY KEY, n integer NOT NULL,
					  v text NOT NULL);
	CREATE TABLE other (id bigserial PRIMARY KEY, v text NOT NULL);
	SELECT format('CREATE TABLE t%s (id integer PRIMARY KEY)',
				  to_char(g, 'FM00'))
	FROM generate_series(1, 11) g \gexec
};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
$reg->safe_psql('postgres', q{
	INSERT INTO big (n, v) SELECT 0, 'row ' || g FROM generate_series(1, 20000) g;
	INSERT INTO other (v) SELECT 'row ' || g FROM generate_series(1, 10) g;
	SELECT format('INSERT INTO t%s SELECT generate_series(1, 5)',
				  to_char(g, 'FM00'))
	FROM generate_series(1, 11) g \gexec
});

DataEmbassy::link_sites($reg, $emb, 'r');
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming after the copy');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

# Lock a row of big at the embassy: a copy worker's DELETE of big's old
# rows waits for it.
sub lock_row
{
	my $locker = $emb->background_psql('postgres');
	$locker->query_safe('BEGIN');
	$locker->query_safe(
		'SELECT id FROM big ORDER BY id LIMIT 1 FOR UPDATE');
	return $locker;
}

# The copy worker waits for the row lock: it has taken its snapshot at the
# register (its temporary slot is there) and holds its rows back.
sub copy_held
{
	my ($msg) = @_;
	ok( $emb->poll_query_until('postgres', q{
			SELECT count(*) > 0 FROM pg_stat_activity
			WHERE backend_type = 'data_embassy resync'
			  AND wait_event_type = 'Lock'}),
		"$msg: the copy worker waits for the row lock at the embassy");
	ok( $reg->poll_query_until('postgres', q{
			SELECT count(*) = 1 FROM pg_replication_slots
			WHERE slot_name LIKE '%\_resync' AND temporary}),
		"$msg: its temporary slot is at the register");
}

# The copy worker waits at the register for its snapshot: the temporary
# slot's consistent point waits for the transactions running there.
sub copy_waits_at_register
{
	my ($msg) = @_;
	ok( $reg->poll_query_until('postgres', q{
			SELECT count(*) > 0 FROM pg_stat_activity
			WHERE application_name = 'data_embassy resync'
			  AND wait_event_type = 'Lock'}),
		"$msg: the copy worker waits for its snapshot at the register");
	is(DataEmbassy::resync_state($emb, 'big'), 'copying', "$msg: table_resyncs shows the copy");
}

# other at the embassy as at the register: the stream is applied while
# big is copied, up to what the register has committed so far
sub other_streams
{
	my ($msg) = @_;
	my $want = $reg->safe_psql('postgres', 'SELECT count(*) FROM other');
	ok( $emb->poll_query_until('postgres',
			'SELECT count(*) FROM other', $want),
		"$msg: table other streams while big is copied ($want rows)");
	is(DataEmbassy::resync_state($emb, 'big'), 'copying', "$msg: big is still being copied");
}

sub count_in_log
{
	my ($re) = @_;
	my @m = (slurp_file($emb->logfile) =~ /$re/g);
	return scalar(@m);
}

my $embassy_rows = $emb->safe_psql('postgres', 'SELECT count(*) FROM big');

# A TRUNCATE (or ALTER TABLE) at the register waits for the copy's
# transaction there, which reads the table until the embassy has all of
# its rows: so the one that comes while the copy runs is of a transaction
# that took its lock before the copy's snapshot (which waits for it).  It
# is held open here until the copy worker waits for its snapshot.

# --- 1. a TRUNCATE committed while the copy waits for its snapshot ---
my $starts = count_in_log(qr/new copy of table public\.big started/);
my $deferred = count_in_log(
	qr/register "r": changes to table "big" are deferred until its new copy commits/);
my $xact = $reg->background_psql('postgres');
$xact->query_safe('BEGIN');
$xact->query_safe(q{
	INSERT INTO big (n, v) SELECT 1, 'before truncate ' || g FROM generate_series(1, 100) g;
	UPDATE big SET n = n + 1 WHERE id <= 50;
	DELETE FROM big WHERE id BETWEEN 51 AND 60;
	TRUNCATE big;
	INSERT INTO big (n, v) SELECT 2, 'after truncate ' || g FROM generate_series(1, 30) g;
	UPDATE big SET n = n + 1 WHERE v LIKE 'after truncate 1%';
});
my $locker = lock_row();
$emb->safe_psql('postgres', "SELECT data_embassy.resync_table('r', 'big')");
copy_waits_at_register('truncate');
$reg->safe_psql('postgres', "INSERT INTO other (v) VALUES ('during the copy')");
other_streams('before the TRUNCATE');
$xact->query_safe('COMMIT');
copy_held('truncate');
# more rows after it (not kept aside any more: the next copy holds them),
# and the other table
$reg->safe_psql('postgres', q{
	INSERT INTO big (n, v) SELECT 3, 'after the copy began ' || g FROM generate_series(1, 20) g;
	INSERT INTO other (v) VALUES ('after the truncate');
});
other_streams('after the TRUNCATE');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM big'),
	$embassy_rows, 'big keeps its old rows while its copy is held up');
is(count_in_log(
		qr/register "r": changes to table "big" are deferred until its new copy commits/) - $deferred,
	1, "big's changes before the TRUNCATE were kept aside");
like(
	slurp_file($emb->logfile),
	qr/register "r": table "big" will be copied once more: a TRUNCATE came while it was being copied/,
	'logged: the TRUNCATE makes big be copied once more');
# let the copy go on; the register writes on meanwhile
$locker->query_safe('ROLLBACK');
$locker->quit;
$reg->safe_psql('postgres', q{
	INSERT INTO big (n, v) SELECT 4, 'later ' || g FROM generate_series(1, 20) g;
	DELETE FROM big WHERE v = 'after truncate 2';
	INSERT INTO other (v) VALUES ('later');
});
DataEmbassy::wait_resync_done($emb, 'big', 'big is ready after the TRUNCATE during its copy');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
like(slurp_file($emb->logfile), qr/register "r": table "big" is copied once more/,
	'logged: big is copied once more');
is(count_in_log(qr/new copy of table public\.big started/) - $starts,
	2, 'two copies of big: the one held up and the one after it');
DataEmbassy::no_resync_slot_left($reg, 'no slot of the copies is left at the register');

# --- 2. a TRUNCATE committed after the copy's snapshot ---
# The register's TRUNCATE waits for the copy's transaction there, which
# ends after the copy committed at the embassy.  The apply worker takes
# such a TRUNCATE for one that came during the copy when it has not yet
# seen the copy commit: when it has been in the middle of a transaction
# since, and the TRUNCATE's transaction comes in the same frame as that
# one's end.  Here the apply worker waits for a row lock of table other in
# a large transaction while the copy commits (the register's walsender,
# whose sending stalls meanwhile, then puts what follows that
# transaction's commit in the same frame).  Were the changes that follow
# the TRUNCATE applied after the copy, without the TRUNCATE, big would
# keep rows the register no longer has.
$starts = count_in_log(qr/new copy of table public\.big started/);
my $lost = count_in_log(
	qr/register "r": table "big" will be copied once more: a TRUNCATE came while it was being copied/
);
$locker = lock_row();
my $other_locker = $emb->background_psql('postgres');
$other_locker->query_safe('BEGIN');
$other_locker->query_safe('SELECT id FROM other WHERE id = 1 FOR UPDATE');
$emb->safe_psql('postgres', "SELECT data_embassy.resync_table('r', 'big')");
copy_held('truncate after the snapshot');
$reg->safe_psql('postgres', q{
	BEGIN;
	UPDATE other SET v = 'held' WHERE id = 1;
	INSERT INTO other (v)
	SELECT md5(g::text || random()::text) || md5(random()::text)
	FROM generate_series(1, 200000) g;
	COMMIT;
});
ok( $emb->poll_query_until('postgres', q{
		SELECT count(*) > 0 FROM pg_stat_activity
		WHERE backend_type = 'data_embassy apply worker'
		  AND wait_event_type = 'Lock'}),
	'the apply worker waits for a row of other, in a transaction');
ok( $reg->poll_query_until('postgres', q{
		SELECT count(*) > 0 FROM pg_stat_activity
		WHERE backend_type = 'walsender'
		  AND wait_event = 'WalSenderWriteData'}),
	"the register's walsender cannot send more");
$locker->query_safe('ROLLBACK');
$locker->quit;
ok( $emb->poll_query_until('postgres',
		"SELECT state FROM data_embassy.table_resyncs WHERE relation = 'big'::regclass",
		'catching up'),
	'the copy committed; the apply worker has not caught up');
$reg->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO big (n, v) SELECT 9, 'before the late truncate ' || g FROM generate_series(1, 10) g;
	TRUNCATE big;
	INSERT INTO big (n, v) SELECT 9, 'after the late truncate ' || g FROM generate_series(1, 10) g;
	COMMIT;
});
$other_locker->query_safe('ROLLBACK');
$other_locker->quit;
DataEmbassy::wait_resync_done($emb, 'big', 'big is ready after a TRUNCATE after its snapshot');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is( count_in_log(
		qr/register "r": table "big" will be copied once more: a TRUNCATE came while it was being copied/
	  ) - $lost,
	1,
	'logged: the TRUNCATE after the snapshot makes big be copied once more');
is(count_in_log(qr/new copy of table public\.big started/) - $starts,
	2, 'two copies of big: the one committed and the one after it');
DataEmbassy::no_resync_slot_left($reg, 'no slot of the copies is left at the register');

# --- 3. the register describes the table anew while it is copied ---
$starts = count_in_log(qr/new copy of table public\.big started/);
$xact->query_safe('BEGIN');
$xact->query_safe(q{
	INSERT INTO big (n, v) SELECT 5, 'before the column ' || g FROM generate_series(1, 10) g;
	UPDATE big SET n = n + 1 WHERE n = 4;
	ALTER TABLE big ADD COLUMN w text NOT NULL DEFAULT 'old';
	INSERT INTO big (n, v, w) SELECT 6, 'with the column ' || g, 'new'
	FROM generate_series(1, 10) g;
});
$emb->safe_psql('postgres', "SELECT data_embassy.resync_table('r', 'big')");
copy_waits_at_register('new column');
# the embassy's column, before the copy worker locks the table here
$emb->safe_psql('postgres',
	"ALTER TABLE big ADD COLUMN w text NOT NULL DEFAULT 'old'");
$locker = lock_row();
$xact->query_safe('COMMIT');
copy_held('new column');
$reg->safe_psql('postgres', q{
	INSERT INTO big (n, v, w) SELECT 7, 'after the copy began ' || g, 'after'
	FROM generate_series(1, 10) g;
	INSERT INTO other (v) VALUES ('with the column');
});
other_streams('after the new column');
like(
	slurp_file($emb->logfile),
	qr/register "r": table "big" will be copied once more: the register described it anew while it was being copied/,
	'logged: the new description makes big be copied once more');
$locker->query_safe('ROLLBACK');
$locker->quit;
$xact->quit;
$reg->safe_psql('postgres', q{
	INSERT INTO big (n, v, w) SELECT 8, 'later ' || g, 'later'
	FROM generate_series(1, 10) g;
	INSERT INTO other (v) VALUES ('later with the column');
});
DataEmbassy::wait_resync_done($emb, 'big', 'big is ready after the new column during its copy');
DataEmbassy::wait_caught_up($reg, $emb, 'r');
DataEmbassy::compare_tables($reg, $emb, 'postgres');
is(count_in_log(qr/new copy of table public\.big started/) - $starts,
	2, 'two copies of big: the one held up and the one after it');
DataEmbassy::no_resync_slot_left($reg, 'no slot of the copies is left at the register');
unlike(slurp_file($emb->logfile), qr/register "r": the worker stopped on an error/,
	'the apply worker never failed');

# --- 4. promote() while a copy is held up and eleven more wait ---
$embassy_rows = $emb->safe_psql('postgres', 'SELECT count(*) FROM big');
$locker = lock_row();
$emb->safe_psql('postgres', "SELECT data_embassy.resync_table('r', 'big')");
copy_held('promote');
$emb->safe_psql('postgres', q{
	SELECT data_embassy.resync_table('r', format('t%s', to_char(g, 'FM00')))
	FROM generate_series(1, 11) g});
$reg->safe_psql('postgres', q{
	INSERT INTO big (n, v, w) SELECT 7, 'lost ' || g, 'lost'
	FROM generate_series(1, 10) g;
	INSERT INTO other (v) VALUES ('before the promotion');
});
other_streams('before the promotion');
is( $emb->safe_psql('postgres',
		"SELECT count(*) FROM data_embassy.table_resyncs WHERE state <> 'ready'"),
	'12', 'twelve tables wait for their copy');
my ($ret, $out, $err) = $emb->psql('postgres',
	"SELECT register FROM data_embassy.promote('r')");
is($ret, 0, 'promote() during the copy succeeds');
is($out, 'r', 'and returns the register');
like(
	$err,
	qr/WARNING:  tables public\.big, public\.t01, public\.t02, public\.t03, public\.t04, public\.t05, public\.t06, public\.t07, public\.t08, public\.t09, and 2 more are not in step with promoted register "r": their last copy did not finish/,
	'a warning names the tables whose copy did not finish (ten, and how many more)'
);
like(
	$err,
	qr/DETAIL:  They hold their rows from before that copy, or the copy's rows without the changes the register made since/,
	'its detail says what they hold');
like($err, qr/HINT:  If the register can still be reached, compare the tables with its own/,
	'its hint says what to do');
is( $emb->safe_psql('postgres',
		"SELECT state FROM data_embassy.registers WHERE name = 'r'"),
	'promoted', 'the register is promoted');
$emb->safe_psql('postgres', "INSERT INTO big (n, v, w) VALUES (8, 'written here', 'here')");
pass('big is an ordinary table after the promotion');
$locker->query_safe('ROLLBACK');
$locker->quit;
ok( $emb->poll_query_until('postgres', q{
		SELECT count(*) = 0 FROM pg_stat_activity
		WHERE backend_type = 'data_embassy resync'}),
	'the copy worker ends');
is($emb->safe_psql('postgres', "SELECT count(*) FROM big WHERE v <> 'written here'"),
	$embassy_rows, 'big holds its rows from before the copy');
DataEmbassy::no_resync_slot_left($reg, 'no slot of the copy is left at the register');

$emb->stop;
$reg->stop;
done_testing();
