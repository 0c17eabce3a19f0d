--
-- 33_hostile_path: every SQL function and view of the extension called
-- under a hostile search_path.  A member of data_embassy_admin (not a
-- superuser) puts a schema of its own first in search_path, holding
-- look-alikes of the operators the extension's SQL uses (=, <>, <, >, <=,
-- >=, +, -, || over text, name, oid, bigint, integer, numeric, pg_lsn,
-- boolean, timestamptz, interval and xid) and of the pg_catalog functions
-- it calls (lower, setval, pg_sequence_last_value, int8larger, now...).
-- Each look-alike raises a WARNING "hijacked ..." and then does what the
-- original does.  The extension's SQL runs as the owner of its tables with
-- a search_path of pg_catalog and qualified operators, so no "hijacked"
-- line may appear below except in the first checks, which show that the
-- look-alikes do catch an unqualified name.
--
-- The look-alikes warn rather than notice so that the extension's own
-- notices, whose appearance depends on the timing of workers, can be hidden
-- with client_min_messages = warning while a hijack would still show.
--
-- Each function is also called with bad input (NULLs, unknown names, wrong
-- states); try() prints "SQLSTATE: message" and uses only qualified names
-- itself.  drop_register and promote cannot run in try()'s subtransaction:
-- they are called directly, and LAST_ERROR_SQLSTATE shows the code.
--
-- Runs after 02_pins: this instance has an identity key and a pin 'self' of
-- its own key, both left as they were.
--

\set SHOW_CONTEXT never
\set VERBOSITY terse

CREATE FUNCTION public.try(q pg_catalog.text) RETURNS pg_catalog.text
LANGUAGE plpgsql AS $$
DECLARE
	st pg_catalog.text;
	msg pg_catalog.text;
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
	RETURN pg_catalog.concat(st, ': ', msg);
END
$$;

-- what the calls below need, computed before the search_path turns hostile
SELECT data_embassy.public_key() AS ownkey \gset
SELECT '4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4dedededededededededededededededededededededededededededededededed' AS embkey, '3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3cedededededededededededededededededededededededededededededededed' AS regkey \gset
\set unreachable 'host=/nonexistent port=1 dbname=postgres'

CREATE TABLE hostile_data (id integer PRIMARY KEY, note text);
INSERT INTO hostile_data VALUES (1, 'one'), (2, 'two');
CREATE SEQUENCE hostile_seq MAXVALUE 1000;
CREATE TABLE hostile_replica (id integer);

CREATE ROLE regress_hostile IN ROLE data_embassy_admin;
DO $$
BEGIN
	EXECUTE format('GRANT CREATE ON DATABASE %I TO regress_hostile',
				   current_database());
END
$$;
GRANT SELECT, UPDATE ON hostile_seq TO regress_hostile;
GRANT SELECT ON hostile_data, hostile_replica TO regress_hostile;
GRANT INSERT ON hostile_replica TO regress_hostile;

--
-- the administrator's look-alikes
--
SET ROLE regress_hostile;
CREATE SCHEMA hijack;

-- an operator for every pg_catalog operator of these names over these types
DO $do$
DECLARE
	o record;
	n integer := 0;
BEGIN
	FOR o IN
		SELECT op.oprname, op.oprleft::regtype AS l, op.oprright::regtype AS r,
			   op.oprresult::regtype AS res
		FROM pg_operator op
		WHERE op.oprnamespace = 'pg_catalog'::regnamespace
		  AND op.oprname IN ('=', '<>', '<', '>', '<=', '>=', '+', '-', '||')
		  AND op.oprleft IN ('text'::regtype, 'name'::regtype, 'oid'::regtype,
							 'int8'::regtype, 'int4'::regtype,
							 'numeric'::regtype, 'pg_lsn'::regtype,
							 'bool'::regtype, 'timestamptz'::regtype,
							 'interval'::regtype, 'xid'::regtype)
		  AND op.oprright IN ('text'::regtype, 'name'::regtype, 'oid'::regtype,
							  'int8'::regtype, 'int4'::regtype,
							  'numeric'::regtype, 'pg_lsn'::regtype,
							  'bool'::regtype, 'timestamptz'::regtype,
							  'interval'::regtype, 'xid'::regtype)
		ORDER BY 1, 2, 3
	LOOP
		n := n + 1;
		EXECUTE format($f$
			CREATE FUNCTION hijack.op_%s(%s, %s) RETURNS %s
			LANGUAGE plpgsql AS $b$
			BEGIN
				RAISE WARNING 'hijacked operator %s(%s, %s)';
				RETURN $1 OPERATOR(pg_catalog.%s) $2;
			END
			$b$ $f$,
			n, o.l, o.r, o.res, o.oprname, o.l, o.r, o.oprname);
		EXECUTE format('CREATE OPERATOR hijack.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = hijack.op_%s)',
					   o.oprname, o.l, o.r, n);
	END LOOP;
	RAISE NOTICE 'operator look-alikes: %', n;
