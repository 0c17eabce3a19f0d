--
-- 00_nokey: runs before 01_keys makes this instance's identity key.  The
-- output plugin needs that key to seal frames, so decoding fails with a
-- clear error until a key exists.
--

SELECT 'init' FROM pg_create_logical_replication_slot('de_nokey', 'data_embassy');

CREATE TABLE de_nokey (id int PRIMARY KEY);
INSERT INTO de_nokey VALUES (1);

-- any well-formed embassy key: the missing identity is found first
SELECT count(*)
FROM pg_logical_slot_get_binary_changes('de_nokey', NULL, NULL,
										'embassy_key', (repeat('ab', 31) || '2b' || repeat('ed', 32)));

SELECT pg_drop_replication_slot('de_nokey');
DROP TABLE de_nokey;
