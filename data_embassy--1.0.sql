/* data_embassy--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION data_embassy" to load this file. \quit

/*
 * The administrator role.  Roles are cluster-wide and the extension may be
 * created in several databases, so create it only once.
 */
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles
				   WHERE rolname = 'data_embassy_admin') THEN
		CREATE ROLE data_embassy_admin NOLOGIN;
	END IF;
END
$$;

GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;

-------------------------------------------------------------------------------
-- Keys (both sites)
-------------------------------------------------------------------------------

CREATE FUNCTION generate_key() RETURNS text
AS 'MODULE_PATHNAME', 'data_embassy_generate_key'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION public_key() RETURNS text
AS 'MODULE_PATHNAME', 'data_embassy_public_key'
LANGUAGE C STRICT STABLE;

-------------------------------------------------------------------------------
-- Register side: pinned embassies
-------------------------------------------------------------------------------

/*
 * The output plugin reads this table while decoding, so it is a user catalog
 * table (visible to historic snapshots).
 */
CREATE TABLE embassy_pins (
	name		text PRIMARY KEY,
	embassy_key text NOT NULL UNIQUE,
	slot_name	name NOT NULL UNIQUE,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
) WITH (user_catalog_table = true);

/*
 * Every write to the pins tells every backend to look again whether
 * embassies are pinned here (the refusal of keyless UPDATE and DELETE).
 */
CREATE FUNCTION pins_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'data_embassy_pins_changed'
LANGUAGE C;

CREATE TRIGGER pins_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON embassy_pins
	FOR EACH STATEMENT EXECUTE FUNCTION pins_changed();

CREATE FUNCTION add_embassy(name text, embassy_key text) RETURNS text
AS 'MODULE_PATHNAME', 'data_embassy_add_embassy'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION drop_embassy(name text) RETURNS void
AS 'MODULE_PATHNAME', 'data_embassy_drop_embassy'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE VIEW embassies AS
	SELECT p.name,
		   p.slot_name,
		   COALESCE(s.active, false) AS active,
		   s.active_pid,
		   r.client_addr,
		   r.sent_lsn,
		   s.confirmed_flush_lsn,
		   c.current_lsn,
		   CASE WHEN s.confirmed_flush_lsn IS NOT NULL
				THEN GREATEST(c.current_lsn - s.confirmed_flush_lsn, 0)::bigint
		   END AS lag_bytes,
		   r.replay_lag,
		   CASE WHEN s.restart_lsn IS NOT NULL
				THEN (c.current_lsn - s.restart_lsn)::bigint
		   END AS retained_wal_bytes,
		   s.wal_status,
		   s.safe_wal_size,
		   r.sync_state
	FROM embassy_pins p
		 CROSS JOIN LATERAL
			(SELECT CASE WHEN pg_catalog.pg_is_in_recovery()
						 THEN pg_catalog.pg_last_wal_replay_lsn()
						 ELSE pg_catalog.pg_current_wal_lsn() END
					AS current_lsn) c
		 LEFT JOIN pg_catalog.pg_replication_slots s
			ON s.slot_name = p.slot_name AND s.database = pg_catalog.current_database()
		 LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid;

-------------------------------------------------------------------------------
-- Register side: tables without a replica identity
-------------------------------------------------------------------------------

/*
 * Replicated tables whose UPDATE and DELETE an embassy could not locate:
 * REPLICA IDENTITY DEFAULT without a usable primary key, NOTHING, or an
 * identity index that is gone.
 */
CREATE FUNCTION keyless_tables_list(OUT schema name, OUT "table" name,
	OUT replica_identity text, OUT reason text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'data_embassy_keyless_tables'
LANGUAGE C STRICT VOLATILE;

CREATE VIEW keyless_tables AS
	SELECT schema, "table", replica_identity, reason
	FROM keyless_tables_list();

/*
 * Opt-in: new replicated tables without a primary key get REPLICA IDENTITY
 * FULL.  The event trigger exists disabled; set_keyless_identity_full()
 * enables and disables it.
 */
CREATE FUNCTION keyless_identity_full() RETURNS event_trigger
AS 'MODULE_PATHNAME', 'data_embassy_keyless_identity_full'
LANGUAGE C;

CREATE EVENT TRIGGER data_embassy_keyless_identity_full
	ON ddl_command_end
	WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO',
				 'ALTER TABLE')
	EXECUTE FUNCTION keyless_identity_full();
