#!/usr/bin/env bash
#
# Runs as an ordinary user (scripts/demo.sh sees to that): two clusters,
# "register" (home) and "embassy" (abroad), on loopback ports.
#
set -euo pipefail
work=$1
demo=$work/demo
base=$work/sites
mkdir -p "$base"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 20000))
		if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return; fi
	done
	echo "no free port found" >&2; exit 1
}

REG_PORT=$(free_port)
EMB_PORT=$(free_port)
while [ "$EMB_PORT" = "$REG_PORT" ]; do EMB_PORT=$(free_port); done

reg() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$REG_PORT" -d population "$@"; }
emb() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$EMB_PORT" -d population "$@"; }

cleanup() {
	if [ "${KEEP:-0}" = 1 ]; then
		say "clusters kept; stop them with:"
		echo "  pg_ctl -D $base/register stop; pg_ctl -D $base/embassy stop"
		return
	fi
	[ -n "${LOAD_PID:-}" ] && kill "$LOAD_PID" 2>/dev/null || true
	pg_ctl -D "$base/register" -m immediate stop >/dev/null 2>&1 || true
	pg_ctl -D "$base/embassy" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

opl=""
if postgres --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
	opl="output_plugin_libraries = 'data_embassy'"
fi

say "register site: initdb on 127.0.0.1:$REG_PORT"
initdb -A trust -U postgres -D "$base/register" >/dev/null
cat >> "$base/register/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $REG_PORT
unix_socket_directories = '$base'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
$opl
CONF
echo "host replication all 127.0.0.1/32 trust" >> "$base/register/pg_hba.conf"
pg_ctl -D "$base/register" -l "$base/register.log" -w start >/dev/null

say "embassy site: initdb on 127.0.0.1:$EMB_PORT"
initdb -A trust -U postgres -D "$base/embassy" >/dev/null
cat >> "$base/embassy/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $EMB_PORT
unix_socket_directories = '$base'
shared_preload_libraries = 'data_embassy'
data_embassy.retry_interval = 1s
CONF
pg_ctl -D "$base/embassy" -l "$base/embassy.log" -w start >/dev/null

say "the population register: 100,000 people, their addresses and documents"
psql -X -q -h 127.0.0.1 -p "$REG_PORT" -U postgres -d postgres -c "CREATE DATABASE population"
psql -X -q -h 127.0.0.1 -p "$EMB_PORT" -U postgres -d postgres -c "CREATE DATABASE population"
reg -U postgres -f "$demo/population.sql"
reg -U postgres -f "$demo/seed.sql"
reg -U postgres -c "SELECT count(*) AS people FROM person"

say "the embassy gets the same (empty) tables"
emb -U postgres -f "$demo/population.sql"

say "keys: each site makes its identity key pair; only public keys travel"
reg -U postgres -c "CREATE EXTENSION data_embassy"
emb -U postgres -c "CREATE EXTENSION data_embassy"
REG_KEY=$(reg -U postgres -Atc "SELECT data_embassy.generate_key()")
EMB_KEY=$(emb -U postgres -Atc "SELECT data_embassy.generate_key()")
echo "register public key: $REG_KEY"
echo "embassy public key:  $EMB_KEY"

say "register pins the embassy's key"
reg -U postgres -c "SELECT data_embassy.add_embassy('embassy_abroad', '$EMB_KEY') AS slot_name"

say "embassy adds the register (initial copy travels sealed too)"
emb -U postgres -c "SELECT data_embassy.add_register('population',
	'host=127.0.0.1 port=$REG_PORT dbname=population user=postgres',
	'$REG_KEY', copy_data => true)"

lag() {
	emb -U postgres -c "SELECT register, state, lag_bytes, lag_time, frames_applied,
		rows_applied, pg_size_pretty(wire_bytes) AS wire, pg_size_pretty(plain_bytes) AS plain,
		last_error FROM data_embassy.lag"
}