END
$do$;

-- functions with the names of those the extension's SQL calls, and more
DO $do$
DECLARE
	f record;
BEGIN
	FOR f IN
		SELECT * FROM (VALUES
			('lower', 'text', 'text', '$1'),
			('upper', 'text', 'text', '$1'),
			('texteq', 'text, text', 'boolean', '$1, $2'),
			('nameeq', 'name, name', 'boolean', '$1, $2'),
			('textcat', 'text, text', 'text', '$1, $2'),
			('length', 'text', 'integer', '$1'),
			('format', 'text', 'text', '$1'),
			('format', 'text, text', 'text', '$1, $2'),
			('quote_ident', 'text', 'text', '$1'),
			('quote_literal', 'text', 'text', '$1'),
			('encode', 'bytea, text', 'text', '$1, $2'),
			('decode', 'text, text', 'bytea', '$1, $2'),
			('sha256', 'bytea', 'bytea', '$1'),
			('now', '', 'timestamptz', ''),
			('clock_timestamp', '', 'timestamptz', ''),
			('statement_timestamp', '', 'timestamptz', ''),
			('current_database', '', 'name', ''),
			('current_setting', 'text', 'text', '$1'),
			('pg_is_in_recovery', '', 'boolean', ''),
			('pg_current_wal_lsn', '', 'pg_lsn', ''),
			('pg_current_wal_flush_lsn', '', 'pg_lsn', ''),
			('pg_last_wal_replay_lsn', '', 'pg_lsn', ''),
			('pg_get_userbyid', 'oid', 'name', '$1'),
			('setval', 'regclass, bigint', 'bigint', '$1, $2'),
			('setval', 'regclass, bigint, boolean', 'bigint', '$1, $2, $3'),
			('nextval', 'regclass', 'bigint', '$1'),
			('currval', 'regclass', 'bigint', '$1'),
			('pg_sequence_last_value', 'regclass', 'bigint', '$1'),
			('int8larger', 'bigint, bigint', 'bigint', '$1, $2'),
			('int8smaller', 'bigint, bigint', 'bigint', '$1, $2'),
			('int8pl', 'bigint, bigint', 'bigint', '$1, $2'),
			('int8mi', 'bigint, bigint', 'bigint', '$1, $2'),
			('pg_lsn_mi', 'pg_lsn, pg_lsn', 'numeric', '$1, $2'),
			('has_table_privilege', 'text, text', 'boolean', '$1, $2'),
			('pg_advisory_xact_lock', 'bigint', 'void', '$1')
		) AS v(name, args, res, pass)
	LOOP
		EXECUTE format($f$
			CREATE FUNCTION hijack.%s(%s) RETURNS %s
			LANGUAGE plpgsql VOLATILE AS $b$
			BEGIN
				RAISE WARNING 'hijacked function %s(%s)';
				%s pg_catalog.%s(%s);
			END
			$b$ $f$,
			f.name, f.args, f.res, f.name, f.args,
			CASE WHEN f.res = 'void' THEN 'PERFORM' ELSE 'RETURN' END,
			f.name, f.pass);
	END LOOP;
END
$do$;

SET search_path = hijack, pg_catalog, public;

