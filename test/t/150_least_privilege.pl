# Copyright (c) data_embassy developers

# The owner of a replicated table at the embassy is not trusted: the apply
# worker runs her triggers, column defaults and index expressions as her,
# under SECURITY_RESTRICTED_OPERATION, so they cannot make her superuser or
# read what only the worker may.  (The worker itself is the bootstrap
# superuser.)
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $reg = DataEmbassy::register_node('register');
my $emb = DataEmbassy::embassy_node('embassy');

$reg->safe_psql('postgres', 'CREATE TABLE t (id integer PRIMARY KEY, v text)');

$emb->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	GRANT CREATE ON SCHEMA public TO mallory;
});
$emb->safe_psql('postgres', q{
	SET ROLE mallory;
	CREATE TABLE seen (who name, superuser boolean, attempt text, outcome text);
	-- what runs code: a function of hers, in a column default and in an
	-- ENABLE ALWAYS trigger (qualified: the worker's search_path is empty)
	CREATE FUNCTION escalate() RETURNS text LANGUAGE plpgsql AS $$
	DECLARE
		outcome text;
	BEGIN
		BEGIN
			ALTER ROLE mallory SUPERUSER;
			outcome := 'became superuser';
		EXCEPTION WHEN OTHERS THEN
			outcome := SQLERRM;
		END;
		INSERT INTO public.seen VALUES (current_user,
			(SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
			'ALTER ROLE', outcome);
		BEGIN
			PERFORM pg_read_file('data_embassy/identity.key');
			outcome := 'read the key';
		EXCEPTION WHEN OTHERS THEN
			outcome := SQLERRM;
		END;
		INSERT INTO public.seen VALUES (current_user, NULL, 'read key', outcome);
		BEGIN
			SET ROLE postgres;
			outcome := 'set role';
		EXCEPTION WHEN OTHERS THEN
			outcome := SQLERRM;
		END;
		INSERT INTO public.seen VALUES (current_user, NULL, 'SET ROLE', outcome);
		RETURN 'x';
	END $$;
	CREATE FUNCTION on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM public.escalate();
		RETURN NEW;
	END $$;
	CREATE TABLE t (id integer PRIMARY KEY, v text, extra text DEFAULT public.escalate());
	CREATE TRIGGER t_ins BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION on_insert();
	ALTER TABLE t ENABLE ALWAYS TRIGGER t_ins;
});

DataEmbassy::link_sites($reg, $emb, 'r', copy_data => 0);
ok(DataEmbassy::wait_state($emb, 'r', 'streaming'), 'streaming');
$reg->safe_psql('postgres', "INSERT INTO t VALUES (1, 'one')");
DataEmbassy::wait_caught_up($reg, $emb, 'r');

is($emb->safe_psql('postgres', 'SELECT count(*) FROM t'), '1', 'the row was applied');
my $seen = $emb->safe_psql('postgres',
	"SELECT DISTINCT who, attempt, outcome FROM seen ORDER BY attempt");
note($seen);
unlike($seen, qr/postgres\|/, 'no code of hers ran as the superuser');
like($seen, qr/mallory\|ALTER ROLE\|must be superuser/,
	'her code ran as her, and ALTER ROLE ... SUPERUSER was refused');
like($seen, qr/mallory\|read key\|permission denied/,
	'reading the identity key was refused');
like($seen, qr/mallory\|SET ROLE\|.*(security-restricted|permission denied)/,
	'SET ROLE was refused');
is($emb->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"),
	'f', 'mallory is still not a superuser');
is($emb->safe_psql('postgres', "SELECT count(*) FROM seen WHERE superuser"), '0',
	'nothing ran with superuser rights');

# The worker goes on, as itself, after her code ran.
$reg->safe_psql('postgres', "INSERT INTO t SELECT g, 'more' FROM generate_series(2, 500) g");
DataEmbassy::wait_caught_up($reg, $emb, 'r');
is($emb->safe_psql('postgres', 'SELECT count(*) FROM t'), '500', 'later rows applied');
is(DataEmbassy::lag_row($emb, 'r')->{last_error}, '', 'no error');

$emb->stop;
$reg->stop;
done_testing();
