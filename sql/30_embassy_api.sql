--
-- 30_embassy_api: add_register, pause_register, resume_register and
-- drop_register on one instance.  The register's conninfo points at a
-- socket that does not exist, so the worker stays disconnected, never
-- learns the register database's OID (part of the slot name), and
-- drop_register has no slot to drop there.
--

-- wait (at most 30 s) until the register's row in the lag view satisfies cond
CREATE FUNCTION wait_lag(reg text, cond text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
	ok boolean;
BEGIN
	FOR i IN 1 .. 300 LOOP
		EXECUTE format('SELECT EXISTS (SELECT FROM data_embassy.lag WHERE register = %L AND %s)',
					   reg, cond) INTO ok;
		IF ok THEN
			RETURN true;
		END IF;
		PERFORM pg_sleep(0.1);
	END LOOP;
	RETURN false;
END
$$;

\set conninfo 'host=/nonexistent port=1 dbname=postgres password=secret'
SELECT (repeat('ab', 31) || '2b' || repeat('ed', 32)) AS rkey \gset

-- bad names
SELECT data_embassy.add_register(NULL, :'conninfo', :'rkey');
SELECT data_embassy.add_register('', :'conninfo', :'rkey');
SELECT data_embassy.add_register(repeat('n', 64), :'conninfo', :'rkey');
SELECT data_embassy.add_register('two words', :'conninfo', :'rkey');
SELECT data_embassy.add_register('semi;colon', :'conninfo', :'rkey');
SELECT data_embassy.add_register('quo''te', :'conninfo', :'rkey');

-- bad conninfo, key and copy_data
SELECT data_embassy.add_register('r1', NULL, :'rkey');
-- (libpq words the complaint; check its code and that it hides the password)
DO $$
BEGIN
	PERFORM data_embassy.add_register('r1', 'host=/nonexistent bogus=1 password=secret',
									  (repeat('ab', 31) || '2b' || repeat('ed', 32)));
EXCEPTION WHEN invalid_parameter_value THEN
	RAISE NOTICE 'bad conninfo refused, password shown: %', SQLERRM LIKE '%secret%';
END
$$;
SELECT data_embassy.add_register('r1', :'conninfo', NULL);
SELECT data_embassy.add_register('r1', :'conninfo', 'xyz');
SELECT data_embassy.add_register('r1', :'conninfo', repeat('g', 64));
SELECT data_embassy.add_register('r1', :'conninfo', data_embassy.public_key());
SELECT data_embassy.add_register('r1', :'conninfo', :'rkey', NULL);
SELECT count(*) AS no_rows_yet FROM data_embassy.registers;

-- a good one; keys are stored in lower case
-- (the statement's text, which holds the password, is not shown to
-- pg_stat_activity's readers)
SELECT (SELECT query LIKE '%secret%' FROM pg_stat_activity
		WHERE pid = pg_backend_pid()) AS password_shown
FROM data_embassy.add_register('r1', :'conninfo', upper(:'rkey'), false) a;
SELECT name, register_key = :'rkey' AS key_ok, copy_data, state, paused,
	   slot_name IS NULL AS slot_named_at_first_connect
FROM data_embassy.registers;

-- duplicates
SELECT data_embassy.add_register('r1', :'conninfo', (repeat('cd', 31) || '4d' || repeat('ed', 32)));
SELECT data_embassy.add_register('r2', :'conninfo', :'rkey');

-- the launcher gives it a slot and a worker within seconds
SELECT wait_lag('r1', 'true') AS r1_listed;
SELECT register, database = current_database() AS this_database,
	   state IN ('initializing', 'disconnected', 'error') AS state_ok,
	   frames_applied, rows_applied
FROM data_embassy.lag;
-- the lag view never shows conninfo
SELECT count(*) AS leaks FROM data_embassy.register_status() s
WHERE s::text LIKE '%secret%';

-- pause and resume; doing either twice only says so
SELECT data_embassy.pause_register('r1');
SELECT data_embassy.pause_register('r1');
SELECT paused FROM data_embassy.registers WHERE name = 'r1';
SELECT wait_lag('r1', $$state = 'paused'$$) AS r1_paused;
SELECT data_embassy.resume_register('r1');
SELECT data_embassy.resume_register('r1');
SELECT paused FROM data_embassy.registers WHERE name = 'r1';
SELECT wait_lag('r1', $$state <> 'paused'$$) AS r1_resumed;

-- unknown registers
SELECT data_embassy.pause_register('nope');
SELECT data_embassy.resume_register('nope');
SELECT data_embassy.drop_register('nope');
SELECT data_embassy.drop_register(NULL);
SELECT data_embassy.retry_register('nope');
SELECT data_embassy.retry_register(NULL);
SELECT data_embassy.resync_register('nope');
SELECT data_embassy.resync_register(NULL);
SELECT data_embassy.resync_register('bad name');
SELECT data_embassy.skip('nope', '0/1000');
SELECT data_embassy.skip(NULL, '0/1000');
SELECT data_embassy.skip('bad name', '0/1000');

-- skip: the commit LSN is required; '0/0' withdraws a pending skip
SELECT data_embassy.skip('r1', NULL);
SELECT data_embassy.skip('r1', '0/0');
SELECT data_embassy.skip('r1', '0/1000');
SELECT skip_lsn, skip_requested_by = current_user AS by_me
FROM data_embassy.registers WHERE name = 'r1';
SELECT data_embassy.skip('r1', '0/2000');
SELECT skip_lsn FROM data_embassy.registers WHERE name = 'r1';
SELECT data_embassy.skip('r1', '0/0');
SELECT skip_lsn IS NULL AS withdrawn, skip_requested_by IS NULL AS by_nobody
FROM data_embassy.registers WHERE name = 'r1';
-- the lag view's columns for it, and for the copy (none ran)
SELECT failed_commit_lsn, copy_tables_done, copy_tables_total, copy_rows,
	   copy_bytes
FROM data_embassy.lag WHERE register = 'r1';
SELECT count(*) AS nothing_skipped FROM data_embassy.skipped_transactions;

-- drop_register cannot be rolled back
BEGIN;
SELECT data_embassy.drop_register('r1');
ROLLBACK;

-- TLS by default: a register on another host needs sslmode verify-full or
-- verify-ca.  (192.0.2.0/24 is TEST-NET-1, reserved for documentation:
-- no server answers there.)
SELECT data_embassy.add_register('far', 'host=192.0.2.1 dbname=postgres', :'rkey');
-- tls_verdict: what add_register says of a conninfo, undone either way
CREATE FUNCTION tls_verdict(conninfo text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text;
	msg text;
	det text;
BEGIN
	BEGIN
		PERFORM data_embassy.add_register('tls_probe', conninfo,
										  (repeat('ef', 31) || '6f' || repeat('ed', 32)), false);
		RAISE EXCEPTION USING ERRCODE = 'P0004', MESSAGE = 'accepted';
	EXCEPTION WHEN assert_failure THEN
		RETURN 'accepted';
	END;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, det = PG_EXCEPTION_DETAIL;
	RETURN st || ': ' || det;
END
$$;
SELECT c AS conninfo, tls_verdict(c) AS verdict
FROM (VALUES
	('host=192.0.2.1 sslmode=require'),
	('host=192.0.2.1 sslmode=verify-ca'),
	('host=192.0.2.1 sslmode=verify-full sslrootcert=/nonexistent/ca.crt'),
	('postgresql://192.0.2.1/postgres?sslmode=disable'),
	('postgresql://192.0.2.1/postgres?sslmode=verify-full'),
	('host=register.example sslmode=prefer'),
	('host=/nonexistent,192.0.2.1,localhost'),
	('host=/nonexistent,localhost,127.0.0.1,127.1.2.3,::1,@abstract sslmode=disable'),
	('host=,LocalHost sslmode=allow'),
	('hostaddr=127.0.0.1 host=register.example sslmode=disable'),
	('hostaddr=192.0.2.1 host=localhost'),
	('hostaddr=127.0.0.1,192.0.2.1 host=localhost,localhost'),
	('host=::ffff:127.0.0.1 sslmode=disable'),
	('host=::ffff:192.0.2.1 sslmode=disable'),
	('host=2001:db8::1'),
	('host=127.0.0.1.example sslmode=disable'),
	('service=regress_no_such_service')
) AS v(c);
SELECT count(*) AS nothing_added FROM data_embassy.registers WHERE name <> 'r1';
-- the opt-out is explicit, stored and shown; NULL is refused
SELECT data_embassy.add_register('far', 'host=192.0.2.1', :'rkey', false, NULL);
SELECT data_embassy.alter_register('r1', NULL);
SELECT data_embassy.alter_register('nope', false);
SELECT data_embassy.alter_register(NULL, false);
SELECT name, require_tls FROM data_embassy.registers;
SELECT data_embassy.alter_register('r1', true);
SELECT data_embassy.alter_register('r1', false);
SELECT name, require_tls FROM data_embassy.registers;
SELECT wait_lag('r1', 'require_tls IS false') AS r1_opted_out_in_lag;
SELECT register, require_tls FROM data_embassy.failover_status;
SELECT data_embassy.alter_register('r1', true);
SELECT wait_lag('r1', 'require_tls') AS r1_back_in_lag;
-- a register added with the opt-out: the worker connects to a host that
-- never answers (connect_timeout=1); turned back on, the worker refuses the
-- conninfo itself and says so in last_error
SELECT data_embassy.add_register('far',
	'host=192.0.2.1 port=1 connect_timeout=1 dbname=postgres',
	(repeat('ef', 31) || '6f' || repeat('ed', 32)), false, require_tls => false);
SELECT name, require_tls FROM data_embassy.registers WHERE name = 'far';
SELECT wait_lag('far', $$state = 'disconnected' AND last_error IS NOT NULL$$)
	AS far_disconnected;
SELECT data_embassy.alter_register('far', true);
SELECT wait_lag('far', $$last_error LIKE 'connection to register "far" must use sslmode%'$$)
	AS far_refused_by_worker;
SELECT state, require_tls, last_error FROM data_embassy.lag WHERE register = 'far';
\set VERBOSITY terse
SELECT data_embassy.drop_register('far');
\set VERBOSITY default
DROP FUNCTION tls_verdict(text);

-- privileges: a plain role may call none of the functions nor read the view
CREATE ROLE regress_de_api_plain;
CREATE ROLE regress_de_api_admin IN ROLE data_embassy_admin;
CREATE ROLE regress_de_api_monitor IN ROLE pg_monitor;
SET ROLE regress_de_api_plain;
SELECT data_embassy.add_register('r2', :'conninfo', (repeat('cd', 31) || '4d' || repeat('ed', 32)));
SELECT data_embassy.pause_register('r1');
SELECT data_embassy.drop_register('r1');
SELECT data_embassy.retry_register('r1');
SELECT data_embassy.resync_register('r1');
SELECT data_embassy.skip('r1', '0/1000');
SELECT data_embassy.alter_register('r1', false);
SELECT count(*) FROM data_embassy.lag;
SELECT count(*) FROM data_embassy.skipped_transactions;
RESET ROLE;
-- EXECUTE alone is not enough
GRANT EXECUTE ON FUNCTION data_embassy.pause_register(text) TO regress_de_api_plain;
SET ROLE regress_de_api_plain;
SELECT data_embassy.pause_register('r1');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION data_embassy.pause_register(text) FROM regress_de_api_plain;
-- an administrator need not be a superuser, nor see the table
SET ROLE regress_de_api_admin;
SELECT data_embassy.pause_register('r1');
SELECT data_embassy.resume_register('r1');
SELECT data_embassy.alter_register('r1', true);
SELECT conninfo FROM data_embassy.registers;
RESET ROLE;
-- a hostile search_path: an "=" of the caller's that would run with the
-- table owner's rights if the extension's SQL used it
CREATE SCHEMA regress_de_evil;
CREATE FUNCTION regress_de_evil.texteq(text, text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	RAISE NOTICE 'hijacked as %', current_user;
	RETURN pg_catalog.texteq($1, $2);
END $$;
CREATE OPERATOR regress_de_evil.= (LEFTARG = text, RIGHTARG = text,
								   FUNCTION = regress_de_evil.texteq);
GRANT USAGE ON SCHEMA regress_de_evil TO PUBLIC;
SET ROLE regress_de_api_admin;
SET search_path = regress_de_evil, pg_catalog;
SELECT 'a'::text = 'a'::text AS evil_operator_in_effect;
SELECT data_embassy.pause_register('r1');
SELECT data_embassy.resume_register('r1');
SELECT data_embassy.retry_register('nope');
RESET search_path;
RESET ROLE;
DROP SCHEMA regress_de_evil CASCADE;
-- pg_monitor reads the lag view
SET ROLE regress_de_api_monitor;
SELECT register, database = current_database() AS this_database FROM data_embassy.lag;
SELECT count(*) AS skipped FROM data_embassy.skipped_transactions;
RESET ROLE;

-- drop: the register was never reached, so it has no slot to drop
\set VERBOSITY terse
SELECT data_embassy.drop_register('r1');
\set VERBOSITY default
SELECT count(*) AS registers_left FROM data_embassy.registers;
SELECT count(*) AS lag_rows FROM data_embassy.lag;
SELECT count(*) AS origins_left FROM pg_replication_origin
WHERE roname LIKE 'data_embassy%';

-- a second register, dropped by an administrator
SELECT data_embassy.add_register('r2', :'conninfo', (repeat('cd', 31) || '4d' || repeat('ed', 32)));
SELECT wait_lag('r2', 'true') AS r2_listed;
SET ROLE regress_de_api_admin;
SET client_min_messages = error;
SELECT data_embassy.drop_register('r2');
RESET client_min_messages;
RESET ROLE;
SELECT count(*) AS registers_left FROM data_embassy.registers;
SELECT count(*) AS lag_rows FROM data_embassy.lag;

DROP ROLE regress_de_api_plain, regress_de_api_admin, regress_de_api_monitor;
DROP FUNCTION wait_lag(text, text);