-- the look-alikes catch what names them without a schema
SELECT 'a'::text = 'a'::text AS text_eq;
SELECT 'a'::name = 'a'::text AS name_text_eq;
SELECT '0/10'::pg_lsn - '0/8'::pg_lsn AS lsn_minus;
SELECT lower('A') AS lower;
SELECT setval('public.hostile_seq', 5, true) AS setval;
SELECT int8larger(1, 2) AS int8larger;
-- and what names its schema is not caught
SELECT 'a'::text OPERATOR(pg_catalog.=) 'a'::text AS qualified;
SELECT pg_catalog.lower('A') AS qualified;

--
-- keys
--
SELECT data_embassy.public_key() OPERATOR(pg_catalog.=) :'ownkey' AS public_key;
SELECT try('SELECT data_embassy.generate_key()') AS generate_key_again;

--
-- register side: pins, the embassies view, keyless tables, copy_frames,
-- frame_header
--
SELECT data_embassy.add_embassy('hostile', :'embkey') IS NOT NULL AS pinned;
SELECT name, active, active_pid, client_addr, sent_lsn, confirmed_flush_lsn,
	   lag_bytes, replay_lag, retained_wal_bytes
FROM data_embassy.embassies ORDER BY name;
SELECT data_embassy.drop_embassy('hostile');
SELECT label, try(q)
FROM (VALUES
	('add_embassy null name', $$SELECT data_embassy.add_embassy(NULL, '4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4dedededededededededededededededededededededededededededededededed')$$),
	('add_embassy null key', $$SELECT data_embassy.add_embassy('hostile', NULL)$$),
	('add_embassy duplicate name', $$SELECT data_embassy.add_embassy('self', '4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4dedededededededededededededededededededededededededededededededed')$$),
	('add_embassy pinned key', $$SELECT data_embassy.add_embassy('hostile', data_embassy.public_key())$$),
	('add_embassy malformed key', $$SELECT data_embassy.add_embassy('hostile', 'xyz')$$),
	('drop_embassy null', $$SELECT data_embassy.drop_embassy(NULL)$$),
	('drop_embassy unknown', $$SELECT data_embassy.drop_embassy('no-such-embassy')$$),
	('drop_embassy dropped', $$SELECT data_embassy.drop_embassy('hostile')$$)
) AS v(label, q)
ORDER BY label COLLATE "C";

SELECT true AS listed FROM (SELECT count(*) FROM data_embassy.keyless_tables) s;
SELECT data_embassy.set_keyless_identity_full(true);
CREATE TABLE hijack.hostile_nokey (a integer);
SELECT data_embassy.set_keyless_identity_full(false);
SELECT relreplident FROM pg_class
WHERE oid OPERATOR(pg_catalog.=) 'hijack.hostile_nokey'::regclass;
DROP TABLE hijack.hostile_nokey;
SELECT try('SELECT data_embassy.set_keyless_identity_full(NULL)') AS keyless_null;

