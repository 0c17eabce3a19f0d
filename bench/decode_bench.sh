#!/usr/bin/env bash
#
# decode_bench.sh: decoding cost of data_embassy against PostgreSQL's own
# output plugins, in one run on one scratch cluster.
#
# One transaction inserts ROWS register-like rows (id, identity code, names,
# birth date, address, amount: about 120 bytes each).  The same WAL is then
# decoded with pg_logical_slot_peek_binary_changes() through
#	data_embassy	(sealed frames, default batch size and compression)
#	pgoutput		(proto_version '1', the protocol of native logical
#					 replication)
# and with pg_logical_slot_peek_changes() through test_decoding.  Each is
# decoded RUNS times; the best time counts.  Prints seconds, output bytes
# per row and the ratios against pgoutput.
#
#	bench/decode_bench.sh				(as root: the cluster runs as postgres)
#	ROWS=200000 RUNS=1 PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config bench/decode_bench.sh
#
# Needs data_embassy installed into the server PG_CONFIG names.  (grep reads
# all of --describe-config: with pipefail, grep -q could end the pipe early.)
#
set -euo pipefail

ROWS=${ROWS:-1000000}
RUNS=${RUNS:-2}
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)}
BINDIR=$("$PG_CONFIG" --bindir)
RUN_USER=${RUN_USER:-postgres}

# run a command as the cluster's owner
as_owner()
{
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$RUN_USER" -- "$@"
	else
		"$@"
	fi
}

if [ ! -f "$("$PG_CONFIG" --pkglibdir)/data_embassy.so" ]; then
	echo "data_embassy is not installed into $("$PG_CONFIG" --pkglibdir)" >&2
	exit 1
fi

WORK=$(mktemp -d /tmp/de_bench.XXXXXX)
DATA=$WORK/data
if [ "$(id -u)" -eq 0 ]; then
	chown "$RUN_USER": "$WORK"
fi

# a free loopback port: nothing answers there
PORT=
for p in $(seq 56250 56299) $(seq 45432 45532); do
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		PORT=$p
		break
	fi
done
if [ -z "$PORT" ]; then
	echo "no free port found" >&2
	exit 1
fi

