
# Copyright (c) data_embassy developers

# The attacks of issue #10, mounted by a protocol-aware man in the middle
# (test/lib/MitmProxy.pm) between the register and the embassy, in the
# clear (sslmode=disable), and two that need no proxy (a rewound register,
# a frame forged with the embassy's private key alone).  Each attack is a
# subtest that states what a trustworthy embassy must show:
#
#   - nothing lost and nothing applied twice (journal has no key, so a
#     change applied twice shows as a duplicate row), checked whenever the
#     embassy claims to be caught up;
#   - the attack is refused (last_error set, state not "streaming") or the
#     views show the embassy is not caught up;
#   - once the proxy passes traffic again, every table is identical;
#   - the register's slot is never confirmed past its WAL end.
#
# Every wait is bounded.  After an attack that leaves the sites apart for
# good, the register is copied again (add_register with copy_data) so that
# the next attack starts from identical sites.
#
# Measured against main at 62780e6 (frame format v1, before the defences
# of issue #10 were merged); no assertion was weakened to pass there:
#
#   hidden lag                  FAILS: failover_status says streaming,
#                               0 unreplicated bytes, contact < 1 s ago
#   forged consistent_point     FAILS: 300 commits skipped while "caught
#                               up"; slot confirmed past its WAL end
#   replayed initial copy       FAILS: old copy accepted, acct and journal
#                               differ, state streaming, no error
#   stripped snapshot import    FAILS: 25 rows applied twice, no error
#   forged START_REPLICATION    FAILS: 300 commits skipped silently
#   forged feedback             FAILS: slot confirmed past its WAL end,
#                               changes lost for good
#   replayed stream             passes (the replayed frames are refused)
#   key compromise (v1 frame)   FAILS: a position frame sealed with the
#                               embassy's key alone is accepted; changes
#                               lost, slot confirmed past its WAL end
#   rewound register            FAILS: no error naming the rewound history
#   promote + IDENTIFY_SYSTEM   FAILS: promote('population', '5 s')
#                               returns at once with 0 unreplicated bytes
#                               while 10 committed rows are missing
#
# With frame formats 2 and 3 (session keys, the sealed HELLO and
# heartbeats, session MACs and signatures, the copy bound to its slot, the
# history check) every subtest passes, with one assertion marked TODO on
# purpose, a known weakness listed in SECURITY.md rather than unfinished
# work: forged feedback still moves the register's slot past its WAL end
# without TLS (standby status updates are not sealed; SECURITY.md).  The
# embassy detects it at the next stream and says so, and resync_register()
# brings it back.  The forger seals a v3 frame for the live session with
# the embassy's key alone: its session MAC refuses it.
use strict;
use warnings;

use File::Path qw(rmtree);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use DataEmbassy;
use AttackHarness;

# The two sites, the proxy between them and the helpers (write_txn,
# watch_attack, converges, check_slot, relink, ...): test/lib/AttackHarness.pm.
my ($reg, $emb, $proxy, $rkey) = AttackHarness::start(proxy_name => 'attacker');

# ---------------------------------------------------------------------
# linking through the proxy
# ---------------------------------------------------------------------

AttackHarness::link_through_proxy();

# ---------------------------------------------------------------------
# 1. hidden lag: every sealed frame dropped, keepalives pass
# ---------------------------------------------------------------------
subtest 'hidden lag: frames dropped, keepalives pass' => sub {
	$proxy->hide_frames(1);
	write_txn('hidden lag', 10);
	my $hidden0 = $proxy->stats->{frames_hidden};
	my $told = watch_attack('hidden lag', 6,
		tick => sub { write_txn('hidden lag tick', 1) },
		markers => [ 'hidden lag', 'hidden lag tick' ]);
	ok($proxy->stats->{frames_hidden} > $hidden0, 'frames were dropped');
	is(count_at($emb, 'hidden lag'), '0', 'nothing of the hidden frames arrived');
	my $st = q_emb(q{
		SELECT state = 'streaming' AND unreplicated_bytes = 0
		   AND last_contact_at > now() - interval '3 s'
		FROM data_embassy.failover_status WHERE register = 'population'});
	isnt($st, 't',
		'failover_status does not claim "streaming, 0 unreplicated bytes, fresh contact"');
	ok($told, 'lag or failover_status shows the embassy is not caught up');
	converges('hidden lag') or relink('hidden lag: recover');
	check_slot('hidden lag');
};

