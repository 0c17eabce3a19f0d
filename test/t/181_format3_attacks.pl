
# Copyright (c) data_embassy developers

# Attacks on frame format 3 (src/seal/frame.h) and on the history check,
# mounted by the protocol-aware man in the middle of TAP 180
# (test/lib/MitmProxy.pm) in the clear (sslmode=disable).  The attacker
# also holds the embassy's identity key (read from its data directory),
# which by design opens every frame: what it must not be able to do is
# make the embassy apply anything the register did not seal for the
# embassy's own session.  Each attack is a subtest asserting, as 180 does:
# nothing lost and nothing applied twice whenever the embassy claims to be
# caught up; the attack refused with a clear error (the embassy's log and
# last_error) or the views showing it is not caught up; every table
# identical once the proxy passes traffic again; the register's slot
# never confirmed past its WAL end.
#
#   1. session key substitution: the proxy gives the register a session
#      key of its own in START_REPLICATION; then, holding the embassy's
#      key, it also opens each frame, checks the register's MAC under its
#      own session (it can), and re-seals the frame for the embassy's real
#      session (the MAC it cannot make)
#   2. downgrade: frame_version '2' asked in START_REPLICATION; a frame
#      rewritten in the v2 layout
#   3. signature and flag games: a signature stripped with its flag, a
#      signature cut off, a garbage signature on an unsigned frame, a bad
#      signature, the MAC cut off or flipped
#   4. copy session substitution: copy_frames' session parameter
#      rewritten in the copy connection's Bind message
#   5. small-order session keys (all fourteen encodings), from SQL and
#      through the proxy, for the stream and for the copy
#   6. the persisted history check: the embassy restarted while the proxy
#      strips (then moves) history_lsn from START_REPLICATION
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use DataEmbassy;
use AttackHarness;

# The two sites, the proxy between them and the helpers shared with TAP 180
# (write_txn, watch_attack, converges, check_slot, relink, ...):
# test/lib/AttackHarness.pm.
my ($reg, $emb, $proxy, $rkey) = AttackHarness::start(proxy_name => 'format3');

# ---------------------------------------------------------------------
# helpers of this test's own
# ---------------------------------------------------------------------