cleanup()
{
	if [ -f "$DATA/postmaster.pid" ]; then
		as_owner "$BINDIR/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

as_owner "$BINDIR/initdb" -D "$DATA" -A trust --no-sync >/dev/null
{
	echo "port = $PORT"
	echo "listen_addresses = '127.0.0.1'"
	echo "unix_socket_directories = '$WORK'"
	echo "wal_level = logical"
	echo "max_replication_slots = 10"
	echo "max_wal_size = 4GB"
	echo "shared_buffers = 256MB"
	echo "fsync = off"
	if "$BINDIR/postgres" --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
		echo "output_plugin_libraries = 'pgoutput, test_decoding, data_embassy'"
	fi
} >> "$DATA/postgresql.conf"
as_owner "$BINDIR/pg_ctl" -D "$DATA" -l "$WORK/log" -w start >/dev/null

psql_q()
{
	as_owner "$BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
		-h 127.0.0.1 -p "$PORT" -d postgres "$@"
}

psql_q >/dev/null <<'SQL'
CREATE EXTENSION data_embassy;
SELECT data_embassy.generate_key() IS NOT NULL;
SELECT data_embassy.add_embassy('bench', data_embassy.public_key()) IS NOT NULL;

CREATE TABLE population (
	id			bigint PRIMARY KEY,
	code		text NOT NULL,
	first_name	text,
	last_name	text,
	born		date,
	address		text,
	amount		numeric(12,2)
);
CREATE PUBLICATION bench_pub FOR TABLE population;

SELECT 'x' FROM pg_create_logical_replication_slot('bench_de', 'data_embassy');
SELECT 'x' FROM pg_create_logical_replication_slot('bench_po', 'pgoutput');
SELECT 'x' FROM pg_create_logical_replication_slot('bench_td', 'test_decoding');

-- time one decoding query that returns (bytes, rows)
CREATE FUNCTION bench(q text, OUT secs float8, OUT nbytes bigint, OUT nrows bigint)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
BEGIN
	EXECUTE q INTO nbytes, nrows;
	secs := extract(epoch FROM clock_timestamp() - t0);
END
$$;
CREATE TABLE results (plugin text, run int, secs float8, nbytes bigint, nrows bigint);
SQL

echo "inserting $ROWS rows in one transaction..."
psql_q -v rows="$ROWS" <<'SQL'
INSERT INTO population
SELECT g, 'EE' || lpad(g::text, 11, '0'), 'First' || (g % 5000),
	   'Last' || (g % 20000), '1940-01-01'::date + g % 30000,
	   'Street ' || (g % 900) || ', Tallinn ' || (10000 + g % 90000),
	   (g % 100000) / 100.0
FROM generate_series(1, :rows) g;
SQL
avg_row=$(psql_q -c "SELECT round(avg(pg_column_size(p.*))) FROM (SELECT * FROM population LIMIT 10000) p")
echo "average row: $avg_row bytes (pg_column_size)"

for run in $(seq 1 "$RUNS"); do
	for plugin in pgoutput test_decoding data_embassy; do
		case $plugin in
			data_embassy)
				q="SELECT sum(length(data)), count(*) FROM pg_logical_slot_peek_binary_changes('bench_de', NULL, NULL, 'embassy_key', data_embassy.public_key())" ;;
			pgoutput)
				q="SELECT sum(length(data)), count(*) FROM pg_logical_slot_peek_binary_changes('bench_po', NULL, NULL, 'proto_version', '1', 'publication_names', 'bench_pub')" ;;
			test_decoding)
				q="SELECT sum(octet_length(data)), count(*) FROM pg_logical_slot_peek_changes('bench_td', NULL, NULL)" ;;
		esac
		psql_q -v q="$q" -v plugin="$plugin" -v run="$run" <<'SQL'
INSERT INTO results SELECT :'plugin', :run, b.* FROM bench(:'q') b;
SQL
	done
done

# data_embassy's frame bodies before compression and sealing (not timed)
plain=$(psql_q -c "SELECT sum(h.plain_len) FROM pg_logical_slot_peek_binary_changes('bench_de', NULL, NULL, 'embassy_key', data_embassy.public_key()) c, data_embassy.frame_header(c.data) h")

echo
psql_q -F ' ' -v rows="$ROWS" <<'SQL' | column -t
WITH best AS (
	SELECT plugin, min(secs) AS secs, max(nbytes) AS nbytes, max(nrows) AS nrows
	FROM results GROUP BY plugin
), po AS (SELECT * FROM best WHERE plugin = 'pgoutput'),
lines AS (
	SELECT 0 AS o, 'plugin' AS a, 'seconds' AS b, 'rows/s' AS c,
		   'bytes/row' AS d, 'outputs' AS e,
		   'throughput_vs_pgoutput' AS f, 'bytes_vs_pgoutput' AS g
	UNION ALL
	SELECT CASE b.plugin WHEN 'pgoutput' THEN 1 WHEN 'test_decoding' THEN 2
		   ELSE 3 END,
		   b.plugin, round(b.secs::numeric, 2)::text,
		   round(:rows / b.secs)::text,
		   round(b.nbytes::numeric / :rows, 1)::text,
		   b.nrows::text,
		   round((po.secs / b.secs)::numeric, 2)::text || 'x',
		   round(b.nbytes::numeric / po.nbytes, 3)::text || 'x'
	FROM best b, po
)
SELECT a, b, c, d, e, f, g FROM lines ORDER BY o;
SQL
echo
echo "data_embassy frame bodies before compression: $(awk -v p="$plain" -v r="$ROWS" 'BEGIN { printf "%.1f", p / r }') bytes/row"
