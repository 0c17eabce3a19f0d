--
-- 02_pins: embassies pinned at a register (add_embassy, drop_embassy, the
-- embassies view).  Leaves one pin, 'self', of this instance's own public
-- key, which later files use.
--

SELECT * FROM data_embassy.embassies;

-- pin this instance's own key; the slot name derives from the key and the
-- database: "data_embassy_", the first 16 hex digits of SHA-256 of the raw
-- key, "_" and the database's OID
SELECT data_embassy.add_embassy('self', data_embassy.public_key()) AS slot \gset
SELECT :'slot' ~ '^data_embassy_[0-9a-f]{16}_[0-9]+$' AS slot_format,
	   :'slot' = 'data_embassy_' ||
		   left(encode(sha256(decode(left(data_embassy.public_key(), 64), 'hex')), 'hex'), 16) ||
		   '_' || (SELECT oid FROM pg_database WHERE datname = current_database())
		   AS slot_from_key;
SELECT name, embassy_key = data_embassy.public_key() AS key_stored,
	   slot_name = :'slot' AS slot_stored, created_at <= now() AS created
FROM data_embassy.embassy_pins;

-- the view, before any embassy has connected
SELECT name, slot_name = :'slot' AS slot, active, active_pid, client_addr,
	   sent_lsn, confirmed_flush_lsn, current_lsn IS NOT NULL AS has_current_lsn,
	   lag_bytes, replay_lag, retained_wal_bytes
FROM data_embassy.embassies;
SELECT attname FROM pg_attribute
WHERE attrelid = 'data_embassy.embassies'::regclass AND attnum > 0
ORDER BY attnum;

-- keys are accepted in upper case and stored in lower case; a fixed key has
-- a fixed slot name
SELECT data_embassy.add_embassy('embassy-2.example', upper((repeat('5a', 32) || repeat('ed', 32))));
SELECT name, embassy_key, slot_name FROM data_embassy.embassy_pins
WHERE name <> 'self';

-- bad keys
SELECT data_embassy.add_embassy('bad', NULL);
SELECT data_embassy.add_embassy('bad', '');
SELECT data_embassy.add_embassy('bad', 'abc');
SELECT data_embassy.add_embassy('bad', (repeat('5a', 32) || repeat('ed', 32)) || '0');
SELECT data_embassy.add_embassy('bad', repeat('5a', 31) || '5g' || repeat('ed', 32));
SELECT data_embassy.add_embassy('bad', ' ' || repeat('5a', 31) || '5');
-- a point of small order can never agree on a key (terse: the detail
-- quotes OpenSSL, whose wording varies between versions)
\set VERBOSITY terse
SELECT data_embassy.add_embassy('bad', (repeat('00', 32) || repeat('ed', 32)));
SELECT data_embassy.add_embassy('bad', '01' || repeat('00', 31) || repeat('ed', 32));
\set VERBOSITY default

-- bad names
SELECT data_embassy.add_embassy(NULL, (repeat('6b', 32) || repeat('ed', 32)));
SELECT data_embassy.add_embassy('', (repeat('6b', 32) || repeat('ed', 32)));
SELECT data_embassy.add_embassy('it''s', (repeat('6b', 32) || repeat('ed', 32)));
SELECT data_embassy.add_embassy('x"y', (repeat('6b', 32) || repeat('ed', 32)));
SELECT data_embassy.add_embassy('x; DROP TABLE data_embassy.embassy_pins', (repeat('6b', 32) || repeat('ed', 32)));
SELECT data_embassy.add_embassy('two words', (repeat('6b', 32) || repeat('ed', 32)));
SELECT data_embassy.add_embassy('ambassadé', (repeat('6b', 32) || repeat('ed', 32)));
SELECT data_embassy.add_embassy(repeat('n', 64), (repeat('6b', 32) || repeat('ed', 32)));
-- 63 bytes is the longest name
SELECT data_embassy.add_embassy(repeat('n', 63), (repeat('6b', 32) || repeat('ed', 32)));
SELECT data_embassy.drop_embassy(repeat('n', 63));