# ---------------------------------------------------------------------
# 2. forged starting point: CREATE_REPLICATION_SLOT's consistent_point
#    moved ahead
# ---------------------------------------------------------------------
subtest 'forged starting point: consistent_point moved ahead' => sub {
	$proxy->rewrite_slot_lsn('+65536');
	relink('forged start', nowait => 1);
	my $deadline = time() + 30;
	usleep(200_000)
	  while $proxy->stats->{slot_rewritten} < 1 && time() < $deadline;
	ok($proxy->stats->{slot_rewritten} >= 1, 'the slot reply was rewritten');
	write_many('after forged start', 300);
	my $told = watch_attack('forged start', 8,
		markers => [ 'after forged start' ]);
	note('consistent_point in the clear: ' . $proxy->seen->{slot});
	ok($told || count_at($emb, 'after forged start') eq '300',
		'forged start: refused, shown as not caught up, or nothing skipped');
	converges('forged start') or relink('forged start: recover');
	check_slot('forged start');
};

# ---------------------------------------------------------------------
# 3. replayed initial copy: an earlier copy sent instead of this one
# ---------------------------------------------------------------------
subtest 'replayed initial copy' => sub {
	relink('replayed copy: first copy');
	my @copy = grep { $_->{via} eq 'copy' } $proxy->recorded_frames;
	ok(@copy >= 1, scalar(@copy) . ' copy frames recorded');
	my $old_conn = $copy[-1]{conn};
	# the register moves on; then the copy is taken again, and the
	# attacker answers with the old one
	q_reg(q{UPDATE acct SET balance = balance - 7, note = 'after first copy'});
	write_txn('after first copy', 20);
	$proxy->replay_copy($old_conn);
	relink('replayed copy: second copy', nowait => 1);
	my $deadline = time() + 30;
	usleep(200_000)
	  while $proxy->stats->{frames_replayed} < 1 && time() < $deadline;
	ok($proxy->stats->{frames_replayed} >= 1, 'the old copy was replayed');
	my $told = watch_attack('replayed copy', 6,
		markers => [ 'after first copy' ]);
	my $same = DataEmbassy::table_digest($reg, 'postgres', 'acct') eq
	  DataEmbassy::table_digest($emb, 'postgres', 'acct');
	ok($told || $same,
		'replayed copy: refused, or shown as not caught up, rather than "streaming" with other data');
	converges('replayed copy') or relink('replayed copy: recover');
	check_slot('replayed copy');
};

# ---------------------------------------------------------------------
# 4. stripped snapshot import: the copy runs in a fresh, later snapshot
# ---------------------------------------------------------------------
subtest 'stripped snapshot import' => sub {
	$proxy->rewrite_snapshot('replace', hold => 3);
	relink('stripped snapshot', nowait => 1);
	my $deadline = time() + 30;
	usleep(100_000)
	  while $proxy->stats->{snapshot_rewritten} < 1 && time() < $deadline;
	ok($proxy->stats->{snapshot_rewritten} >= 1,
		'SET TRANSACTION SNAPSHOT was replaced');
	# written after the slot's snapshot, before the copy's
	write_txn("between slot and copy $_", 5) foreach 1 .. 5;
	my $told = watch_attack('stripped snapshot', 8,
		markers => [ map { "between slot and copy $_" } 1 .. 5 ]);
	my $dups = q_emb(q{SELECT count(*) FROM (SELECT n FROM journal
		GROUP BY n, what HAVING count(*) > 1) d});
	ok($dups eq '0' || $told,
		"stripped snapshot: nothing applied twice ($dups duplicated rows) unless refused");
	converges('stripped snapshot') or relink('stripped snapshot: recover');
	check_slot('stripped snapshot');
};

# ---------------------------------------------------------------------
# 5. forged START_REPLICATION: the start LSN moved ahead
# ---------------------------------------------------------------------
subtest 'forged START_REPLICATION start' => sub {
	$proxy->rewrite_start_lsn('+65536');
	$proxy->refuse(2);
	$proxy->cut;
	write_many('under forged start_replication', 300);
	my $deadline = time() + 20;
	usleep(200_000)
	  while $proxy->stats->{start_rewritten} < 1 && time() < $deadline;
	ok($proxy->stats->{start_rewritten} >= 1, 'START_REPLICATION was rewritten');
	my $told = watch_attack('forged start_replication', 6,
		markers => ['under forged start_replication']);
	ok($told || count_at($emb, 'under forged start_replication') eq '300',
		'forged START_REPLICATION: refused, shown as not caught up, or nothing skipped');
	converges('forged start_replication')
	  or relink('forged start_replication: recover');
	check_slot('forged start_replication');
};

