# Copyright (c) data_embassy developers

# After a failover: the promoted embassy is protected by a new embassy, and
# the state fails back to a rebuilt home site, as the README's runbook
# says.  What must be set before the disaster (wal_level = logical and the
# slots at the embassy) is set from the start, so no restart is needed
# after it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DataEmbassy;

my $ddl = q{
	CREATE SEQUENCE person_id_seq;
	CREATE TABLE person (id bigint PRIMARY KEY DEFAULT nextval('person_id_seq'),
						 name text NOT NULL);
	ALTER SEQUENCE person_id_seq OWNED BY person.id;
};

my $home = DataEmbassy::register_node('home');
my $emb = DataEmbassy::embassy_node('embassy', register_too => 1);
$home->safe_psql('postgres', $ddl);
$emb->safe_psql('postgres', $ddl);
$home->safe_psql('postgres',
	"INSERT INTO person (name) SELECT 'person ' || g FROM generate_series(1, 500) g");
DataEmbassy::link_sites($home, $emb, 'population');
ok(DataEmbassy::wait_state($emb, 'population', 'streaming'), 'embassy streaming');
$home->safe_psql('postgres', "INSERT INTO person (name) VALUES ('last at home')");
DataEmbassy::wait_caught_up($home, $emb, 'population');
my $last_home_id = $home->safe_psql('postgres', 'SELECT max(id) FROM person');

# --- the home site is lost; the embassy takes over ---
$home->stop('immediate');
my $res = $emb->safe_psql('postgres',
	"SELECT register FROM data_embassy.promote('population')");
is($res, 'population', 'promoted');
$emb->safe_psql('postgres', "INSERT INTO person (name) VALUES ('first at the embassy')");
cmp_ok($emb->safe_psql('postgres', "SELECT max(id) FROM person"), '>', $last_home_id,
	'new ids above the home site\'s');

# --- re-protect the promoted database with a new embassy ---
my $emb2 = DataEmbassy::embassy_node('embassy2');
$emb2->safe_psql('postgres', $ddl);
DataEmbassy::link_sites($emb, $emb2, 'population', embassy_name => 'embassy2');
ok(DataEmbassy::wait_state($emb2, 'population', 'streaming'),
	'the promoted database streams to a new embassy');
$emb->safe_psql('postgres',
	"INSERT INTO person (name) SELECT 'while abroad ' || g FROM generate_series(1, 100) g");
DataEmbassy::wait_caught_up($emb, $emb2, 'population');
DataEmbassy::compare_tables($emb, $emb2, 'postgres');
is($emb2->psql('postgres', "INSERT INTO person (name) VALUES ('x')"), 3,
	'the new embassy\'s copy is guarded');

# --- fail back to a rebuilt home site: a planned switch-over ---
my $home2 = DataEmbassy::embassy_node('home2', register_too => 1);
$home2->safe_psql('postgres', $ddl);
DataEmbassy::link_sites($emb, $home2, 'population', embassy_name => 'home2');
ok(DataEmbassy::wait_state($home2, 'population', 'streaming'),
	'the rebuilt home site copies and streams');
$emb->safe_psql('postgres', "INSERT INTO person (name) VALUES ('last abroad')");
DataEmbassy::wait_caught_up($emb, $home2, 'population');

# the applications stop writing abroad; the switch-over loses nothing
$res = $home2->safe_psql('postgres',
	"SELECT register, unreplicated_bytes FROM data_embassy.promote('population', wait_for_catchup => '30 s')");
is($res, 'population|0', 'failed back with nothing unreplicated');
DataEmbassy::compare_tables($emb, $home2, 'postgres');
$home2->safe_psql('postgres', "INSERT INTO person (name) VALUES ('home again')");
cmp_ok($home2->safe_psql('postgres', "SELECT max(id) FROM person WHERE name = 'home again'"),
	'>', $emb->safe_psql('postgres', "SELECT max(id) FROM person"),
	'new ids at home above every id used abroad');
is($home2->safe_psql('postgres', 'SELECT count(*) FROM person'), '604',
	'every row: 501 from home, 102 from abroad, 1 new');

# The embassy abroad no longer writes; it drops its now useless embassy
# pins later.  The rebuilt home is protected again by pinning an embassy
# there, as at the start.
$emb2->stop;
$home2->stop;
$emb->stop;
done_testing();
