-- A small population register: people, their addresses and their identity
-- documents, with sequences handing out ids.  Run on both sites.

CREATE TABLE person (
	id			bigserial PRIMARY KEY,
	personal_code text NOT NULL UNIQUE,
	first_name	text NOT NULL,
	last_name	text NOT NULL,
	born		date NOT NULL,
	died		date,
	citizenship text NOT NULL DEFAULT 'EE',
	updated_at	timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE address (
	id			bigserial PRIMARY KEY,
	person_id	bigint NOT NULL REFERENCES person,
	county		text NOT NULL,
	city		text NOT NULL,
	street		text NOT NULL,
	postal_code text NOT NULL,
	valid_from	date NOT NULL,
	valid_to	date
);
CREATE INDEX ON address (person_id);

CREATE TABLE document (
	id			bigserial PRIMARY KEY,
	person_id	bigint NOT NULL REFERENCES person,
	kind		text NOT NULL CHECK (kind IN ('id-card', 'passport', 'residence-permit')),
	number		text NOT NULL UNIQUE,
	issued		date NOT NULL,
	expires		date NOT NULL,
	revoked		boolean NOT NULL DEFAULT false
);
CREATE INDEX ON document (person_id);