ALTER EVENT TRIGGER data_embassy_keyless_identity_full DISABLE;

CREATE FUNCTION set_keyless_identity_full(enable boolean) RETURNS void
AS 'MODULE_PATHNAME', 'data_embassy_set_keyless_identity_full'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

-------------------------------------------------------------------------------
-- Register side: initial copy and inspection
-------------------------------------------------------------------------------

/*
 * Sealed frames holding every replicated table's rows as of the caller's
 * snapshot, for one session of the embassy.  The caller's transaction must
 * run in snapshot_name, exported by the walsender that created slot_name
 * (the embassy's slot) and still held by it; the frames seal the slot's
 * consistent point.
 */
CREATE FUNCTION copy_frames(embassy_key text, session text, slot_name text,
							snapshot_name text) RETURNS SETOF bytea
AS 'MODULE_PATHNAME', 'data_embassy_copy_frames'
LANGUAGE C STRICT VOLATILE;

/*
 * The same, for an embassy that replicates only some schemas (schemas:
 * NULL for every schema) or that takes no rows (with_rows false: the
 * tables' descriptions only, for add_register(..., copy_data => false)).
 */
CREATE FUNCTION copy_frames(embassy_key text, session text, slot_name text,
							snapshot_name text, schemas text[],
							with_rows boolean) RETURNS SETOF bytea
AS 'MODULE_PATHNAME', 'data_embassy_copy_frames'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

/*
 * copy_frames restricted to the tables whose OIDs are listed (the embassy's
 * resync_table), bound to a temporary slot of the embassy; no SEQUENCES.
 */
CREATE FUNCTION copy_table_frames(embassy_key text, session text,
								  slot_name text, snapshot_name text,
								  tables oid[]) RETURNS SETOF bytea
AS 'MODULE_PATHNAME', 'data_embassy_copy_table_frames'
LANGUAGE C STRICT VOLATILE;

/*
 * An embassy's heartbeat: a logical decoding message with the embassy's
 * fresh nonce, which the output plugin seals into the embassy's stream with
 * the register's WAL position (see src/register/heartbeat.c).
 */
CREATE FUNCTION heartbeat(nonce bytea) RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'data_embassy_heartbeat'
LANGUAGE C STRICT VOLATILE;

/*
 * Open frames with this site's private key and show their records.  The
 * frames must be consecutive frames of one stream; the first may be any.
 */
CREATE FUNCTION inspect_frames(frames bytea[], register_key text,
	OUT frame_seq bigint, OUT record_no integer, OUT record_type text,
	OUT lsn pg_lsn, OUT xid xid, OUT relation text, OUT detail jsonb)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'data_embassy_inspect_frames'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION inspect_frame(frame bytea, register_key text,
	OUT frame_seq bigint, OUT record_no integer, OUT record_type text,
	OUT lsn pg_lsn, OUT xid xid, OUT relation text, OUT detail jsonb)
RETURNS SETOF record
AS $$ SELECT * FROM @extschema@.inspect_frames(ARRAY[frame], register_key) $$
LANGUAGE sql STRICT VOLATILE;

/* The clear header of a frame, unauthenticated. */
CREATE FUNCTION frame_header(frame bytea,
	OUT version integer, OUT kind text, OUT flags integer,
	OUT system_identifier numeric, OUT database_oid oid,
	OUT stream_key text, OUT seq bigint,
	OUT start_lsn pg_lsn, OUT end_lsn pg_lsn, OUT commit_lsn pg_lsn,
	OUT source_lsn pg_lsn, OUT plain_len integer, OUT sealed_len integer,
	OUT prev_hash bytea)
AS 'MODULE_PATHNAME', 'data_embassy_frame_header'
LANGUAGE C STRICT IMMUTABLE;

-------------------------------------------------------------------------------
-- Embassy side
-------------------------------------------------------------------------------

/*
 * One row per replicated register.  conninfo may hold a password: the table
 * is readable only by its owner; views show conninfo without secrets.
 */
