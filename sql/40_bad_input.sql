--
-- 40_bad_input: every SQL function of the extension fed NULLs, empty
-- strings, overlong names, quotes and semicolons, malformed keys, frames
-- and conninfos, and calls in the wrong order.  Each must fail with a
-- clear message and the right SQLSTATE, and leave nothing half-done: the
-- counts of registers, pins, slots and origins are the same before and
-- after.
--
-- Runs after 01_keys and 02_pins: this instance has an identity key and a
-- pin 'self' of its own key.  try() prints "SQLSTATE: message" (or "ok"),
-- so the output shows codes without file names or line numbers.
--

\set SHOW_CONTEXT never

CREATE FUNCTION try(q text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text;
	msg text;
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
	RETURN st || ': ' || msg;
END
$$;

-- what must not change
CREATE TABLE bad_input_state AS
SELECT 'before' AS at,
	   (SELECT count(*) FROM data_embassy.registers) AS registers,
	   (SELECT count(*) FROM data_embassy.embassy_pins) AS pins,
	   (SELECT count(*) FROM pg_replication_slots) AS slots,
	   (SELECT count(*) FROM pg_replication_origin) AS origins,
	   (SELECT count(*) FROM data_embassy.lag) AS lag_rows;

SELECT (repeat('6b', 32) || repeat('ed', 32)) AS okkey \gset
SELECT data_embassy.public_key() AS ownkey \gset
\set longname '''nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn'''
\set unreachable 'host=/nonexistent port=1 dbname=postgres'

--
-- keys
--
SELECT try('SELECT data_embassy.generate_key()') AS generate_twice;
SELECT try('SELECT data_embassy.public_key()') AS public_key;

--
-- add_embassy(name, embassy_key)
--
SELECT v.label, try(format('SELECT data_embassy.add_embassy(%s, %s)', v.name, v.key))
FROM (VALUES
	('null name', 'NULL', quote_literal(:'okkey')),
	('empty name', '''''', quote_literal(:'okkey')),
	('64-byte name', :'longname', quote_literal(:'okkey')),
	('quote in name', quote_literal('it''s'), quote_literal(:'okkey')),
	('semicolon in name', quote_literal('a;DROP TABLE data_embassy.embassy_pins'), quote_literal(:'okkey')),
	('double quote in name', quote_literal('a"b'), quote_literal(:'okkey')),
	('newline in name', quote_literal(E'a\nb'), quote_literal(:'okkey')),
	('null key', quote_literal('bad'), 'NULL'),
	('empty key', quote_literal('bad'), ''''''),
	('short key', quote_literal('bad'), quote_literal(repeat('6b', 31))),
	('long key', quote_literal('bad'), quote_literal(repeat('6b', 33))),
	('non-hex key', quote_literal('bad'), quote_literal(repeat('zz', 64))),
	('key with spaces', quote_literal('bad'), quote_literal(' ' || repeat('6b', 63) || ' ')),
	('key with semicolon', quote_literal('bad'), quote_literal(repeat('6b', 63) || ';x')),
	('duplicate name', quote_literal('self'), quote_literal(:'okkey')),
	('duplicate key', quote_literal('other'), quote_literal(:'ownkey')),
	-- the same key in another form: bit 255 set, or u = p + 9 (the base
	-- point 9 not reduced)
	('key with bit 255 set', quote_literal('bad'),
	 quote_literal(overlay(:'okkey' placing
		lpad(to_hex(('x' || substr(:'okkey', 63, 2))::bit(8)::int | 128), 2, '0')
		from 63 for 2))),
	('key not below 2^255-19', quote_literal('bad'),
	 quote_literal('f6' || repeat('ff', 30) || '7f' || repeat('ed', 32)))
) AS v(label, name, key)
ORDER BY v.label;

--
-- drop_embassy(name)
--
SELECT v.label, try(format('SELECT data_embassy.drop_embassy(%s)', v.name))
FROM (VALUES
	('null', 'NULL'),
	('empty', ''''''),
	('64-byte name', :'longname'),
	('unknown', quote_literal('no-such-embassy')),
	('injection', quote_literal('self''; DROP TABLE data_embassy.embassy_pins; --'))
) AS v(label, name)
ORDER BY v.label;

-- drop twice: the second says it is gone
SELECT try(format('SELECT data_embassy.add_embassy(%L, %L)', 'twice', :'okkey')) AS add;
SELECT try($$SELECT data_embassy.drop_embassy('twice')$$) AS first_drop;
SELECT try($$SELECT data_embassy.drop_embassy('twice')$$) AS second_drop;

--
-- the output plugin's options (a slot of our plugin, read by hand)
--
SELECT 'created' FROM pg_create_logical_replication_slot('bad_input', 'data_embassy');
SELECT v.label, try(format(
	'SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%L, NULL, NULL%s)',
	'bad_input', v.opts))
FROM (VALUES
	('no embassy_key', ''),
	('null embassy_key', ', ''embassy_key'', NULL'),
	('empty embassy_key', ', ''embassy_key'', '''''),
	('malformed embassy_key', ', ''embassy_key'', ''xyz'''),
	('unpinned embassy_key', format(', ''embassy_key'', %L', :'okkey')),
	('unknown option', format(', ''embassy_key'', %L, ''bogus'', ''1''', :'ownkey')),
	('repeated option', format(', ''embassy_key'', %L, ''embassy_key'', %L', :'ownkey', :'ownkey')),
	('batch_size not a number', format(', ''embassy_key'', %L, ''batch_size'', ''lots''', :'ownkey')),
	('batch_size zero', format(', ''embassy_key'', %L, ''batch_size'', ''0''', :'ownkey')),
	('batch_size negative', format(', ''embassy_key'', %L, ''batch_size'', ''-1''', :'ownkey')),
	('compression_level huge', format(', ''embassy_key'', %L, ''compression_level'', ''1000''', :'ownkey')),
	('compression_level text', format(', ''embassy_key'', %L, ''compression_level'', ''fast''', :'ownkey'))
) AS v(label, opts)
ORDER BY v.label;
-- the text interface is refused
SELECT try(format(
	'SELECT count(*) FROM pg_logical_slot_peek_changes(%L, NULL, NULL, %L, %L)',
	'bad_input', 'embassy_key', :'ownkey')) AS text_interface;
SELECT pg_drop_replication_slot('bad_input');

--
-- copy_frames(embassy_key, session, slot_name, snapshot_name): strict;
-- malformed and unpinned keys
--
SELECT count(*) AS null_key_no_rows FROM data_embassy.copy_frames(NULL, NULL, NULL, NULL);
SELECT v.label, try(format('SELECT count(*) FROM data_embassy.copy_frames(%s, %L, %L, %L)',
						   v.key, repeat('0', 64), 'no_slot', '00000003-00000002-1'))
FROM (VALUES
	('empty key', ''''''),
	('malformed key', quote_literal('xyz')),
	('unpinned key', quote_literal(:'okkey'))
) AS v(label, key)
ORDER BY v.label;

--
-- frame_header(frame) and inspect_frames(frames, register_key)
--
SELECT count(*) AS null_frame_no_row FROM data_embassy.frame_header(NULL)
WHERE version IS NOT NULL;
SELECT v.label, try(format('SELECT * FROM data_embassy.frame_header(%s)', v.frame))
FROM (VALUES
	('empty', '''\x''::bytea'),
	('short', '''\x44454d42''::bytea'),
	('wrong magic', format('%L::bytea', '\x' || repeat('00', 200))),
	('header only, bad magic', format('%L::bytea', '\x58585858' || repeat('00', 128)))
) AS v(label, frame)
ORDER BY v.label;

-- a well-formed header that announces a body it does not carry: the header
-- alone can be read, but opening it is refused
SELECT ('\x44454d42' || '01' || '53' || '0000' || repeat('00', 8) || '00000000' ||
		repeat('11', 32) || '0000000000000001' || repeat('00', 32) ||
		'00000010' || '00000100' || repeat('00', 32))::bytea AS fake \gset
SELECT version, kind, flags, seq, plain_len, sealed_len
FROM data_embassy.frame_header(:'fake');
SELECT v.label, try(format('SELECT * FROM data_embassy.inspect_frames(%s, %s)', v.frames, v.key))
FROM (VALUES
	('empty array', '''{}''::bytea[]', quote_literal(:'ownkey')),
	('null element', 'ARRAY[NULL]::bytea[]', quote_literal(:'ownkey')),
	('two dimensions', format('ARRAY[ARRAY[%L::bytea], ARRAY[%L::bytea]]', :'fake', :'fake'), quote_literal(:'ownkey')),
	('garbage frame', 'ARRAY[''\xdeadbeef''::bytea]', quote_literal(:'ownkey')),
	('truncated frame', format('ARRAY[%L::bytea]', :'fake'), quote_literal(:'ownkey')),
	('malformed key', format('ARRAY[%L::bytea]', :'fake'), quote_literal('xyz')),
	('empty key', format('ARRAY[%L::bytea]', :'fake'), '''''')
) AS v(label, frames, key)
ORDER BY v.label;
SELECT count(*) AS null_args_no_rows FROM data_embassy.inspect_frames(NULL, NULL);

--
-- add_register(name, conninfo, register_key, copy_data)
--
SELECT v.label, try(format('SELECT data_embassy.add_register(%s, %s, %s, %s)',
						   v.name, v.conninfo, v.key, v.copy))
FROM (VALUES
	('null name', 'NULL', quote_literal(:'unreachable'), quote_literal(:'okkey'), 'true'),
	('empty name', '''''', quote_literal(:'unreachable'), quote_literal(:'okkey'), 'true'),
	('64-byte name', :'longname', quote_literal(:'unreachable'), quote_literal(:'okkey'), 'true'),
	('quote in name', quote_literal('o''brien'), quote_literal(:'unreachable'), quote_literal(:'okkey'), 'true'),
	('semicolon in name', quote_literal('r;DROP TABLE data_embassy.registers'), quote_literal(:'unreachable'), quote_literal(:'okkey'), 'true'),
	('null conninfo', quote_literal('r1'), 'NULL', quote_literal(:'okkey'), 'true'),
	('unknown conninfo keyword', quote_literal('r1'), quote_literal('host=/nonexistent nosuchkeyword=1'), quote_literal(:'okkey'), 'true'),
	('unterminated quote in conninfo', quote_literal('r1'), quote_literal('host=''/nonexistent'), quote_literal(:'okkey'), 'true'),
	('null key', quote_literal('r1'), quote_literal(:'unreachable'), 'NULL', 'true'),
	('empty key', quote_literal('r1'), quote_literal(:'unreachable'), '''''', 'true'),
	('malformed key', quote_literal('r1'), quote_literal(:'unreachable'), quote_literal('not a key'), 'true'),
	('own key', quote_literal('r1'), quote_literal(:'unreachable'), quote_literal(:'ownkey'), 'true'),
	('null copy_data', quote_literal('r1'), quote_literal(:'unreachable'), quote_literal(:'okkey'), 'NULL')
) AS v(label, name, conninfo, key, copy)
ORDER BY v.label;

-- require_tls: NULL, and a register on another host without verify-full
SELECT v.label, try(format('SELECT data_embassy.add_register(%L, %L, %L, false, %s)',
						   'r1', v.conninfo, :'okkey', v.tls))
FROM (VALUES
	('null require_tls', :'unreachable', 'NULL'),
	('remote host, no sslmode', 'host=192.0.2.1 password=hunter2', 'true'),
	('remote host, sslmode=require', 'host=192.0.2.1 sslmode=require', 'true'),
	('remote hostaddr, local host name', 'host=localhost hostaddr=192.0.2.1', 'true'),
	('undefined service', 'service=regress_no_such_service', 'true')
) AS v(label, conninfo, tls)
ORDER BY v.label;

--
-- alter_register(name, require_tls)
--
SELECT v.label, try(v.q)
FROM (VALUES
	('null name', 'SELECT data_embassy.alter_register(NULL, true)'),
	('empty name', $$SELECT data_embassy.alter_register('', true)$$),
	('64-byte name', format('SELECT data_embassy.alter_register(%s, true)', :'longname')),
	('unknown', $$SELECT data_embassy.alter_register('nope', false)$$),
	('injection', $$SELECT data_embassy.alter_register('x''; DROP TABLE data_embassy.registers; --', false)$$),
	('null require_tls', $$SELECT data_embassy.alter_register('nope', NULL)$$)
) AS v(label, q)
ORDER BY v.label;

-- a conninfo with a password is refused without echoing it
SELECT try($$SELECT data_embassy.add_register('r1',
		'host=/nonexistent nosuchkeyword=1 password=hunter2', (repeat('6b', 32) || repeat('ed', 32)))$$)
	LIKE '%hunter2%' AS password_echoed;

--
-- pause_register and resume_register: unknown registers and NULLs
--
SELECT v.label, try(v.q)
FROM (VALUES
	('pause null', 'SELECT data_embassy.pause_register(NULL)'),
	('pause empty', $$SELECT data_embassy.pause_register('')$$),
	('pause unknown', $$SELECT data_embassy.pause_register('nope')$$),
	('pause 64-byte name', format('SELECT data_embassy.pause_register(%s)', :'longname')),
	('resume null', 'SELECT data_embassy.resume_register(NULL)'),
	('resume unknown', $$SELECT data_embassy.resume_register('nope')$$),
	('resume injection', $$SELECT data_embassy.resume_register('x''; DROP TABLE data_embassy.registers; --')$$)
) AS v(label, q)
ORDER BY v.label;

--
-- drop_register and promote cannot run in a transaction block (nor in
-- try()'s subtransaction), so they are called directly: psql prints the
-- message, and LAST_ERROR_SQLSTATE the code.
--
\set VERBOSITY terse
SELECT data_embassy.drop_register(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT data_embassy.drop_register('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT data_embassy.drop_register(:longname);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT data_embassy.drop_register('nope');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT data_embassy.drop_register('x''; DROP TABLE data_embassy.registers; --');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM data_embassy.promote('nope');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- promoting every register when there is none only says so
SELECT * FROM data_embassy.promote();
SELECT * FROM data_embassy.promote('nope', '-1 s');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM data_embassy.promote(NULL, NULL);
SELECT * FROM data_embassy.promote(NULL, '1 s', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM data_embassy.promote(:longname);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT data_embassy.drop_register('nope');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT * FROM data_embassy.promote('nope');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
\set VERBOSITY default

--
-- wrong order with a register that exists (it cannot be reached)
--
SELECT try(format('SELECT data_embassy.add_register(%L, %L, %L, false)',
				  'bad-input', :'unreachable', :'okkey')) AS add;
SELECT v.label, try(v.q)
FROM (VALUES
	('1 add again, other key', format('SELECT data_embassy.add_register(%L, %L, %L)',
									  'bad-input', :'unreachable', (repeat('7c', 32) || repeat('ed', 32)))),
	('2 same key, other name', format('SELECT data_embassy.add_register(%L, %L, %L)',
									  'bad-input-2', :'unreachable', :'okkey')),
	('3 resume before pause', $$SELECT data_embassy.resume_register('bad-input')$$),
	('4 pause', $$SELECT data_embassy.pause_register('bad-input')$$),
	('5 pause again', $$SELECT data_embassy.pause_register('bad-input')$$),
	('6 resume', $$SELECT data_embassy.resume_register('bad-input')$$),
	('7 resume again', $$SELECT data_embassy.resume_register('bad-input')$$)
) AS v(label, q)
ORDER BY v.label;
SELECT name, paused, state FROM data_embassy.registers;
\set VERBOSITY terse
SELECT * FROM data_embassy.promote('bad-input', '-5 min');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SET client_min_messages = error;
SELECT data_embassy.drop_register('bad-input');
RESET client_min_messages;
SELECT data_embassy.drop_register('bad-input');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT data_embassy.pause_register('bad-input');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM data_embassy.promote('bad-input');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
\set VERBOSITY default

--
-- a register key no stream could use (a point of small order) is refused,
-- as add_embassy() refuses it
--
SELECT v.label, try(format('SELECT data_embassy.add_register(%L, %L, %L)',
						   'r-small', :'unreachable', v.key))
FROM (VALUES
	('all zeros', (repeat('00', 32) || repeat('ed', 32))),
	('one', '01' || repeat('00', 31) || repeat('ed', 32))
) AS v(label, key)
ORDER BY v.label;

--
-- nothing half-done
--
INSERT INTO bad_input_state
SELECT 'after',
	   (SELECT count(*) FROM data_embassy.registers),
	   (SELECT count(*) FROM data_embassy.embassy_pins),
	   (SELECT count(*) FROM pg_replication_slots),
	   (SELECT count(*) FROM pg_replication_origin),
	   (SELECT count(*) FROM data_embassy.lag);
SELECT count(DISTINCT (registers, pins, slots, origins, lag_rows)) = 1 AS unchanged
FROM bad_input_state;
-- (what changed, if anything)
SELECT a.registers - b.registers AS registers, a.pins - b.pins AS pins,
	   a.slots - b.slots AS slots, a.origins - b.origins AS origins,
	   a.lag_rows - b.lag_rows AS lag_rows
FROM bad_input_state a, bad_input_state b
WHERE a.at = 'after' AND b.at = 'before';
SELECT count(*) AS self_pin_kept FROM data_embassy.embassy_pins WHERE name = 'self';

DROP TABLE bad_input_state;
DROP FUNCTION try(text);