-- duplicates: a name is pinned once, a key is pinned once
SELECT data_embassy.add_embassy('self', (repeat('6b', 32) || repeat('ed', 32)));
SELECT data_embassy.add_embassy('self-again', data_embassy.public_key());
SELECT data_embassy.add_embassy('embassy-2-again', lower((repeat('5a', 32) || repeat('ed', 32))));
-- names are case sensitive
SELECT data_embassy.add_embassy('SELF', (repeat('6b', 32) || repeat('ed', 32)));
SELECT data_embassy.drop_embassy('SELF');

-- nothing is left of a failed or rolled back call
BEGIN;
SELECT data_embassy.add_embassy('rolled-back', (repeat('7c', 32) || repeat('ed', 32)));
ROLLBACK;
SELECT name FROM data_embassy.embassy_pins ORDER BY name;

-- drop: unknown names, NULL
SELECT data_embassy.drop_embassy('no-such-embassy');
SELECT data_embassy.drop_embassy(NULL);
SELECT data_embassy.drop_embassy('');

-- drop also drops the embassy's slot in this database
SELECT 'ok' AS created FROM pg_create_logical_replication_slot(
	(SELECT slot_name FROM data_embassy.embassy_pins
	 WHERE name = 'embassy-2.example'), 'test_decoding');
SELECT name, active, active_pid, confirmed_flush_lsn IS NOT NULL AS confirmed,
	   lag_bytes >= 0 AS lag_known, retained_wal_bytes >= 0 AS retains_wal
FROM data_embassy.embassies WHERE name = 'embassy-2.example';
SELECT data_embassy.drop_embassy('embassy-2.example');
SELECT count(*) AS slots_left FROM pg_replication_slots
WHERE slot_name LIKE 'data_embassy\_%';
SELECT data_embassy.drop_embassy('embassy-2.example');

-- drop then add again, under the same name and key
SELECT data_embassy.add_embassy('embassy-2.example', (repeat('5a', 32) || repeat('ed', 32)));
SELECT data_embassy.drop_embassy('embassy-2.example');
SELECT data_embassy.add_embassy('embassy-2.example', (repeat('5a', 32) || repeat('ed', 32)));
SELECT name FROM data_embassy.embassy_pins ORDER BY name;

-- privileges
CREATE ROLE regress_de_pins_plain;
CREATE ROLE regress_de_pins_admin IN ROLE data_embassy_admin;

SET ROLE regress_de_pins_plain;
SELECT data_embassy.add_embassy('by-plain', (repeat('7c', 32) || repeat('ed', 32)));
SELECT data_embassy.drop_embassy('embassy-2.example');
SELECT name FROM data_embassy.embassy_pins;
SELECT name FROM data_embassy.embassies;
RESET ROLE;

-- even with EXECUTE granted, pins need an administrator
GRANT EXECUTE ON FUNCTION data_embassy.add_embassy(text, text),
	data_embassy.drop_embassy(text) TO regress_de_pins_plain;
SET ROLE regress_de_pins_plain;
SELECT data_embassy.add_embassy('by-plain', (repeat('7c', 32) || repeat('ed', 32)));
SELECT data_embassy.drop_embassy('embassy-2.example');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION data_embassy.add_embassy(text, text),
	data_embassy.drop_embassy(text) FROM regress_de_pins_plain;

-- an administrator needs no privilege on the table to change it
SET ROLE regress_de_pins_admin;
SELECT data_embassy.add_embassy('by-admin', (repeat('7c', 32) || repeat('ed', 32)));
SELECT name FROM data_embassy.embassies ORDER BY name;
SELECT data_embassy.drop_embassy('by-admin');
SELECT data_embassy.drop_embassy('embassy-2.example');
INSERT INTO data_embassy.embassy_pins (name, embassy_key, slot_name)
VALUES ('direct', (repeat('7c', 32) || repeat('ed', 32)), 'x');
RESET ROLE;

DROP ROLE regress_de_pins_plain;
DROP ROLE regress_de_pins_admin;

-- what later files find
SELECT name, embassy_key = data_embassy.public_key() AS own_key,
	   slot_name = :'slot' AS slot
FROM data_embassy.embassy_pins;