# ---------------------------------------------------------------------
# 6. forged feedback: flush and apply moved ahead
# ---------------------------------------------------------------------
subtest 'forged feedback' => sub {
	$proxy->forge_feedback('+1048576');
	my $deadline = time() + 6;
	while (time() < $deadline)
	{
		write_txn('under forged feedback', 2);
		sample_slot();
		usleep(200_000);
	}
	ok($proxy->stats->{feedback_forged} > 0,
		$proxy->stats->{feedback_forged} . ' status updates forged');
	# the worker reconnects: the register streams from its slot, which the
	# forged feedback moved past what the embassy applied
	$proxy->forge_feedback('off');
	$proxy->cut;
	my $told = watch_attack('forged feedback', 6,
		tick => sub { write_txn('after forged feedback', 1) },
		markers => [ 'under forged feedback', 'after forged feedback' ]);
	ok($told, 'forged feedback: the embassy says it is not caught up');
	my $row = DataEmbassy::lag_row($emb, 'population');
	like($row->{last_error}, qr/moved past what this embassy has applied|gap|past the end/,
		'forged feedback: the error names the slot moved ahead');
	{
		# Standby status updates travel unsealed; without TLS a forger
		# can move the register's slot (SECURITY.md, known weaknesses):
		# detected above, not prevented.
		local $TODO = 'standby status updates are not authenticated without TLS';
		check_slot('forged feedback');
	}
	# the DBA's way back: copy the register anew
	q_emb(q{SELECT data_embassy.resync_register('population')});
	ok(wait_applied(40), 'forged feedback: resync_register brings the embassy back');
	DataEmbassy::compare_tables($reg, $emb, 'postgres');
};

# ---------------------------------------------------------------------
# 7. replayed stream: an old stream (with a large transaction) sent
#    again on a new connection
# ---------------------------------------------------------------------
subtest 'replayed stream' => sub {
	$proxy->cut;
	write_txn('replayed stream big', 20000);
	ok(wait_applied(30), 'the large transaction is applied once');
	my @s = grep { $_->{via} eq 'stream' && $_->{plain_len} > 0 }
	  $proxy->recorded_frames;
	my $old_conn = $s[-1]{conn};
	note(scalar(grep { $_->{conn} == $old_conn } @s)
		  . " data frames recorded on connection $old_conn");
	$proxy->replay_stream($old_conn);
	$proxy->cut;
	write_txn('after replayed stream', 5);
	my $told = watch_attack('replayed stream', 6,
		markers => [ 'replayed stream big', 'after replayed stream' ]);
	is(count_at($emb, 'replayed stream big'), '20000',
		'replayed stream: the old transaction is not applied again');
	converges('replayed stream') or relink('replayed stream: recover');
	check_slot('replayed stream');
};

