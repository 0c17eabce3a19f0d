--
-- 01_keys: this site's identity key (generate_key, public_key) and the key
-- file.  Later files use the key generated here.
--
-- The server's working directory is its data directory, so
-- data_embassy/identity.key below is $PGDATA/data_embassy/identity.key.
--

-- no key yet
SELECT data_embassy.public_key();

-- generate it: 128 lower-case hex digits (X25519 then Ed25519), the same that public_key() returns
SELECT data_embassy.generate_key() AS pub \gset
SELECT length(:'pub') AS len,
	   :'pub' ~ '^[0-9a-f]{128}$' AS lower_hex,
	   :'pub' = data_embassy.public_key() AS same_as_public_key;

-- a site has one key
SELECT data_embassy.generate_key();
SELECT :'pub' = data_embassy.public_key() AS unchanged;

-- the file is private: mode 0600 in a directory of mode 0700
CREATE TABLE de_keys_mode (what text, mode text);
COPY de_keys_mode (mode) FROM PROGRAM 'stat -c %a data_embassy/identity.key';
UPDATE de_keys_mode SET what = 'file' WHERE what IS NULL;
COPY de_keys_mode (mode) FROM PROGRAM 'stat -c %a data_embassy';
UPDATE de_keys_mode SET what = 'directory' WHERE what IS NULL;
SELECT * FROM de_keys_mode ORDER BY what;
-- and holds no temporary file
CREATE TABLE de_keys_files (name text);
COPY de_keys_files FROM PROGRAM 'ls -a data_embassy';
SELECT name FROM de_keys_files ORDER BY name;

-- a new session reads the same key back from the file
\c
SELECT :'pub' = data_embassy.public_key() AS same_after_reconnect;

-- a key file others may read is refused (each check in a fresh session,
-- since a session keeps the key once it has read it)
COPY (SELECT WHERE false) TO PROGRAM 'chmod 0640 data_embassy/identity.key';
\c
SELECT data_embassy.public_key();
COPY (SELECT WHERE false) TO PROGRAM 'chmod 0604 data_embassy/identity.key';
\c
SELECT data_embassy.public_key();
COPY (SELECT WHERE false) TO PROGRAM 'chmod 0600 data_embassy/identity.key';
\c
SELECT :'pub' = data_embassy.public_key() AS usable_again;

-- a malformed key file is refused: keep a copy, damage the file, restore it
COPY (SELECT WHERE false) TO PROGRAM 'cp -p data_embassy/identity.key data_embassy/identity.key.save';
COPY (SELECT WHERE false) TO PROGRAM 'echo junk > data_embassy/identity.key';
\c
SELECT data_embassy.public_key();
COPY (SELECT WHERE false) TO PROGRAM 'cp -p data_embassy/identity.key.save data_embassy/identity.key && sed -i "s/^private ./private x/" data_embassy/identity.key';
\c
SELECT data_embassy.public_key();
COPY (SELECT WHERE false) TO PROGRAM 'cp -p data_embassy/identity.key.save data_embassy/identity.key && sed -i "s/^public .*/public 0000000000000000000000000000000000000000000000000000000000000000/" data_embassy/identity.key';
\c
SELECT data_embassy.public_key();
COPY (SELECT WHERE false) TO PROGRAM 'mv data_embassy/identity.key.save data_embassy/identity.key';
\c
SELECT :'pub' = data_embassy.public_key() AS restored;
-- and generate_key() still refuses to replace it
SELECT data_embassy.generate_key();

-- privileges
CREATE ROLE regress_de_keys_plain;
CREATE ROLE regress_de_keys_admin IN ROLE data_embassy_admin;

SET ROLE regress_de_keys_plain;
SELECT data_embassy.generate_key();
SELECT data_embassy.public_key();
SELECT pg_read_binary_file('data_embassy/identity.key');
SELECT pg_read_file('data_embassy/identity.key');
SELECT count(*) FROM pg_ls_dir('data_embassy');
RESET ROLE;

-- even with EXECUTE granted, generate_key() wants an administrator
GRANT EXECUTE ON FUNCTION data_embassy.generate_key() TO regress_de_keys_plain;
SET ROLE regress_de_keys_plain;
SELECT data_embassy.generate_key();
RESET ROLE;
REVOKE EXECUTE ON FUNCTION data_embassy.generate_key() FROM regress_de_keys_plain;

-- an administrator reads the public key but not the file
SET ROLE regress_de_keys_admin;
SELECT :'pub' = data_embassy.public_key() AS admin_sees_key;
SELECT data_embassy.generate_key();
SELECT pg_read_binary_file('data_embassy/identity.key');
RESET ROLE;

DROP ROLE regress_de_keys_plain;
DROP ROLE regress_de_keys_admin;
DROP TABLE de_keys_mode, de_keys_files;