CREATE TABLE registers (
	name		text PRIMARY KEY,
	conninfo	text NOT NULL,
	register_key text NOT NULL UNIQUE,
	copy_data	boolean NOT NULL,
	slot_name	name,			/* set at the worker's first connection */
	state		text NOT NULL DEFAULT 'init'
				CHECK (state IN ('init', 'streaming', 'promoted')),
	paused		boolean NOT NULL DEFAULT false,
	register_sysid numeric,
	register_dboid oid,
	promoted_at timestamptz,
	promoted_lsn pg_lsn,
	skip_lsn	pg_lsn,			/* skip(): the transaction to skip */
	skip_requested_by name,		/* and who asked */
	require_tls boolean NOT NULL DEFAULT true, /* another host: verify-ca/full */
	history_lsn pg_lsn,			/* the last sealed heartbeat's WAL record... */
	history_crc bigint,			/* ...and its CRC: the history check */
	schemas		text[],			/* replicated schemas; NULL: every schema */
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);

/*
 * Every promotion, kept after drop_register: when, at which register LSN,
 * what the embassy knew it was missing, and who asked.
 */
CREATE TABLE promotions (
	register	text NOT NULL,
	promoted_at timestamptz NOT NULL,
	promoted_lsn pg_lsn,
	source_lsn	pg_lsn,
	unreplicated_bytes bigint,
	promoted_by name NOT NULL,
	PRIMARY KEY (register, promoted_at)
);

/*
 * Every register transaction skipped with skip(), kept after drop_register:
 * its commit LSN, xid and commit time at the register, when the worker
 * skipped it and who asked.
 */
CREATE TABLE skipped_transactions (
	register	text NOT NULL,
	commit_lsn	pg_lsn NOT NULL,
	xid			xid NOT NULL,
	commit_time timestamptz NOT NULL,
	skipped_at	timestamptz NOT NULL,
	requested_by name NOT NULL,
	PRIMARY KEY (register, commit_lsn)
);

/* Local tables that a register replicates into (filled by the worker). */
CREATE TABLE replicated_relations (
	register	text NOT NULL REFERENCES registers (name) ON DELETE CASCADE,
	relid		oid NOT NULL,
	remote_relid oid,			/* the register's OID of the table it replicates */
	/*
	 * resync_table(): 'r' ready, 'i' a new copy of the table is wanted (and
	 * runs, under the attempt the apply worker claimed it with), 'd' the
	 * copy committed and the apply worker catches up; sync_lsn: the register
	 * LSN the last copy of the table was taken at (the apply worker skips
	 * the table's changes of transactions committed before it).
	 */
	sync_state	"char" NOT NULL DEFAULT 'r'
				CHECK (sync_state IN ('r', 'i', 'd')),
	sync_lsn	pg_lsn,
	sync_attempt bigint,
	/*
	 * Why the table's last copy failed, and when (NULL once a copy
	 * committed): a table whose rows the initial copy could not apply is
	 * left out of it in state 'i', and copied on its own like resync_table.
	 */
	sync_error	text,
	sync_failed_at timestamptz,
	PRIMARY KEY (relid)
);

/* Register sequences seen in the stream and the last value reported. */
CREATE TABLE replicated_sequences (
	register	text NOT NULL REFERENCES registers (name) ON DELETE CASCADE,
	relid		oid NOT NULL PRIMARY KEY,
	last_value	bigint NOT NULL
);

/*
 * require_tls: a register on another host is reached only with sslmode
 * verify-ca or verify-full (checked here and at every connection).
 */
CREATE FUNCTION add_register(name text, conninfo text, register_key text,
							 copy_data boolean DEFAULT true,
							 require_tls boolean DEFAULT true,
							 schemas text[] DEFAULT NULL) RETURNS void
AS 'MODULE_PATHNAME', 'data_embassy_add_register'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

/*
 * Declare a table here as the replica of the register's table of the same
 * schema and name, which the register began to send after its copy (the
 * worker applies such a table only into a declared one).  Guarded at once.
 */