# ---------------------------------------------------------------------
# 8. key-compromise impersonation: a position frame sealed with the
#    embassy's private key alone
# ---------------------------------------------------------------------
subtest 'key-compromise impersonation' => sub {
	my $forge = PostgreSQL::Test::Utils::tempdir() . "/forge";
	my $src = slurp_file(__FILE__) =~ /^__C__\n(.*)\z/ms ? $1 : die 'no C source';
	open(my $fh, '>', "$forge.c") or die $!;
	print $fh $src;
	close $fh;
	my $cc = system('cc', '-O', '-o', $forge, "$forge.c", '-lcrypto');
	is($cc, 0, 'the forging tool compiles');

	my $keyfile = slurp_file($emb->data_dir . '/data_embassy/identity.key');
	my ($priv) = $keyfile =~ /^private ([0-9a-f]{64})$/m;
	ok($priv, "the embassy's private key read from its data directory");

	$proxy->cut;
	ok(wait_applied(30), 'caught up before the forgery');
	my $applied = q_emb(q{SELECT applied_lsn FROM data_embassy.lag
		WHERE register = 'population'});
	my $ahead = q_reg(q{SELECT pg_current_wal_lsn() + 65536});
	my $sysid = q_reg('SELECT system_identifier FROM pg_control_system()');
	my $dboid = q_reg(q{SELECT oid FROM pg_database WHERE datname = 'postgres'});
	my $num = sub {
		my ($hi, $lo) = split m{/}, $_[0];
		return hex($hi) * 4294967296 + hex($lo);
	};
	my $rdh = substr($rkey, 0, 64);
	my @args = ($priv, $rdh, $sysid, $dboid, 'S', 1, $num->($applied),
		$num->($ahead), $num->($ahead), $num->($ahead), 2);
	my $frame = `$forge @args @{[ '5e' x 32 ]}`;
	chomp $frame;
	ok(length $frame == 2 * (176 + 16 + 32),
		'a position frame forged up to ' . $ahead);

	# The seal itself holds (the embassy's key derives the frame key), so
	# only the session MAC tells the forgery apart, and only the worker
	# that made the session can check it: the embassy's own inspection
	# tool, which has no session, cannot (it is a diagnostic).  The proxy
	# reads the live session key off the wire (START_REPLICATION travels
	# in the clear here) and has the frame forged for it.
	my $wrapper = "$forge.sh";
	open($fh, '>', $wrapper) or die $!;
	print $fh "#!/bin/sh\nexec $forge @args \"\$1\"\n";
	close $fh;
	chmod 0755, $wrapper;

	# the forged frame replaces the first frame of the next stream, and
	# the register's own frames are hidden from then on
	my $log_offset = -s $emb->logfile;
	$proxy->tamper('inject', forge => $wrapper, data_only => 0, replace => 1,
		then_hide => 1);
	$proxy->cut;
	write_txn('after forged frame', 1);
	my $deadline = time() + 20;
	usleep(200_000)
	  while $proxy->stats->{tampered_inject} < 1 && time() < $deadline;
	ok($proxy->stats->{tampered_inject} >= 1, 'the forged frame was sent');
	write_many('after forged frame', 300);
	my $told = watch_attack('key compromise', 6,
		markers => ['after forged frame']);
	like(substr(slurp_file($emb->logfile), $log_offset),
		qr/could not authenticate frame 1.*\n.*Its session MAC does not verify/,
		'the forged frame is refused for its session MAC');
	converges('key compromise') or relink('key compromise: recover');
	check_slot('key compromise');
};

# ---------------------------------------------------------------------
# 9. rewound register: restored from an earlier file-level copy
# ---------------------------------------------------------------------
subtest 'rewound register' => sub {
	ok(wait_applied(30), 'caught up before the backup');
	my $backup = PostgreSQL::Test::Utils::tempdir() . "/register_backup";
	$reg->stop;
	# a file-level copy, as cp -a or tar take it (modes kept)
	system('cp', '-a', $reg->data_dir, $backup) == 0 or die "cp: $?";
	$reg->start;
	write_txn('after backup', 50);
	ok(wait_applied(30), 'the embassy applies what came after the backup');

	# disaster at home: the register comes back from the old copy
	$reg->stop;
	rmtree($reg->data_dir);
	system('cp', '-a', $backup, $reg->data_dir) == 0 or die "cp: $?";
	$reg->start;
	is(count_at($reg, 'after backup'), '0', 'the register rewound');
	write_many('after rewind', 300);
	my $deadline = time() + 15;
	my $refused = 0;
	while (time() < $deadline)
	{
		sample_slot();
		my $row = DataEmbassy::lag_row($emb, 'population');
		if ($row->{state} ne 'streaming'
			&& $row->{last_error} =~ /rewound|history|timeline|behind|re-?cop/i)
		{
			$refused = 1;
			last;
		}
		usleep(300_000);
	}
	note('rewound register: ' . views());
	ok($refused,
		'rewound register: refused with an error saying its history rewound');
	isnt(count_at($emb, 'after rewind'), '0',
		'rewound register: the new transactions are not dropped silently')
	  unless $refused;
	check_slot('rewound register');
	relink('rewound register: recover');
	DataEmbassy::compare_tables($reg, $emb, 'postgres');
};

