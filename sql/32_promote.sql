--
-- 32_promote: promote() of several registers is all or nothing, a member
-- of data_embassy_admin can promote, and the record of a promotion
-- outlives drop_register.  The registers' conninfo points at a socket that
-- does not exist, so their workers never connect (the disaster case).
--
\set VERBOSITY terse
SELECT data_embassy.add_register('p1', 'host=/nonexistent port=1 dbname=postgres',
								 (repeat('1a', 31) || '1a' || repeat('ed', 32)));
SELECT data_embassy.add_register('p2', 'host=/nonexistent port=2 dbname=postgres',
								 (repeat('2b', 31) || '2b' || repeat('ed', 32)));

-- promote() of both fails on the second (its statement times out while
-- promote() pauses before committing): neither is promoted, and both go
-- back to replicating
SET data_embassy.test_promote_delay = '2s';
SET statement_timeout = '3s';
SELECT register FROM data_embassy.promote();
RESET statement_timeout;
RESET data_embassy.test_promote_delay;
SELECT name, state, promoted_at IS NULL AS not_promoted
FROM data_embassy.registers ORDER BY name;
SELECT count(*) AS promotions FROM data_embassy.promotions
WHERE register IN ('p1', 'p2');
DO $$
DECLARE
	n int;
BEGIN
	FOR i IN 1..300 LOOP
		SELECT count(*) INTO n FROM data_embassy.lag
		WHERE register IN ('p1', 'p2') AND state NOT IN ('promoting', 'promoted');
		EXIT WHEN n = 2;
		PERFORM pg_sleep(0.1);
	END LOOP;
	RAISE NOTICE 'registers replicating again: %', n;
END
$$;

-- a member of data_embassy_admin, not a superuser, promotes one
CREATE ROLE regress_promote_admin IN ROLE data_embassy_admin;
SET ROLE regress_promote_admin;
SELECT register, applied_lsn, source_lsn, unreplicated_bytes
FROM data_embassy.promote('p1');
-- twice is an error
SELECT register FROM data_embassy.promote('p1');
RESET ROLE;
SELECT name, state FROM data_embassy.registers ORDER BY name;

-- the record stays after drop_register, and names who promoted
SET client_min_messages = error;
SELECT data_embassy.drop_register('p1');
SELECT data_embassy.drop_register('p2');
RESET client_min_messages;
SELECT register, promoted_by FROM data_embassy.promotions
WHERE register IN ('p1', 'p2');
DELETE FROM data_embassy.promotions WHERE register IN ('p1', 'p2');
DROP ROLE regress_promote_admin;