-- frames to inspect: a heartbeat sealed by the output plugin (the copy
-- runs only in a replication slot's exported snapshot, see TAP 175)
-- (slots need a replication role: the superuser makes the frames)
RESET ROLE;
SELECT 'created' FROM pg_create_logical_replication_slot('hostile_hf', 'data_embassy');
SELECT data_embassy.heartbeat('\xabababababababababababababababab'::bytea) IS NOT NULL AS beat;
CREATE TEMP TABLE hf AS
SELECT n, fr FROM pg_logical_slot_get_binary_changes('hostile_hf', NULL, NULL,
		'embassy_key', :'ownkey') WITH ORDINALITY AS c(l, x, fr, n);
SELECT pg_drop_replication_slot('hostile_hf');
GRANT SELECT ON hf TO regress_hostile;
SET ROLE regress_hostile;
SELECT DISTINCT h.version, h.kind FROM hf, data_embassy.frame_header(hf.fr) h;
SELECT count(*) AS null_key_no_frames FROM data_embassy.copy_frames(NULL, NULL, NULL, NULL);
SELECT count(*) AS null_frame_no_header FROM data_embassy.frame_header(NULL)
WHERE version IS NOT NULL;
SELECT label, try(q)
FROM (VALUES
	('copy_frames unpinned key', $$SELECT count(*) FROM data_embassy.copy_frames('4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4dedededededededededededededededededededededededededededededededed', '0000000000000000000000000000000000000000000000000000000000000000', 'no_slot', '00000003-00000002-1')$$),
	('copy_frames malformed key', $$SELECT count(*) FROM data_embassy.copy_frames('xyz', '0000000000000000000000000000000000000000000000000000000000000000', 'no_slot', '00000003-00000002-1')$$),
	('frame_header garbage', $$SELECT * FROM data_embassy.frame_header('\xdeadbeef')$$),
	('inspect_frames not granted', $$SELECT count(*) FROM data_embassy.inspect_frames('{}', 'xyz')$$)
) AS v(label, q)
ORDER BY label COLLATE "C";

-- inspect_frames opens frames with this site's private key: superusers
-- only (nothing grants it).  A superuser under the same search_path:
RESET ROLE;
SHOW search_path;
SELECT record_type
FROM data_embassy.inspect_frames((SELECT array_agg(fr ORDER BY n) FROM hf),
								 :'ownkey')
GROUP BY record_type ORDER BY record_type COLLATE "C";
SELECT record_type
FROM data_embassy.inspect_frame((SELECT fr FROM hf ORDER BY n LIMIT 1), :'ownkey')
GROUP BY record_type ORDER BY record_type COLLATE "C";
SELECT count(*) AS null_no_rows FROM data_embassy.inspect_frames(NULL, :'ownkey');
SELECT count(*) AS null_no_rows FROM data_embassy.inspect_frame(NULL, :'ownkey');
SELECT label, try(q)
FROM (VALUES
	('inspect_frames garbage', $$SELECT count(*) FROM data_embassy.inspect_frames(ARRAY['\xdeadbeef'::bytea], data_embassy.public_key())$$),
	('inspect_frames malformed key', $$SELECT count(*) FROM data_embassy.inspect_frames((SELECT array_agg(fr) FROM hf), 'xyz')$$),
	('inspect_frames foreign key', $$SELECT count(*) FROM data_embassy.inspect_frames((SELECT array_agg(fr ORDER BY n) FROM hf), '4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4dedededededededededededededededededededededededededededededededed')$$)
) AS v(label, q)
ORDER BY label COLLATE "C";

-- decoding: the output plugin in this backend, called under the same
-- search_path
SELECT 'created' FROM pg_create_logical_replication_slot('hostile_slot', 'data_embassy');
INSERT INTO hostile_data VALUES (3, 'three');
UPDATE hostile_data SET note = 'deux' WHERE id OPERATOR(pg_catalog.=) 2;
DELETE FROM hostile_data WHERE id OPERATOR(pg_catalog.=) 1;
SELECT record_type, relation
FROM data_embassy.inspect_frames(
	(SELECT array_agg(data) FROM pg_logical_slot_get_binary_changes(
		'hostile_slot', NULL, NULL, 'embassy_key', :'ownkey')),
	:'ownkey')
ORDER BY frame_seq, record_no;
SELECT try($$SELECT count(*) FROM pg_logical_slot_peek_binary_changes('hostile_slot', NULL, NULL, 'embassy_key', NULL)$$) AS null_key;
SELECT pg_drop_replication_slot('hostile_slot');

--
-- embassy side: a register that cannot be reached
--
SET ROLE regress_hostile;
SHOW search_path;
SELECT data_embassy.add_register('h1', :'unreachable', :'regkey', false);
SELECT label, try(q)
FROM (VALUES
	('add_register null name', $$SELECT data_embassy.add_register(NULL, 'host=/nonexistent', '3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3cedededededededededededededededededededededededededededededededed')$$),
	('add_register null conninfo', $$SELECT data_embassy.add_register('h2', NULL, '3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3cedededededededededededededededededededededededededededededededed')$$),
	('add_register null key', $$SELECT data_embassy.add_register('h2', 'host=/nonexistent', NULL)$$),
	('add_register null copy_data', $$SELECT data_embassy.add_register('h2', 'host=/nonexistent', '2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2dedededededededededededededededededededededededededededededededed', NULL)$$),
	('add_register existing name', $$SELECT data_embassy.add_register('h1', 'host=/nonexistent', '2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2dedededededededededededededededededededededededededededededededed')$$),
	('add_register existing key', $$SELECT data_embassy.add_register('h2', 'host=/nonexistent', '3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3cedededededededededededededededededededededededededededededededed')$$),
	('add_register own key', $$SELECT data_embassy.add_register('h2', 'host=/nonexistent', data_embassy.public_key())$$),
	('add_register bad conninfo', $$SELECT data_embassy.add_register('h2', 'nosuchkeyword=1', '2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2dedededededededededededededededededededededededededededededededed')$$),
	('add_register empty schemas', $$SELECT data_embassy.add_register('h2', 'host=/nonexistent', '2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2dedededededededededededededededededededededededededededededededed', schemas => '{}')$$),
	('add_register null schema', $$SELECT data_embassy.add_register('h2', 'host=/nonexistent', '2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2dedededededededededededededededededededededededededededededededed', schemas => ARRAY[NULL])$$),
	('add_register unknown schema', $$SELECT data_embassy.add_register('h2', 'host=/nonexistent', '2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2dedededededededededededededededededededededededededededededededed', schemas => '{nowhere}')$$),
	('add_replicated_table null register', $$SELECT data_embassy.add_replicated_table(NULL, 'hostile_replica')$$),
	('add_replicated_table null relation', $$SELECT data_embassy.add_replicated_table('h1', NULL)$$),
	('add_replicated_table unknown register', $$SELECT data_embassy.add_replicated_table('h9', 'hostile_replica')$$)
) AS v(label, q)
ORDER BY label COLLATE "C";

-- the launcher lists it within seconds
DO $$
DECLARE
	listed boolean := false;
BEGIN
	FOR i IN 1..300 LOOP
		PERFORM FROM data_embassy.lag
		WHERE register OPERATOR(pg_catalog.=) 'h1';
		listed := FOUND;
		EXIT WHEN listed;
		PERFORM pg_sleep(0.1);
		PERFORM pg_stat_clear_snapshot();
	END LOOP;
	RAISE NOTICE 'h1 listed: %', listed;
END
$$;
SELECT register, database FROM data_embassy.lag;
SELECT register, can_promote, promoted_at, promoted_lsn
FROM data_embassy.failover_status;
SELECT register FROM data_embassy.register_status();

-- the guard (a fresh session loads the guarded set); the table declared
-- by the admin, under the hostile path
SELECT data_embassy.add_replicated_table('h1', 'hostile_replica');
RESET ROLE;
INSERT INTO data_embassy.replicated_sequences
VALUES ('h1', 'hostile_seq'::regclass, 90);
\c
\set SHOW_CONTEXT never
\set VERBOSITY terse
SET ROLE regress_hostile;
SET search_path = hijack, pg_catalog, public;
INSERT INTO hostile_replica VALUES (1);

-- pause, resume, retry (whether its worker runs now varies: the notice is
-- hidden), resync
SELECT data_embassy.pause_register('h1');
SELECT data_embassy.resume_register('h1');
SET client_min_messages = warning;
SELECT try($$SELECT data_embassy.retry_register('h1')$$) AS retry;
RESET client_min_messages;
SELECT data_embassy.resync_register('h1');
SELECT label, try(q)
FROM (VALUES
	('pause null', $$SELECT data_embassy.pause_register(NULL)$$),
	('pause unknown', $$SELECT data_embassy.pause_register('nope')$$),
	('resume null', $$SELECT data_embassy.resume_register(NULL)$$),
	('resume unknown', $$SELECT data_embassy.resume_register('nope')$$),
	('resume not paused', $$SELECT data_embassy.resume_register('h1')$$),
	('retry null', $$SELECT data_embassy.retry_register(NULL)$$),
	('retry unknown', $$SELECT data_embassy.retry_register('nope')$$),
	('resync null', $$SELECT data_embassy.resync_register(NULL)$$),
	('resync unknown', $$SELECT data_embassy.resync_register('nope')$$),
	('resync_table null register', $$SELECT data_embassy.resync_table(NULL, 'hostile_replica')$$),
	('resync_table null relation', $$SELECT data_embassy.resync_table('h1', NULL)$$),
	('resync_table unknown', $$SELECT data_embassy.resync_table('nope', 'hostile_replica')$$),
	('skip null', $$SELECT data_embassy.skip(NULL, '0/1')$$),
	('skip unknown', $$SELECT data_embassy.skip('nope', '0/1')$$),
	('alter null', $$SELECT data_embassy.alter_register(NULL, true)$$),
	('alter unknown', $$SELECT data_embassy.alter_register('nope', true)$$),
	('alter null tls', $$SELECT data_embassy.alter_register('h1', NULL)$$),
	('copy_table_frames unpinned', $$SELECT count(*) FROM data_embassy.copy_table_frames('2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2dedededededededededededededededededededededededededededededededed', repeat('0', 64), 'no_slot_resync', '00000003-00000002-1', ARRAY['hostile_replica'::regclass::oid])$$),
	('keyless_tables_list', $$SELECT count(*) FROM data_embassy.keyless_tables_list()$$)
) AS v(label, q)
ORDER BY label COLLATE "C";
SELECT data_embassy.pause_register('h1');
SELECT try($$SELECT data_embassy.retry_register('h1')$$) AS retry_paused;
SELECT try($$SELECT data_embassy.pause_register('h1')$$) AS pause_paused;
SELECT data_embassy.resume_register('h1');

-- promote: bad input first, then the register
SELECT * FROM data_embassy.promote('nope');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM data_embassy.promote('h1', '-1 s');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT * FROM data_embassy.promote('h1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT register, applied_lsn, source_lsn, unreplicated_bytes
FROM data_embassy.promote('h1', NULL);
-- the replicated sequence moved to its maximum (the register's value plus
-- data_embassy.promote_sequence_margin would pass it), and the guard is
-- lifted
SELECT last_value FROM hostile_seq;
INSERT INTO hostile_replica VALUES (2);
SELECT register, promoted_lsn, source_lsn, unreplicated_bytes,
	   promoted_by OPERATOR(pg_catalog.=) CURRENT_USER AS by_me
FROM data_embassy.promotions WHERE register OPERATOR(pg_catalog.=) 'h1';
SELECT register, can_promote FROM data_embassy.failover_status;

-- what a promoted register refuses
SELECT * FROM data_embassy.promote('h1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- (no register left to promote: only a notice)
SELECT * FROM data_embassy.promote();
SELECT label, try(q)
FROM (VALUES
	('pause promoted', $$SELECT data_embassy.pause_register('h1')$$),
	('resume promoted', $$SELECT data_embassy.resume_register('h1')$$),
	('retry promoted', $$SELECT data_embassy.retry_register('h1')$$),
	('resync promoted', $$SELECT data_embassy.resync_register('h1')$$),
	('resync_table promoted', $$SELECT data_embassy.resync_table('h1', 'hostile_replica')$$),
	('skip promoted', $$SELECT data_embassy.skip('h1', '0/1')$$),
	('alter promoted', $$SELECT data_embassy.alter_register('h1', false)$$)
) AS v(label, q)
ORDER BY label COLLATE "C";

-- drop: bad input, then the register, then again
SELECT data_embassy.drop_register(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT data_embassy.drop_register('nope');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT data_embassy.drop_register('h1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT data_embassy.drop_register('h1');
SELECT data_embassy.drop_register('h1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT count(*) AS registers FROM data_embassy.lag;
SELECT register FROM data_embassy.promotions
WHERE register OPERATOR(pg_catalog.=) 'h1';

--
-- clean up, as a superuser with a safe search_path
--
RESET ROLE;
RESET search_path;
DELETE FROM data_embassy.promotions WHERE register = 'h1';
DROP SCHEMA hijack CASCADE;
DROP TABLE hostile_data, hostile_replica;
DROP SEQUENCE hostile_seq;
DO $$
BEGIN
	EXECUTE format('REVOKE CREATE ON DATABASE %I FROM regress_hostile',
				   current_database());
END
$$;
DROP ROLE regress_hostile;
DROP FUNCTION public.try(text);
SELECT name FROM data_embassy.embassy_pins;
SELECT count(*) AS registers FROM data_embassy.registers;