# ---------------------------------------------------------------------
# 10. hidden lag and IDENTIFY_SYSTEM rewritten on promote's connection:
#     a planned switch-over must not report "caught up" (last: it
#     promotes)
# ---------------------------------------------------------------------
subtest 'promote under hidden lag and a forged IDENTIFY_SYSTEM' => sub {
	ok(wait_applied(10) || relink('promote: start from a fresh copy'),
		'caught up before the attack');
	my $applied = q_emb(q{SELECT coalesce(applied_lsn::text, '0/0')
		FROM data_embassy.lag WHERE register = 'population'});
	$proxy->hide_frames(1);
	write_txn('before promote', 10);
	usleep(1_000_000);
	$proxy->rewrite_identify($applied);
	my ($out, $err) = ('', '');
	my $t0 = time();
	$emb->psql('postgres',
		q{SELECT unreplicated_bytes FROM data_embassy.promote('population', '5 s')},
		stdout => \$out, stderr => \$err);
	my $took = time() - $t0;
	note(sprintf('promote took %.1f s: out "%s" err "%s"', $took, $out, $err));
	# promote() no longer asks IDENTIFY_SYSTEM anything: the rewrite has
	# nothing to act on
	note('IDENTIFY_SYSTEM answers rewritten: '
		  . ($proxy->stats->{identify_rewritten} // 0));
	my $lost = count_at($reg, 'before promote') - count_at($emb, 'before promote');
	ok($err ne '' || ($out ne '' && $out > 0),
		"promote does not report 0 unreplicated bytes while $lost rows are missing");
	$proxy->clear;
};

$proxy->stop;
$emb->stop;
$reg->stop;
done_testing();

# The forging tool of subtest 8, compiled from the test's temp directory.
__END__
__C__
/*
 * forge.c
 *		Seal a frame-format-3 position frame as the register would, holding
 *		only the embassy's private key and what crosses the network
 *		(key-compromise impersonation, issue #10).  The AEAD key is
 *		derivable from the embassy's key alone, and the session key the
 *		embassy made for the connection is read off the wire; the session
 *		MAC needs DH(register, session), which neither gives, so the forger
 *		MACs with its best guess, DH(embassy, session), and signs nothing:
 *		the embassy must refuse it.
 *
 * usage: forge embassy_priv_hex register_x25519_pub_hex sysid dboid kind seq
 *		  start_lsn end_lsn commit_lsn source_lsn flags session_hex
 * prints the frame as hex.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#define HDR 176

static void
die(const char *what)
{
	fprintf(stderr, "forge: %s\n", what);
	exit(1);
}

static void
unhex(const char *s, unsigned char *out, size_t n)
{
	if (strlen(s) != 2 * n)
		die("bad hex length");
	for (size_t i = 0; i < n; i++)
		if (sscanf(s + 2 * i, "%2hhx", &out[i]) != 1)
			die("bad hex");
}

static void
put64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char) v;
}

static void
put32(unsigned char *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char) v;
}

/* X25519(priv, peer) */
static void
dh(const unsigned char *priv, const unsigned char *peer, unsigned char *out)
{
	EVP_PKEY   *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, 32);
	EVP_PKEY   *p = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer, 32);
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
	size_t		len = 32;

	if (!k || !p || !c || EVP_PKEY_derive_init(c) <= 0 ||
		EVP_PKEY_derive_set_peer(c, p) <= 0 ||
		EVP_PKEY_derive(c, out, &len) <= 0 || len != 32)
		die("X25519 failed");
	EVP_PKEY_CTX_free(c);
	EVP_PKEY_free(k);
	EVP_PKEY_free(p);
}