# Wait (bounded) until the embassy's log since $offset, or last_error,
# matches $re; returns the matching text ('' if none).
sub refusal
{
	my ($offset, $re, $secs) = @_;
	my $deadline = time() + ($secs // 15);
	while (time() < $deadline)
	{
		my $log = substr(slurp_file($emb->logfile), $offset);
		return $1 if $log =~ /((?:ERROR|FATAL):[^\n]*$re[^\n]*(?:\n[^\n]*DETAIL:[^\n]*)?)/;
		return $1 if $log =~ /((?:ERROR|FATAL):[^\n]*\n[^\n]*DETAIL:[^\n]*$re[^\n]*)/;
		my $row = DataEmbassy::lag_row($emb, 'population');
		return $row->{last_error} if ($row->{last_error} // '') =~ $re;
		sample_slot();
		usleep(200_000);
	}
	return '';
}

# Between an error's message and its detail: a line break and the log line
# prefix in the log, ": " in last_error.
my $then = qr/(?:\n[^\n]*DETAIL:\s+|: )/;

# Wait (bounded) until a proxy statistic reaches $n.
sub wait_stat
{
	my ($name, $n, $secs) = @_;
	my $deadline = time() + ($secs // 20);
	usleep(100_000)
	  while ($proxy->stats->{$name} // 0) < $n && time() < $deadline;
	return ($proxy->stats->{$name} // 0) >= $n;
}

# ---------------------------------------------------------------------
# linking through the proxy; the attacker's tool and keys
# ---------------------------------------------------------------------

my $ekey = AttackHarness::link_through_proxy();

my $tool = PostgreSQL::Test::Utils::tempdir() . '/reseal';
{
	my $src = slurp_file(__FILE__) =~ /^__C__\n(.*)\z/ms ? $1 : die 'no C source';
	open(my $fh, '>', "$tool.c") or die $!;
	print $fh $src;
	close $fh;
	is(system('cc', '-O', '-o', $tool, "$tool.c", '-lcrypto'), 0,
		"the attacker's tool compiles");
}
my $keyfile = slurp_file($emb->data_dir . '/data_embassy/identity.key');
my ($emb_priv) = $keyfile =~ /^private ([0-9a-f]{64})$/m;
ok($emb_priv, "the embassy's private key read from its data directory");
my $rdh = substr($rkey, 0, 64);

# the attacker's own session key pair (RFC 7748's Alice)
my $att_priv = '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a';
my $att_pub = `$tool $att_priv`;
chomp $att_pub;
is($att_pub, '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
	"the attacker's session key");

my $session_re = q{"session" '[0-9a-fA-F]{64}'};

# the fourteen encodings of X25519 points of small order (each with and
# without bit 255, which X25519 ignores): 0, 1, the two points of order
# 8, p - 1 (order 2), p and p + 1 (0 and 1 again)
my @small_order = map { ($_, substr($_, 0, 62) . sprintf('%02x', hex(substr($_, 62)) | 0x80)) } (
	'00' x 32,
	'01' . '00' x 31,
	'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
	'5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
	'ec' . 'ff' x 30 . '7f',
	'ed' . 'ff' x 30 . '7f',
	'ee' . 'ff' x 30 . '7f');

# ---------------------------------------------------------------------
# 1. session key substitution
# ---------------------------------------------------------------------
subtest 'session key substitution in START_REPLICATION' => sub {
	ok(wait_applied(20), 'caught up before the attack');
	my $off = -s $emb->logfile;
	my $n0 = $proxy->stats->{query_rewritten};
	$proxy->rewrite_query($session_re, qq{"session" '$att_pub'});
	$proxy->cut;
	write_txn('under substituted session', 5);
	ok(wait_stat('query_rewritten', $n0 + 1),
		"START_REPLICATION carried the attacker's session key");
	like($proxy->rewritten_seen->{query}, qr/^"session" '[0-9a-f]{64}'$/,
		"the embassy's own session key was on the wire");
	my $err = refusal($off, qr/belongs to another session/);
	like($err,
		qr/frame belongs to another session[^\n]*$then[^\n]*or the session key changed on its way to the register/,
		'refused: the frames were sealed for another session, and the detail says the key may have been changed');
	my $told = watch_attack('substituted session', 4,
		tick => sub { write_txn('under substituted session', 1) },
		markers => ['under substituted session']);
	ok($told, 'substituted session: the views say the embassy is not caught up');
	is(count_at($emb, 'under substituted session'), '0',
		'substituted session: nothing applied');
	converges('substituted session') or relink('substituted session: recover');
	check_slot('substituted session');
};

subtest 'session key substitution, frames re-sealed with the embassy key' => sub {
	ok(wait_applied(20), 'caught up before the attack');
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $log = "$dir/reseal.log";
	my $wrapper = "$dir/reseal.sh";
	open(my $fh, '>', $wrapper) or die $!;
	print $fh "#!/bin/sh\nexec $tool $emb_priv $att_priv $rdh $log \"\$1\" \"\$2\"\n";
	close $fh;
	chmod 0755, $wrapper;

	my $off = -s $emb->logfile;
	my $n0 = $proxy->stats->{tampered_reseal};
	$proxy->rewrite_query($session_re, qq{"session" '$att_pub'});
	# the first frame of every stream, re-sealed for the embassy's session
	$proxy->tamper('reseal', command => $wrapper, data_only => 0,
		every_stream => 1, nth => 1);
	$proxy->cut;
	write_txn('under re-sealed frames', 5);
	ok(wait_stat('tampered_reseal', $n0 + 1), 'a frame was re-sealed');

	# what the attacker learnt: the frame opens with the embassy's key, and
	# the register's MAC verifies under the attacker's own session
	my $learnt = -e $log ? slurp_file($log) : '';
	note("attacker's log: $learnt");
	like($learnt, qr/^seq=1 session_mine=1 opened=1 mac_ok=1 signed=1$/m,
		"the attacker opened frame 1 and checked the register's MAC for its own session");

	my $err = refusal($off, qr/session MAC does not verify/);
	like($err, qr/could not authenticate frame 1[^\n]*$then[^\n]*session MAC does not verify/,
		'refused: the re-sealed frame has no valid session MAC');
	my $told = watch_attack('re-sealed frames', 4,
		tick => sub { write_txn('under re-sealed frames', 1) },
		markers => ['under re-sealed frames']);
	ok($told, 're-sealed frames: the views say the embassy is not caught up');
	is(count_at($emb, 'under re-sealed frames'), '0',
		're-sealed frames: nothing applied');
	converges('re-sealed frames') or relink('re-sealed frames: recover');
	check_slot('re-sealed frames');
};

# ---------------------------------------------------------------------
# 2. downgrade
# ---------------------------------------------------------------------
subtest 'downgrade: frame_version 2 asked' => sub {
	ok(wait_applied(20), 'caught up before the attack');
	my $off = -s $emb->logfile;
	my $n0 = $proxy->stats->{query_rewritten};
	$proxy->rewrite_query(q{"frame_version" '3'}, q{"frame_version" '2'});
	$proxy->cut;
	write_txn('under downgrade', 5);
	ok(wait_stat('query_rewritten', $n0 + 1), 'START_REPLICATION asked for version 2');
	my $err = refusal($off, qr/frame format version 2/);
	like($err,
		qr/embassy reads frame format version 2, but this register writes version 3/,
		'refused by the register, naming both versions');
	my $told = watch_attack('downgrade', 3,
		markers => ['under downgrade'], stop_when_told => 1);
	ok($told, 'downgrade: the views say the embassy is not caught up');
	converges('downgrade') or relink('downgrade: recover');
	check_slot('downgrade');
};

subtest 'downgrade: a frame in the v2 layout' => sub {
	ok(wait_applied(20), 'caught up before the attack');
	my $off = -s $emb->logfile;
	my $n0 = $proxy->stats->{tampered_mangle};
	$proxy->tamper('mangle', how => 'v2');
	my $deadline = time() + 20;
	while ($proxy->stats->{tampered_mangle} == $n0 && time() < $deadline)
	{
		write_txn('under v2 frame', 2);
		usleep(100_000);
	}
	ok($proxy->stats->{tampered_mangle} > $n0, 'a v2-shaped frame was sent');
	my $err = refusal($off, qr/frame format version 2 is not supported/);
	like($err, qr/frame format version 2 is not supported[^\n]*$then[^\n]*reads frame format version 3; the frame was written in version 2/,
		'refused, naming both versions');
	converges('v2 frame') or relink('v2 frame: recover');
	check_slot('v2 frame');
};

# ---------------------------------------------------------------------
# 3. signature and flag games
# ---------------------------------------------------------------------
subtest 'signature and flag games' => sub {
	my @games = (
		[ 'strip_sig', 1, qr/could not authenticate frame \d+[^\n]*$then[^\n]*session MAC does not verify/,
			'the SIGNED flag and the signature stripped' ],
		[ 'cut_sig', 1, qr/frame is truncated[^\n]*$then[^\n]*bytes of MAC and signature, but only/,
			'the signature cut off, its flag kept' ],
		[ 'bad_sig', 1, qr/could not verify the signature of frame \d+/,
			'a garbage signature on a signed frame' ],
		[ 'fake_sig', 0, qr/could not authenticate frame \d+[^\n]*$then[^\n]*session MAC does not verify/,
			'the SIGNED flag and a garbage signature on an unsigned frame' ],
		[ 'cut_mac', 0, qr/frame is truncated[^\n]*$then[^\n]*bytes of MAC and signature, but only/,
			'the MAC cut off' ],
		[ 'flip_mac', 0, qr/could not authenticate frame \d+[^\n]*$then[^\n]*session MAC does not verify/,
			'one bit of the MAC flipped' ],
	);
	foreach my $g (@games)
	{
		my ($how, $signed, $re, $what) = @$g;
		ok(wait_applied(20), "$how: caught up before the attack");
		my $off = -s $emb->logfile;
		my $n0 = $proxy->stats->{tampered_mangle};
		# signed frames: the first of a stream, heartbeats (position
		# frames or not); unsigned: data frames between them
		$proxy->tamper('mangle', how => $how, signed => $signed,
			data_only => $signed ? 0 : 1);
		my $deadline = time() + 20;
		while ($proxy->stats->{tampered_mangle} == $n0 && time() < $deadline)
		{
			write_many("game $how", 40);
		}
		ok($proxy->stats->{tampered_mangle} > $n0, "$how: $what");
		my $err = refusal($off, $re);
		like($err, $re, "$how: refused ($err)");
		converges("game $how") or relink("game $how: recover");
		check_slot("game $how");
	}
};

# ---------------------------------------------------------------------
# 4. copy session substitution
# ---------------------------------------------------------------------
subtest 'copy session substitution' => sub {
	my $off = -s $emb->logfile;
	my $n0 = $proxy->stats->{bind_rewritten};
	$proxy->rewrite_bind(1, $att_pub);
	q_reg(q{UPDATE acct SET balance = balance + 3, note = 'before copy substitution'});
	relink('copy session', nowait => 1);
	ok(wait_stat('bind_rewritten', $n0 + 1),
		"copy_frames was given the attacker's session key");
	my $orig = $proxy->rewritten_seen->{bind};
	ok($orig =~ /^[0-9a-f]{64}$/ && $orig ne $att_pub,
		"the copy's own session key was on the wire");
	my $err = refusal($off, qr/belongs to another session/);
	like($err, qr/frame belongs to another session/,
		'refused: the copy frames were sealed for another session');
	ok(embassy_tells(), 'copy session: the views say the embassy is not caught up');
	note('copy session: ' . views());
	is(q_emb('SELECT count(*) FROM acct'), '0',
		'copy session: nothing of the copy applied');
	converges('copy session', 40) or relink('copy session: recover');
	check_slot('copy session');
};

# ---------------------------------------------------------------------
# 5. small-order session keys
# ---------------------------------------------------------------------
subtest 'small-order session keys' => sub {
	q_reg(q{SELECT pg_create_logical_replication_slot('small_order', 'data_embassy')});
	write_txn('small order sql', 1);
	my $peek = sub {
		my ($session) = @_;
		my ($out, $err) = ('', '');
		my $rc = $reg->psql('postgres',
			"SELECT count(*) FROM pg_logical_slot_peek_binary_changes('small_order', NULL, NULL, "
			  . "'embassy_key', '$ekey', 'session', '$session')",
			stdout => \$out, stderr => \$err);
		return ($rc, $out, $err);
	};
	my ($rc, $out, $err) = $peek->($att_pub);
	is($rc, 0, 'a valid session key is accepted from SQL') or note($err);
	foreach my $s (@small_order)
	{
		($rc, $out, $err) = $peek->($s);
		ok($rc != 0 && $err =~ /ERROR:  session key is an X25519 point of small order\n.*changed on its way to the register, or given by hand/,
			"session $s refused") or note("rc $rc out '$out' err '$err'");
	}
	is(q_reg('SELECT 1'), '1', 'the register is up');
	q_reg(q{SELECT pg_drop_replication_slot('small_order')});

	# through the proxy, for the stream ...
	ok(wait_applied(20), 'caught up before the attack');
	my $off = -s $emb->logfile;
	$proxy->rewrite_query($session_re, q{"session" '} . ('00' x 32) . q{'});
	$proxy->cut;
	write_txn('under small-order session', 3);
	$err = refusal($off, qr/small order/);
	like($err, qr/The register reported: session key is an X25519 point of small order/,
		'stream: the register refuses a small-order session key, naming it');
	my $told = watch_attack('small-order session', 3,
		markers => ['under small-order session'], stop_when_told => 1);
	ok($told, 'small-order session: the views say the embassy is not caught up');
	converges('small-order session') or relink('small-order session: recover');

	# ... and for the copy
	$off = -s $emb->logfile;
	$proxy->rewrite_bind(1, $small_order[2]);
	relink('small-order copy session', nowait => 1);
	$err = refusal($off, qr/small order/);
	like($err, qr/The register reported: session key is an X25519 point of small order/,
		'copy: the register refuses a small-order session key, naming it');
	ok(embassy_tells(), 'small-order copy session: the views say the embassy is not caught up');
	converges('small-order copy session', 40)
	  or relink('small-order copy session: recover');
	check_slot('small-order sessions');
};

# ---------------------------------------------------------------------
# 6. the persisted history check point
# ---------------------------------------------------------------------
subtest 'history check after a restart: history_lsn stripped or moved' => sub {
	ok(wait_applied(20), 'caught up before the attack');
	# a sealed heartbeat received and its point kept in the catalog
	my $deadline = time() + 15;
	my $kept = '';
	while (time() < $deadline)
	{
		$kept = q_emb(q{SELECT coalesce(history_lsn::text, '') FROM data_embassy.registers
			WHERE name = 'population'});
		last if $kept ne '';
		usleep(200_000);
	}
	isnt($kept, '', "the history check point is kept ($kept)");

	$emb->stop;
	my $off = -s $emb->logfile;
	$proxy->rewrite_query(q{, "history_lsn" '[0-9A-Fa-f]+/[0-9A-Fa-f]+'}, '');
	write_txn('under stripped history', 5);
	$emb->start;
	my $err = refusal($off, qr/does not answer the history check/);
	like($err, qr/does not answer the history check this embassy asked for/,
		'history_lsn stripped after a restart: refused');
	my $told = watch_attack('stripped history', 3,
		markers => ['under stripped history'], stop_when_told => 1);
	ok($told, 'stripped history: the views say the embassy is not caught up');

	$off = -s $emb->logfile;
	$proxy->rewrite_query(q{"history_lsn" '[0-9A-Fa-f]+/[0-9A-Fa-f]+'},
		q{"history_lsn" '0/1000000'});
	$proxy->cut;
	$err = refusal($off, qr/does not answer the history check/);
	like($err, qr/does not answer the history check this embassy asked for/,
		'history_lsn moved: refused');
	converges('stripped history') or relink('stripped history: recover');
	check_slot('stripped history');
};

$proxy->stop;
$emb->stop;
$reg->stop;
done_testing();

# The attacker's tool, compiled from the test's temp directory.
__END__
__C__
/*
 * reseal.c
 *		The session-substitution attacker of TAP 181 (frame format 3).  The
 *		proxy gave the register a session key of its own (attacker_priv is
 *		its private half) instead of the embassy's, and it holds the
 *		embassy's identity key.  For one frame the register sealed for the
 *		attacker's session it
 *		  - opens the frame (the stream key needs the embassy's key alone),
 *		  - checks the register's session MAC under its own session's MAC
 *			key, which it can derive: DH(attacker, register),
 *		logs what it learnt, then re-seals the frame for the embassy's real
 *		session (given by the proxy): the session field rewritten, the body
 *		sealed again under the stream key, the SIGNED flag and the signature
 *		dropped (it cannot sign), and the MAC made with the only session MAC
 *		key it has, its own.  The MAC the embassy expects needs
 *		DH(register, embassy session), which it cannot compute.
 *
 * usage: reseal embassy_priv attacker_priv register_pub logfile
 *				 embassy_session frame (all hex but logfile)
 * prints the re-sealed frame as hex; "reseal priv" prints priv's public key.
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
#define SIGNED 0x0004

static void
die(const char *what)
{
	fprintf(stderr, "reseal: %s\n", what);
	exit(1);
}

static unsigned char *
unhex(const char *s, size_t *n)
{
	size_t		len = strlen(s);
	unsigned char *out;

	if (len % 2)
		die("bad hex length");
	*n = len / 2;
	out = malloc(*n + 1);
	if (!out)
		die("out of memory");
	for (size_t i = 0; i < *n; i++)
		if (sscanf(s + 2 * i, "%2hhx", &out[i]) != 1)
			die("bad hex");
	return out;
}

static void
unhex_fixed(const char *s, unsigned char *out, size_t n)
{
	size_t		got;
	unsigned char *b = unhex(s, &got);

	if (got != n)
		die("bad key length");
	memcpy(out, b, n);
	free(b);
}

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

static void
pub_of(const unsigned char *priv, unsigned char *pub)
{
	EVP_PKEY   *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, 32);
	size_t		len = 32;

	if (!k || EVP_PKEY_get_raw_public_key(k, pub, &len) <= 0)
		die("bad private key");
	EVP_PKEY_free(k);
}

static void
hkdf(const unsigned char *salt, size_t saltlen, const unsigned char *ikm,
	 size_t ikmlen, const unsigned char *info, size_t infolen,
	 unsigned char *out, size_t outlen)
{
	EVP_KDF    *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kc = EVP_KDF_CTX_new(kdf);
	OSSL_PARAM	params[5];

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *) ikm, ikmlen);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *) salt, saltlen);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *) info, infolen);
	params[4] = OSSL_PARAM_construct_end();
	if (!kc || EVP_KDF_derive(kc, out, outlen, params) <= 0)
		die("HKDF failed");
	EVP_KDF_CTX_free(kc);
	EVP_KDF_free(kdf);
}

/* HMAC-SHA256 of "data_embassy frame v3 mac" || SHA-256(frame[0..len)) */
static void
frame_mac(const unsigned char *key, const unsigned char *frame, size_t len,
		  unsigned char *mac)
{
	unsigned char msg[25 + 32];
	unsigned int maclen = 32;

	memcpy(msg, "data_embassy frame v3 mac", 25);
	EVP_Digest(frame, len, msg + 25, NULL, EVP_sha256(), NULL);
	if (!HMAC(EVP_sha256(), key, 32, msg, sizeof(msg), mac, &maclen))
		die("HMAC failed");
}

static int
gcm(int enc, const unsigned char *key, const unsigned char *nonce,
	const unsigned char *aad, const unsigned char *in, size_t len,
	unsigned char *out, unsigned char *tag)
{
	EVP_CIPHER_CTX *cc = EVP_CIPHER_CTX_new();
	int			outl;
	int			ok;

	ok = cc &&
		EVP_CipherInit_ex(cc, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) > 0 &&
		EVP_CIPHER_CTX_ctrl(cc, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) > 0 &&
		EVP_CipherInit_ex(cc, NULL, NULL, key, nonce, enc) > 0 &&
		EVP_CipherUpdate(cc, NULL, &outl, aad, HDR) > 0 &&
		(len == 0 || EVP_CipherUpdate(cc, out, &outl, in, (int) len) > 0) &&
		(enc || EVP_CIPHER_CTX_ctrl(cc, EVP_CTRL_GCM_SET_TAG, 16, tag) > 0) &&
		EVP_CipherFinal_ex(cc, out + len, &outl) > 0 &&
		(!enc || EVP_CIPHER_CTX_ctrl(cc, EVP_CTRL_GCM_GET_TAG, 16, tag) > 0);
	EVP_CIPHER_CTX_free(cc);
	return ok;
}

int
main(int argc, char **argv)
{
	unsigned char emb_priv[32], emb_pub[32], att_priv[32], att_pub[32];
	unsigned char reg_pub[32], target[32];
	unsigned char ikm[64], salt[96], info[34], okm[44], nonce[12];
	unsigned char mac_ikm[32], mac_info[30], att_mac_key[32], mac[32];
	unsigned char *frame, *plain, *out, tag[16];
	size_t		flen, clen;
	uint32_t	sealed_len;
	uint16_t	flags;
	uint64_t	seq = 0;
	int			opened, mac_ok, mine;
	FILE	   *log;

	if (argc == 2)
	{
		unhex_fixed(argv[1], att_priv, 32);
		pub_of(att_priv, att_pub);
		for (int i = 0; i < 32; i++)
			printf("%02x", att_pub[i]);
		printf("\n");
		return 0;
	}
	if (argc != 7)
		die("usage: reseal embassy_priv attacker_priv register_pub logfile embassy_session frame");
	unhex_fixed(argv[1], emb_priv, 32);
	unhex_fixed(argv[2], att_priv, 32);
	unhex_fixed(argv[3], reg_pub, 32);
	unhex_fixed(argv[5], target, 32);
	frame = unhex(argv[6], &flen);
	pub_of(emb_priv, emb_pub);
	pub_of(att_priv, att_pub);

	if (flen < HDR + 16 + 32 || memcmp(frame, "DEMB", 4) != 0 || frame[4] != 3)
		die("not a v3 frame");
	flags = (uint16_t) (frame[6] << 8 | frame[7]);
	sealed_len = (uint32_t) frame[140] << 24 | (uint32_t) frame[141] << 16 |
		(uint32_t) frame[142] << 8 | frame[143];
	for (int i = 0; i < 8; i++)
		seq = seq << 8 | frame[88 + i];
	if (sealed_len < 16 || flen < HDR + sealed_len + 32)
		die("bad lengths");
	clen = sealed_len - 16;

	/* the stream key, from the embassy's key alone */
	dh(emb_priv, frame + 24, ikm);
	dh(emb_priv, reg_pub, ikm + 32);
	memcpy(salt, frame + 24, 32);
	memcpy(salt + 32, emb_pub, 32);
	memcpy(salt + 64, reg_pub, 32);
	memcpy(info, "data_embassy frame v3", 21);
	memcpy(info + 21, frame + 8, 12);	/* sysid, dboid */
	info[33] = frame[5];
	hkdf(salt, 96, ikm, 64, info, 34, okm, 44);
	memcpy(nonce, okm + 32, 12);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= frame[88 + i];

	plain = malloc(clen + 16);
	out = malloc(HDR + clen + 16 + 32);
	if (!plain || !out)
		die("out of memory");
	memcpy(tag, frame + HDR + clen, 16);
	opened = gcm(0, okm, nonce, frame, frame + HDR, clen, plain, tag);

	/* the register's MAC, under the attacker's own session's MAC key */
	mine = memcmp(frame + 56, att_pub, 32) == 0;
	dh(att_priv, reg_pub, mac_ikm);
	memcpy(salt, att_pub, 32);
	memcpy(salt + 32, emb_pub, 32);
	memcpy(salt + 64, reg_pub, 32);
	memcpy(mac_info, "data_embassy frame v3 session", 29);
	mac_info[29] = frame[5];
	hkdf(salt, 96, mac_ikm, 32, mac_info, 30, att_mac_key, 32);
	frame_mac(att_mac_key, frame, HDR + sealed_len, mac);
	mac_ok = memcmp(mac, frame + HDR + sealed_len, 32) == 0;

	log = fopen(argv[4], "a");
	if (log)
	{
		fprintf(log, "seq=%llu session_mine=%d opened=%d mac_ok=%d signed=%d\n",
				(unsigned long long) seq, mine, opened, mac_ok,
				(flags & SIGNED) ? 1 : 0);
		fclose(log);
	}
	if (!opened)
		die("could not open the frame");

	/* re-seal for the embassy's real session, unsigned */
	memcpy(out, frame, HDR);
	memcpy(out + 56, target, 32);
	flags &= ~SIGNED;
	out[6] = (unsigned char) (flags >> 8);
	out[7] = (unsigned char) flags;
	if (!gcm(1, okm, nonce, out, plain, clen, out + HDR, tag))
		die("AES-GCM failed");
	memcpy(out + HDR + clen, tag, 16);
	frame_mac(att_mac_key, out, HDR + clen + 16, out + HDR + clen + 16);

	for (size_t i = 0; i < HDR + clen + 16 + 32; i++)
		printf("%02x", out[i]);
	printf("\n");
	return 0;
}
