-- The register's daily life, for pgbench: births, moves, new documents.
\set p random(1, 100000)
BEGIN;
INSERT INTO person (personal_code, first_name, last_name, born)
	VALUES ('6' || lpad((nextval('person_id_seq') % 10000000000)::text, 10, '0'),
			'Baby', 'Newborn', current_date)
	RETURNING id \gset new_
INSERT INTO address (person_id, county, city, street, postal_code, valid_from)
	VALUES (:new_id, 'Harju', 'Tallinn', 'Maternity 1', '10111', current_date);
UPDATE address SET valid_to = current_date WHERE person_id = :p AND valid_to IS NULL;
INSERT INTO address (person_id, county, city, street, postal_code, valid_from)
	VALUES (:p, 'Tartu', 'Tartu', 'Moved street ' || :p, '50090', current_date);
INSERT INTO document (person_id, kind, number, issued, expires)
	VALUES (:p, 'passport', 'P' || nextval('document_id_seq'), current_date, current_date + 3650);
UPDATE person SET updated_at = now() WHERE id = :p;
COMMIT;