int
main(int argc, char **argv)
{
	unsigned char emb_priv[32], emb_pub[32], reg_pub[32];
	unsigned char eph_priv[32], eph_pub[32];
	unsigned char ikm[64], salt[96], info[21 + 13], okm[44];
	unsigned char hdr[HDR], tag[16], nonce[12], session[32];
	unsigned char digest[32], macmsg[25 + 32], guess[32], mac[32];
	unsigned int maclen = 32;
	size_t		len;
	EVP_PKEY   *k;
	uint64_t	seq;
	int			outl;

	if (argc != 13)
		die("usage: forge embassy_priv register_pub sysid dboid kind seq start end commit source flags session");
	unhex(argv[1], emb_priv, 32);
	unhex(argv[2], reg_pub, 32);
	unhex(argv[12], session, 32);
	seq = strtoull(argv[6], NULL, 10);

	k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, emb_priv, 32);
	len = 32;
	if (!k || EVP_PKEY_get_raw_public_key(k, emb_pub, &len) <= 0)
		die("bad embassy key");
	EVP_PKEY_free(k);

	/* any ephemeral key will do: DH(eph, embassy) = DH(embassy, eph) */
	k = NULL;
	{
		EVP_PKEY_CTX *g = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);

		if (!g || EVP_PKEY_keygen_init(g) <= 0 || EVP_PKEY_keygen(g, &k) <= 0)
			die("keygen failed");
		EVP_PKEY_CTX_free(g);
	}
	len = 32;
	EVP_PKEY_get_raw_private_key(k, eph_priv, &len);
	len = 32;
	EVP_PKEY_get_raw_public_key(k, eph_pub, &len);
	EVP_PKEY_free(k);

	/* ikm = DH(ephemeral, embassy) || DH(register, embassy), both from
	 * the embassy's private key alone */
	dh(emb_priv, eph_pub, ikm);
	dh(emb_priv, reg_pub, ikm + 32);
	memcpy(salt, eph_pub, 32);
	memcpy(salt + 32, emb_pub, 32);
	memcpy(salt + 64, reg_pub, 32);
	memcpy(info, "data_embassy frame v3", 21);
	put64(info + 21, strtoull(argv[3], NULL, 10));
	put32(info + 29, (uint32_t) strtoul(argv[4], NULL, 10));
	info[33] = (unsigned char) argv[5][0];
	{
		EVP_KDF    *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
		EVP_KDF_CTX *kc = EVP_KDF_CTX_new(kdf);
		OSSL_PARAM	params[5];

		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
		params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ikm, 64);
		params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt, 96);
		params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 34);
		params[4] = OSSL_PARAM_construct_end();
		if (!kc || EVP_KDF_derive(kc, okm, sizeof(okm), params) <= 0)
			die("HKDF failed");
		EVP_KDF_CTX_free(kc);
		EVP_KDF_free(kdf);
	}

	/* header (v3 layout, src/seal/frame.h); a position frame: no body */
	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr, "DEMB", 4);
	hdr[4] = 3;
	hdr[5] = (unsigned char) argv[5][0];
	hdr[6] = 0;
	hdr[7] = (unsigned char) strtoul(argv[11], NULL, 10);
	put64(hdr + 8, strtoull(argv[3], NULL, 10));
	put32(hdr + 16, (uint32_t) strtoul(argv[4], NULL, 10));
	put32(hdr + 20, 1);			/* timeline */
	memcpy(hdr + 24, eph_pub, 32);
	memcpy(hdr + 56, session, 32);
	put64(hdr + 88, seq);
	put64(hdr + 96, strtoull(argv[7], NULL, 10));
	put64(hdr + 104, strtoull(argv[8], NULL, 10));
	put64(hdr + 112, strtoull(argv[9], NULL, 10));
	put64(hdr + 120, strtoull(argv[10], NULL, 10));
	put64(hdr + 128, 0);		/* source_time */
	put32(hdr + 136, 0);
	put32(hdr + 140, 16);
	/* prev_hash zeros: frame 1 */

	memcpy(nonce, okm + 32, 12);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= (unsigned char) (seq >> (8 * (7 - i)));
	{
		EVP_CIPHER_CTX *cc = EVP_CIPHER_CTX_new();

		if (!cc ||
			EVP_EncryptInit_ex(cc, EVP_aes_256_gcm(), NULL, NULL, NULL) <= 0 ||
			EVP_CIPHER_CTX_ctrl(cc, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) <= 0 ||
			EVP_EncryptInit_ex(cc, NULL, NULL, okm, nonce) <= 0 ||
			EVP_EncryptUpdate(cc, NULL, &outl, hdr, sizeof(hdr)) <= 0 ||
			EVP_EncryptFinal_ex(cc, tag, &outl) <= 0 ||
			EVP_CIPHER_CTX_ctrl(cc, EVP_CTRL_GCM_GET_TAG, 16, tag) <= 0)
			die("AES-GCM failed");
		EVP_CIPHER_CTX_free(cc);
	}
	/* the session MAC under the only key the forger can derive */
	{
		unsigned char both[HDR + 16];

		memcpy(both, hdr, HDR);
		memcpy(both + HDR, tag, 16);
		EVP_Digest(both, sizeof(both), digest, NULL, EVP_sha256(), NULL);
		memcpy(macmsg, "data_embassy frame v3 mac", 25);
		memcpy(macmsg + 25, digest, 32);
		dh(emb_priv, session, guess);
		if (!HMAC(EVP_sha256(), guess, 32, macmsg, sizeof(macmsg), mac, &maclen))
			die("HMAC failed");
	}
	for (size_t i = 0; i < sizeof(hdr); i++)
		printf("%02x", hdr[i]);
	for (int i = 0; i < 16; i++)
		printf("%02x", tag[i]);
	for (int i = 0; i < 32; i++)
		printf("%02x", mac[i]);
	printf("\n");
	return 0;
}