wait_caught_up() {
	local target
	target=$(reg -U postgres -Atc "SELECT pg_current_wal_lsn()")
	for _ in $(seq 1 600); do
		if [ "$(emb -U postgres -Atc "SELECT coalesce(applied_lsn >= '$target', false) FROM data_embassy.lag WHERE register = 'population'")" = t ]; then
			return 0
		fi
		sleep 0.5
	done
	echo "the embassy did not catch up in 5 minutes" >&2
	lag
	return 1
}

wait_caught_up
say "initial copy done"
lag

say "live write load on the register for 20 seconds (pgbench, 4 clients)"
pgbench -n -h 127.0.0.1 -p "$REG_PORT" -U postgres -c 4 -j 2 -T 20 \
	-f "$demo/load.sql" population > "$base/pgbench.log" 2>&1 &
LOAD_PID=$!
for _ in 1 2 3 4 5 6; do
	sleep 3
	lag
done
wait "$LOAD_PID" || true
LOAD_PID=
grep -E "^(tps|number of transactions actually processed)" "$base/pgbench.log" || true

wait_caught_up
say "caught up"
lag

say "comparing both sites, table by table"
differ=0
for t in person address document; do
	q="SELECT count(*) || ' rows, md5 ' || md5(string_agg(t::text, '|' ORDER BY t::text)) FROM $t t"
	a=$(reg -U postgres -Atc "$q")
	b=$(emb -U postgres -Atc "$q")
	if [ "$a" = "$b" ]; then
		printf '  %-9s identical: %s\n' "$t" "$a"
	else
		printf '  %-9s DIFFERENT: register %s, embassy %s\n' "$t" "$a" "$b"
		differ=1
	fi
done

if [ $differ != 0 ]; then
	say "demo FAILED: the sites differ"
	exit 1
fi

say "reads at the embassy are never blocked"
emb -U postgres -c "SELECT city, count(*) FROM address WHERE valid_to IS NULL GROUP BY city ORDER BY 2 DESC LIMIT 3"

say "but until promotion the replica refuses writes, even from a superuser"
emb -U postgres -c "INSERT INTO person (personal_code, first_name, last_name, born) VALUES ('X', 'Not', 'Allowed', '2000-01-01')" 2>&1 || true

REG_MAX_PERSON=$(reg -U postgres -Atc "SELECT max(id) FROM person")
REG_MAX_DOC=$(reg -U postgres -Atc "SELECT max(id) FROM document")

say "the home site is lost: the register cluster stops hard"
pg_ctl -D "$base/register" -m immediate stop >/dev/null
for _ in $(seq 1 120); do
	[ "$(emb -U postgres -Atc "SELECT state FROM data_embassy.failover_status WHERE register = 'population'")" = disconnected ] && break
	sleep 0.5
done
emb -U postgres -c "SELECT register, state, can_promote, last_contact_at, unreplicated_bytes FROM data_embassy.failover_status"

say "failover: one SQL call"
emb -U postgres -c "SELECT * FROM data_embassy.promote('population')"
emb -U postgres -c "SELECT register, state, promoted_at, promoted_lsn FROM data_embassy.failover_status"

say "the state's services write to the embassy now"
NEW_ID=$(emb -U postgres -Atc "INSERT INTO person (personal_code, first_name, last_name, born)
	VALUES ('50001010000', 'First', 'AfterFailover', current_date) RETURNING id")
NEW_DOC=$(emb -U postgres -Atc "INSERT INTO document (person_id, kind, number, issued, expires)
	VALUES ($NEW_ID, 'id-card', 'AF0000001', current_date, current_date + 1826) RETURNING id")
echo "new person id $NEW_ID (the register had used up to $REG_MAX_PERSON)"
echo "new document id $NEW_DOC (the register had used up to $REG_MAX_DOC)"
if [ "$NEW_ID" -le "$REG_MAX_PERSON" ] || [ "$NEW_DOC" -le "$REG_MAX_DOC" ]; then
	say "demo FAILED: a sequence did not move past the register's values"
	exit 1
fi

say "demo finished: the register lives on at the embassy"