CREATE FUNCTION add_replicated_table(register text, relation regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'data_embassy_add_replicated_table'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

/* Change require_tls; the worker starts again at commit. */
CREATE FUNCTION alter_register(name text, require_tls boolean) RETURNS void
AS 'MODULE_PATHNAME', 'data_embassy_alter_register'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION drop_register(name text) RETURNS void
AS 'MODULE_PATHNAME', 'data_embassy_drop_register'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION pause_register(name text) RETURNS void
AS 'MODULE_PATHNAME', 'data_embassy_pause_register'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION resume_register(name text) RETURNS void
AS 'MODULE_PATHNAME', 'data_embassy_resume_register'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

/* Start the worker now instead of after its backoff; false if running. */
CREATE FUNCTION retry_register(name text) RETURNS boolean
AS 'MODULE_PATHNAME', 'data_embassy_retry_register'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

/*
 * Skip the register transaction whose commit record is at commit_lsn (as
 * the lag view's failed_commit_lsn shows it) when the worker meets it;
 * '0/0' withdraws a skip not done yet.
 */
CREATE FUNCTION skip(register text, commit_lsn pg_lsn) RETURNS void
AS 'MODULE_PATHNAME', 'data_embassy_skip'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

/*
 * Copy the register again into emptied tables (one transaction: until it
 * commits the replica keeps what it had).
 */
CREATE FUNCTION resync_register(name text) RETURNS void
AS 'MODULE_PATHNAME', 'data_embassy_resync_register'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

/*
 * Copy one table of the register again, in a snapshot of its own, while the
 * other tables keep streaming (table_sync.c).
 */
CREATE FUNCTION resync_table(register text, relation regclass) RETURNS void
AS 'MODULE_PATHNAME', 'data_embassy_resync_table'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

/* Tables of a register being copied again, or asked to be. */
CREATE VIEW table_resyncs AS
	SELECT r.register, r.relid::pg_catalog.regclass AS relation,
		   CASE r.sync_state
				WHEN 'i' THEN CASE WHEN r.sync_error IS NULL THEN 'copying'
								   ELSE 'failed' END
				WHEN 'd' THEN 'catching up' ELSE 'ready' END AS state,
		   r.sync_lsn, r.sync_error AS last_error,
		   r.sync_failed_at AS failed_at
	FROM replicated_relations r
	WHERE r.sync_state OPERATOR(pg_catalog.<>) 'r' OR r.sync_lsn IS NOT NULL;

CREATE FUNCTION register_status(
	OUT register text, OUT database name, OUT state text, OUT worker_pid integer,
	OUT source_lsn pg_lsn, OUT received_lsn pg_lsn, OUT applied_lsn pg_lsn,
	OUT lag_bytes bigint, OUT lag_time interval,
	OUT last_applied_commit_at timestamptz, OUT last_message_at timestamptz,
	OUT frames_applied bigint, OUT rows_applied bigint,
	OUT wire_bytes bigint, OUT plain_bytes bigint, OUT last_error text,
	OUT promoted_at timestamptz, OUT promoted_lsn pg_lsn,
	OUT failed_commit_lsn pg_lsn, OUT copy_tables_done bigint,
	OUT copy_tables_total bigint, OUT copy_rows bigint, OUT copy_bytes bigint,
	OUT last_contact_at timestamptz, OUT contact_age interval,
	OUT caught_up boolean, OUT behind_since timestamptz, OUT retries integer,
	OUT failing_since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'data_embassy_register_status'
LANGUAGE C STRICT VOLATILE;

CREATE VIEW lag AS
	SELECT register, database, state, worker_pid, source_lsn, received_lsn,
		   applied_lsn, lag_bytes, lag_time, last_applied_commit_at,
		   last_message_at, frames_applied, rows_applied, wire_bytes,
		   plain_bytes, last_error, failed_commit_lsn, copy_tables_done,
		   copy_tables_total, copy_rows, copy_bytes, last_contact_at,
		   contact_age,
		   s.caught_up AND COALESCE(t.n, 0) OPERATOR(pg_catalog.=) 0
			AS caught_up,
		   behind_since, retries, failing_since,
		   (SELECT r.require_tls FROM registers r
			WHERE r.name OPERATOR(pg_catalog.=) s.register
			  AND s.database OPERATOR(pg_catalog.=) pg_catalog.current_database())
			AS require_tls,
		   (SELECT r.schemas FROM registers r
			WHERE r.name OPERATOR(pg_catalog.=) s.register
			  AND s.database OPERATOR(pg_catalog.=) pg_catalog.current_database())
			AS schemas,
		   t.n AS tables_not_ready
	FROM register_status() s
		 LEFT JOIN LATERAL
			(SELECT pg_catalog.count(*) AS n FROM replicated_relations rr
			 WHERE rr.register OPERATOR(pg_catalog.=) s.register
			   AND rr.sync_state OPERATOR(pg_catalog.<>) 'r') t
			ON s.database OPERATOR(pg_catalog.=) pg_catalog.current_database();

/*
 * A promoted register shows what promote() reported (its latest row in
 * promotions); any other the estimate promote() would make now, which is
 * lag_bytes.
 */
CREATE VIEW failover_status AS
	SELECT s.register, s.state,
		   s.state NOT IN ('promoted', 'promoting') AS can_promote,
		   s.last_contact_at,
		   CASE WHEN s.state = 'promoted' THEN p.source_lsn
				ELSE s.source_lsn END AS source_lsn,
		   CASE WHEN s.state = 'promoted' THEN p.promoted_lsn
				ELSE s.applied_lsn END AS applied_lsn,
		   CASE WHEN s.state = 'promoted' THEN p.unreplicated_bytes
				ELSE s.lag_bytes END AS unreplicated_bytes,
		   COALESCE(s.promoted_at, p.promoted_at) AS promoted_at,
		   COALESCE(s.promoted_lsn, p.promoted_lsn) AS promoted_lsn,
		   s.contact_age,
		   s.caught_up AND NOT EXISTS
			(SELECT FROM replicated_relations rr
			 WHERE rr.register OPERATOR(pg_catalog.=) s.register
			   AND rr.sync_state OPERATOR(pg_catalog.<>) 'r') AS caught_up,
		   s.lag_time,
		   (SELECT r.require_tls FROM registers r
			WHERE r.name OPERATOR(pg_catalog.=) s.register) AS require_tls
	FROM register_status() s
		 LEFT JOIN LATERAL
			(SELECT pr.source_lsn, pr.promoted_lsn, pr.unreplicated_bytes,
					pr.promoted_at
			 FROM promotions pr
			 WHERE pr.register OPERATOR(pg_catalog.=) s.register
			 ORDER BY pr.promoted_at DESC LIMIT 1) p
			ON s.state OPERATOR(pg_catalog.=) 'promoted'
	WHERE s.database OPERATOR(pg_catalog.=) pg_catalog.current_database();

/* What promote() returns, one row per register promoted. */
CREATE TYPE promotion AS (
	register	text,
	promoted_at timestamptz,
	applied_lsn pg_lsn,
	source_lsn	pg_lsn,
	unreplicated_bytes bigint
);

CREATE FUNCTION promote(register text DEFAULT NULL,
						wait_for_catchup interval DEFAULT '0',
						accept_data_loss boolean DEFAULT false)
RETURNS SETOF promotion
AS 'MODULE_PATHNAME', 'data_embassy_promote'
LANGUAGE C CALLED ON NULL INPUT VOLATILE ROWS 1;

-------------------------------------------------------------------------------
-- Privileges
-------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;

GRANT EXECUTE ON FUNCTION generate_key(), public_key(),
	add_embassy(text, text), drop_embassy(text),
	set_keyless_identity_full(boolean),
	add_register(text, text, text, boolean, boolean, text[]),
	add_replicated_table(text, regclass),
	alter_register(text, boolean), drop_register(text),
	pause_register(text), resume_register(text),
	retry_register(text), resync_register(text), skip(text, pg_lsn),
	resync_table(text, regclass),
	promote(text, interval, boolean)
	TO data_embassy_admin;

/* copy_frames checks itself: superusers, admins and replication roles. */
GRANT EXECUTE ON FUNCTION copy_frames(text, text, text, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION copy_frames(text, text, text, text, text[], boolean)
	TO PUBLIC;
GRANT EXECUTE ON FUNCTION copy_table_frames(text, text, text, text, oid[])
	TO PUBLIC;
/* heartbeat checks itself likewise */
GRANT EXECUTE ON FUNCTION heartbeat(bytea) TO PUBLIC;
GRANT SELECT ON embassy_pins TO data_embassy_admin;

GRANT EXECUTE ON FUNCTION register_status(), frame_header(bytea),
	keyless_tables_list() TO pg_monitor, data_embassy_admin;
GRANT SELECT ON embassies, keyless_tables, lag, failover_status, promotions,
	skipped_transactions
	TO pg_monitor, data_embassy_admin;
GRANT SELECT ON table_resyncs TO pg_monitor, data_embassy_admin;
