
# Copyright (c) data_embassy developers

# The spool file of a streamed transaction cannot be written in full
# (stream.c, stream_write): the embassy's postmaster runs under a file size
# limit (ulimit -f; PostgreSQL ignores SIGXFSZ, so a write past the limit
# comes back short, or fails with EFBIG).  The transaction is laid out so
# that the last chunk's 4-byte length ends 4 bytes before the limit: the
# chunk's own write then returns exactly 4 bytes, the case the old check
# took for a whole write.  The worker must report a write error in
# data_embassy.lag's last_error and the log (not a corrupt spool file at
# the replay), apply nothing of the transaction, and catch up with every
# table identical once the limit is gone.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

# Rows of 1 MB each: every row is a chunk of its own (STREAM_CHUNK_BYTES
# is 256 kB), and 17 of them outgrow a 16 MB WAL segment, so the limit
# spares the embassy's WAL and relation files.
my $len = 1024 * 1024;
my $nrows = 18;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy', extra_conf => q{
data_embassy.decoding_work_mem = 64kB
log_min_messages = debug1
});

my $ddl = q{
	CREATE TABLE big (id int PRIMARY KEY, body text);
	CREATE TABLE small (id int PRIMARY KEY, note text)};
$reg->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);

# The register stores the values uncompressed, so its walsender counts
# each row at its full size and streams it at once; the embassy
# compresses them, so its table stays small.
$reg->safe_psql('postgres', 'ALTER TABLE big ALTER body SET STORAGE EXTERNAL');

DataEmbassy::link_sites($reg, $emb, 'reg', copy_data => 0);
ok(DataEmbassy::wait_state($emb, 'reg', 'streaming'), 'streaming');

my $small_id = 0;

# One small transaction on each table: the walsender has described both
# relations before a large transaction starts, after every start.
sub warm_up
{
	$small_id++;
	$reg->safe_psql('postgres', qq{
		INSERT INTO big VALUES (-$small_id, 'warm');
		INSERT INTO small VALUES ($small_id, 'warm')});
	DataEmbassy::wait_caught_up($reg, $emb, 'reg',
		msg => "warm-up $small_id: caught up");
	return;
}

# Bytes in the spool files of the register's apply worker.
sub spool_bytes
{
	my $pid = DataEmbassy::lag_row($emb, 'reg')->{worker_pid};
	return 0 unless $pid;
	return $emb->safe_psql('postgres', qq{
		SELECT coalesce(sum(size), 0) FROM pg_ls_tmpdir()
		WHERE name LIKE 'pgsql_tmp$pid.%'});
}

# Open a large transaction of rows 1 .. nrows-1 (the first one pad bytes
# longer), with a small transaction committed after its first row so that
# the embassy spools it instead of applying it as it arrives; wait until
# the spool file holds every row and return its size.
sub open_large
{
	my ($session, $pad) = @_;
	$session->query_safe('BEGIN');
	$session->query_safe(qq{INSERT INTO big VALUES (1, repeat('a', $len + $pad))});
	$small_id++;
	$reg->safe_psql('postgres',
		"INSERT INTO small VALUES ($small_id, 'meanwhile')");
	$session->query_safe(qq{INSERT INTO big
		SELECT g, repeat(chr(97 + g % 26), $len) FROM generate_series(2, $nrows - 1) g});
	# at least the values of every row, and no longer growing (a file
	# grows page by page while a chunk is written)
	my $want = ($nrows - 1) * $len + $pad;
	my $size = 0;
	my $last = -1;
	foreach (1 .. $PostgreSQL::Test::Utils::timeout_default * 10)
	{
		$size = spool_bytes();
		last if $size >= $want && $size == $last;
		$last = $size;
		select(undef, undef, undef, 0.2);
	}
	cmp_ok($size, '>=', $want, "spool file holds the rows ($size bytes)");
	return $size;
}

# 1. Measure: the spool file of the first nrows-1 rows, then roll back.
warm_up();
my $session = $reg->background_psql('postgres');
my $measured = open_large($session, 0);
$session->query_safe('ROLLBACK');
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'measure: rolled back');

# The limit is a whole number of 1 kB blocks; the first row is padded so
# that the last row's chunk starts 8 bytes before it.
my $pad = (1024 - ($measured + 8) % 1024) % 1024;
my $limit = $measured + $pad + 8;
note "spool of " . ($nrows - 1) . " rows: $measured bytes; pad $pad; limit $limit";

# 2. Restart the embassy's postmaster under the file size limit.
$emb->stop;
my $blocks = $limit / 1024;
PostgreSQL::Test::Utils::system_or_bail('bash', '-c',
	'ulimit -f "$1" && exec pg_ctl -w -D "$2" -l "$3" start',
	'bash', $blocks, $emb->data_dir, $emb->logfile);
$emb->_update_pid(1);
my $limits = slurp_file('/proc/' . $emb->{_pid} . '/limits');
like($limits, qr/^Max file size\s+$limit\s+$limit\s+bytes/m,
	"the embassy's postmaster may not write files past $limit bytes");
ok(DataEmbassy::wait_state($emb, 'reg', 'streaming'), 'streaming under the limit');
warm_up();

# 3. The same transaction, padded: its spool file ends 8 bytes before the
# limit; the last row's chunk gets its length and 4 bytes of its records.
my $off = -s $emb->logfile;
my $spooled = open_large($session, $pad);
is($spooled, $limit - 8, 'the last chunk starts 8 bytes before the limit');
$session->query_safe(qq{INSERT INTO big VALUES ($nrows, repeat('z', $len))});
$session->query_safe('COMMIT');
$session->quit;

ok( $emb->poll_query_until('postgres',
		q{SELECT last_error IS NOT NULL FROM data_embassy.lag WHERE register = 'reg'}),
	'the worker reports an error');
my $row = DataEmbassy::lag_row($emb, 'reg');
like(
	$row->{last_error},
	qr/could not write to spool file "[^"]+" of streamed transaction \d+: /,
	"last_error says the spool file could not be written: $row->{last_error}");
my $log = slurp_file($emb->logfile, $off);
like(
	$log,
	qr/ERROR:  could not write to spool file "[^"]+" of streamed transaction \d+: /,
	'the log says so');
unlike($log, qr/could not read spool file/,
	'no short spool file is read back as if it were whole');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM big WHERE id > 0'),
	'0', 'nothing of the transaction is applied');
is($emb->safe_psql('postgres', qq{SELECT count(*) FROM small WHERE id = $small_id}),
	'1', 'the small transaction committed meanwhile is');

# 4. The limit goes away: everything arrives.
$emb->stop;
$emb->start;
DataEmbassy::wait_caught_up($reg, $emb, 'reg', msg => 'caught up once the limit is gone');
is(DataEmbassy::lag_row($emb, 'reg')->{last_error}, '', 'last_error cleared');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM big WHERE id > 0'),
	$nrows, 'every row of the large transaction');
DataEmbassy::compare_tables($reg, $emb, 'postgres');

done_testing();
