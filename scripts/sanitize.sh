#!/usr/bin/env bash
#
# Run the pg_regress suite (sql/, expected/) and the TAP suite (test/t/)
# against a PostgreSQL 15 and a data_embassy.so that are both built with
# AddressSanitizer and UndefinedBehaviorSanitizer (gcc -fsanitize=address,
# undefined).  The fuzzer (test/fuzz/run.sh) covers the frame and record
# parsers in isolation; this covers the rest of the C code (output plugin,
# apply worker, spooling, launcher, SQL functions) inside real servers, where
# out-of-bounds accesses and undefined behaviour would otherwise go unnoticed.
#
#	scripts/sanitize.sh						both suites, every TAP file
#	scripts/sanitize.sh test/t/020_crash.pl	the regress suite and one TAP file
#
# Run as root on Debian 12 (no standard input needed).  About 8 minutes on
# 2 cores the first time (4 of them building PostgreSQL), 4 after.
#
#  1. Installs what is missing from Debian: scripts/common.sh's packages plus
#     zlib1g-dev, bzip2 and dpkg-dev; adds deb-src entries for bookworm
#     (/etc/apt/sources.list.d/data-embassy-src.sources, copied from
#     debian.sources) unless some deb-src entry is configured already.
#  2. Fetches Debian's postgresql-15 source package: the installed server's
#     version if the mirror serves its source, else the newest one it does
#     (bookworm-security's sources are not always mirrored: then this is an
#     older 15.x than the system server, which data_embassy supports too).
#     Builds the upstream tree of its .orig tarball (Debian's patches are not
#     applied: one of them hard-wires pkglibdir to /usr/lib/postgresql/15/lib)
#     with the sanitizers, --enable-tap-tests and contrib/test_decoding, as
#     the unprivileged postgres user, into a staging DESTDIR, checks that
#     nothing in it lies outside the prefix, and copies it to DE_ASAN_PREFIX
#     (default /opt/data_embassy-asan).  The system PostgreSQL under
#     /usr/lib/postgresql and /usr/share/postgresql is never written to.  The
#     build is reused while version and flags are unchanged
#     (DE_ASAN_REBUILD=1 forces a new one).
#  3. Builds data_embassy against that prefix in a private copy of the tree
#     (never in this tree: sanitized objects here would end up in the next
#     ordinary build) after `make clean`, checks that the .so is instrumented,
#     and installs it into the prefix, through a DESTDIR as well.
#  4. Runs `make installcheck` there as the postgres user: the regress suite,
#     then the TAP suite (015_large.pl separately, see LIGHT_TAP), with
#     ASAN_OPTIONS/UBSAN_OPTIONS that make every report fatal
#     (halt_on_error, abort_on_error).  ASan reports go to files in a log
#     directory; UBSan's go to stderr, i.e. the server logs and regress_log_*
#     files; all of them are searched afterwards and printed.  Leak detection
#     is off: PostgreSQL frees memory contexts wholesale and leaves the rest
#     to process exit.
#
# Exits non-zero if a test fails or a sanitizer reported anything; the last
# line is "N passed, M failed" (tests and TAP files passed; failures plus
# reports).  Heavy steps run under `nice -n 10` with make -j2 at most.
# DE_ASAN_KEEP=1 keeps the private copy (logs, tmp_check) afterwards.
#
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/common.sh"

ASAN_PREFIX=${DE_ASAN_PREFIX:-/opt/data_embassy-asan}
ASAN_BUILD=${DE_ASAN_BUILD:-/var/tmp/data_embassy-asan-build}
SAN="-fsanitize=address,undefined"
ASAN_CFLAGS="-O1 -g -fno-omit-frame-pointer $SAN"
ASAN_LDFLAGS="$SAN"
ASAN_CONFIGURE="--enable-tap-tests --enable-debug --with-openssl --with-zstd --without-readline --without-icu --without-llvm"
JOBS=$(( $(nproc) < 2 ? $(nproc) : 2 ))
NICE="nice -n 10"
start=$(date +%s)

die() { de_log "sanitize: $*"; exit 1; }

# Until the tests set their own: sanitized programs such as pg_config must
# not fail at exit on memory PostgreSQL deliberately never frees.
export ASAN_OPTIONS=detect_leaks=0
export UBSAN_OPTIONS=print_stacktrace=1

[ "$(id -u)" = 0 ] || die "run me as root (I install packages and write $ASAN_PREFIX)"

# Never let the sanitized build land on the system PostgreSQL.
case $ASAN_PREFIX in
	/*) ;;
	*) die "DE_ASAN_PREFIX must be an absolute path" ;;
esac
case ${ASAN_PREFIX%/} in
	"" | /usr | /usr/local | /usr/lib/postgresql* | /usr/share/postgresql* | /usr/lib | /usr/share | /etc* | /var/lib/postgresql*)
		die "refusing DE_ASAN_PREFIX=$ASAN_PREFIX: it must be a directory of its own" ;;
esac

# As the unprivileged user, niced, with a clean PATH.
as_pg() { runuser -u postgres -- env PATH=/usr/local/bin:/usr/bin:/bin $NICE "$@"; }

# ---------------------------------------------------------------- packages

has_deb_src() {
	grep -Eqs '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' \
		/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
}
if ! has_deb_src; then
	src_list=/etc/apt/sources.list.d/data-embassy-src.sources
	de_log "adding deb-src entries in $src_list"
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		# the same mirrors and keys as the binary entries
		{
			echo "# deb-src for scripts/sanitize.sh (apt-get source postgresql-15)"
			sed -n -e 's/^Types:.*/Types: deb-src/' -e '/^#/d' -e p /etc/apt/sources.list.d/debian.sources
		} > "$src_list"
	else
		cat > "$src_list" <<-'EOF'
		# deb-src for scripts/sanitize.sh (apt-get source postgresql-15)
		Types: deb-src
		URIs: http://deb.debian.org/debian
		Suites: bookworm bookworm-updates
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

		Types: deb-src
		URIs: http://deb.debian.org/debian-security
		Suites: bookworm-security
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
		EOF
	fi
	apt_updated=0
else
	apt_updated=1
fi

# libipc-run-perl, gcc, make, libssl-dev, libzstd-dev come with common.sh's
# list; the server build needs zlib, bzip2 for the tarball, and dpkg-dev
# for apt-get source.  (postgresql-15 is installed too: it creates the
# postgres user and tells which version to build.)
DE_EXTRA_PACKAGES="zlib1g-dev bzip2 dpkg-dev" de_install_deps
if [ "$apt_updated" = 0 ] || [ -z "$(apt-cache showsrc postgresql-$PG_MAJOR 2>/dev/null)" ]; then
	de_log "apt-get update (source indices)"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
fi

# --------------------------------------------------- sanitized PostgreSQL

# Source versions the mirror lists, newest first; the installed server's
# own version first if it is among them.
installed=$(dpkg-query -W -f='${Version}' postgresql-$PG_MAJOR 2>/dev/null || true)
versions=$(apt-cache showsrc postgresql-$PG_MAJOR | sed -n 's/^Version: //p' |
	sort -u | sort -r -V)
[ -n "$versions" ] || die "no source package postgresql-$PG_MAJOR (deb-src entries missing?)"
if [ -n "$installed" ] && grep -qxF "$installed" <<<"$(printf '%s\n' $versions)"; then
	versions="$installed $(printf '%s\n' $versions | grep -vxF "$installed" || true)"
fi

stamp=$ASAN_PREFIX/.data_embassy-asan-stamp
want_stamp() { echo "postgresql-$PG_MAJOR $1 | $ASAN_CFLAGS | $ASAN_LDFLAGS | $ASAN_CONFIGURE"; }

have=""
if [ -f "$stamp" ] && [ -x "$ASAN_PREFIX/bin/pg_config" ] && [ "${DE_ASAN_REBUILD:-0}" != 1 ]; then
	for v in $versions; do
		if [ "$(cat "$stamp")" = "$(want_stamp "$v")" ]; then have=$v; break; fi
	done
fi

if [ -n "$have" ]; then
	de_log "reusing the sanitized PostgreSQL $have in $ASAN_PREFIX"
	srcver=$have
else
	# both directories are emptied: only if they are ours (or empty)
	for d in "$ASAN_BUILD" "$ASAN_PREFIX"; do
		if [ -d "$d" ] && [ -n "$(ls -A "$d")" ] && [ ! -e "$d/.data_embassy-asan" ]; then
			die "$d exists and was not made by this script; remove it or set DE_ASAN_PREFIX/DE_ASAN_BUILD"
		fi
	done
	rm -rf "$ASAN_BUILD"
	mkdir -p "$ASAN_BUILD"
	touch "$ASAN_BUILD/.data_embassy-asan"
	chown -R postgres: "$ASAN_BUILD"
	srcver=""
	for v in $versions; do
		de_log "fetching the source of postgresql-$PG_MAJOR $v"
		if (cd "$ASAN_BUILD" && as_pg apt-get source -qq --download-only \
			"postgresql-$PG_MAJOR=$v" >"$ASAN_BUILD/fetch.log" 2>&1); then
			srcver=$v
			break
		fi
		de_log "the mirror does not serve it: $(grep -m1 'E: ' "$ASAN_BUILD/fetch.log" || true)"
		rm -f "$ASAN_BUILD"/postgresql-"${PG_MAJOR}"_*
	done
	[ -n "$srcver" ] || die "could not fetch any postgresql-$PG_MAJOR source package"
	[ -z "$installed" ] || [ "$srcver" = "$installed" ] ||
		de_log "note: building $srcver, the system server is $installed"

	orig=$(ls "$ASAN_BUILD"/postgresql-"$PG_MAJOR"_*.orig.tar.* | head -n 1)
	as_pg tar -C "$ASAN_BUILD" -xf "$orig"
	src=$(ls -d "$ASAN_BUILD"/postgresql-"$PG_MAJOR".*/ | head -n 1)
	src=${src%/}
	stage=$ASAN_BUILD/stage

	de_log "configuring $src (log: $ASAN_BUILD/build.log)"
	(cd "$src" && as_pg ./configure --prefix="$ASAN_PREFIX" $ASAN_CONFIGURE \
		CFLAGS="$ASAN_CFLAGS" LDFLAGS="$ASAN_LDFLAGS" >"$ASAN_BUILD/build.log" 2>&1) ||
		{ tail -n 40 "$ASAN_BUILD/build.log"; die "configure failed"; }
	de_log "building PostgreSQL with $SAN (make -j$JOBS, about 4 min)"
	{
		as_pg make -C "$src" -s -j"$JOBS" &&
		as_pg make -C "$src/contrib/test_decoding" -s -j"$JOBS" &&
		as_pg make -C "$src" -s install DESTDIR="$stage" &&
		as_pg make -C "$src/contrib/test_decoding" -s install DESTDIR="$stage"
	} >>"$ASAN_BUILD/build.log" 2>&1 ||
		{ tail -n 40 "$ASAN_BUILD/build.log"; die "the PostgreSQL build failed"; }

	# Everything must have been installed under the prefix.
	stray=$(cd "$stage" && find . -mindepth 1 \( -type f -o -type l \) | grep -v "^\.$ASAN_PREFIX/" | head -n 5 || true)
	[ -z "$stray" ] || die "the build installs outside $ASAN_PREFIX, not copying: $stray"
	de_log "installing it into $ASAN_PREFIX"
	rm -rf "$ASAN_PREFIX"
	mkdir -p "$ASAN_PREFIX"
	cp -R "$stage$ASAN_PREFIX/." "$ASAN_PREFIX/"
	touch "$ASAN_PREFIX/.data_embassy-asan"
	chown -R root:root "$ASAN_PREFIX"
	want_stamp "$srcver" > "$stamp"
	rm -rf "$stage" "$src" "$ASAN_BUILD"/postgresql-"${PG_MAJOR}"_*
fi

ASAN_PG_CONFIG=$ASAN_PREFIX/bin/pg_config
for d in "$("$ASAN_PG_CONFIG" --pkglibdir)" "$("$ASAN_PG_CONFIG" --sharedir)" "$("$ASAN_PG_CONFIG" --bindir)"; do
	case $d in "$ASAN_PREFIX"/*) ;; *) die "$ASAN_PG_CONFIG points outside its prefix: $d" ;; esac
done
grep -q -- -fsanitize=address <<<"$("$ASAN_PG_CONFIG" --cflags)" ||
	die "$ASAN_PG_CONFIG was not built with $SAN (DE_ASAN_REBUILD=1 rebuilds it)"

# ---------------------------------------------------- sanitized extension

work=$(de_private_copy "$top")
if [ "${DE_ASAN_KEEP:-0}" = 1 ]; then
	trap 'de_log "kept $work"' EXIT
else
	trap 'rm -rf "$work"' EXIT
fi
# From here on common.sh's helpers use the sanitized server.
PG_BINDIR=$ASAN_PREFIX/bin
PG_CONFIG=$ASAN_PG_CONFIG

de_log "building data_embassy with $SAN in $work"
# the copy may hold objects of an ordinary build: start clean
as_pg make -C "$work" -s clean PG_CONFIG="$PG_CONFIG" >/dev/null
as_pg make -C "$work" -s -j"$JOBS" PG_CONFIG="$PG_CONFIG" >"$work/build.log" 2>&1 ||
	{ tail -n 40 "$work/build.log"; die "the data_embassy build failed"; }
so=$work/data_embassy.so
syms=$(nm -D --undefined-only "$so")
grep -q __asan_report <<<"$syms" || die "$so is not instrumented by AddressSanitizer"
grep -q __ubsan_handle <<<"$syms" || die "$so is not instrumented by UndefinedBehaviorSanitizer"
ext_stage=$work/.stage
as_pg make -C "$work" -s install PG_CONFIG="$PG_CONFIG" DESTDIR="$ext_stage" >/dev/null
stray=$(cd "$ext_stage" && find . -mindepth 1 -type f | grep -v "^\.$ASAN_PREFIX/" | head -n 5 || true)
[ -z "$stray" ] || die "the extension installs outside $ASAN_PREFIX: $stray"
cp -R "$ext_stage$ASAN_PREFIX/." "$ASAN_PREFIX/"
chown -R root:root "$ASAN_PREFIX"
rm -rf "$ext_stage"
de_log "installed data_embassy into $("$PG_CONFIG" --pkglibdir)"

# ------------------------------------------------------------------ tests

logdir=$work/sanitizer-logs
mkdir -p "$logdir"
chown postgres: "$logdir"
# Every report is fatal: the process aborts, so its test fails too.  ASan
# writes its reports to $logdir/asan.<pid>; UBSan (gcc's runtime, next to
# ASan's) writes to stderr, that is the server logs and regress_log_* files,
# which are searched as well.
SAN_ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:print_stacktrace=1:disable_coredump=1:log_path=$logdir/asan"
SAN_UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:report_error_type=1:log_path=$logdir/ubsan"

# TAP files that bound the private memory (RssAnon) of server processes.
# ASan's quarantine keeps up to 256 MB of freed memory per process to catch
# use-after-free, which those bounds would count against the extension: these
# files run with quarantine_size_mb=0 (every other check stays on).
LIGHT_TAP="test/t/015_large.pl"

run_suite() {	# name, extra ASAN_OPTIONS, make arguments...
	local name=$1 extra=$2; shift 2
	de_log "running $name under the sanitizers"
	local rc=0
	runuser -u postgres -- env PATH="$PG_BINDIR:/usr/local/bin:/usr/bin:/bin" \
		PG_CONFIG="$PG_CONFIG" ASAN_OPTIONS="$SAN_ASAN_OPTIONS$extra" \
		UBSAN_OPTIONS="$SAN_UBSAN_OPTIONS" \
		$NICE make -C "$work" -s installcheck PG_CONFIG="$PG_CONFIG" "$@" \
		2>&1 | tee "$work/$name.log" || rc=$?	# pipefail: make's status
	return "$rc"
}

# The TAP run empties tmp_check/: keep each run's logs.
save_logs() {	# name
	mkdir -p "$work/saved/$1"
	cp -a "$work"/tmp_check/log/. "$work/saved/$1/" 2>/dev/null || true
}

show_tap_failures() {	# name: the regress_log of each file prove reports failed
	local t f
	for t in $(sed -n 's/^\([^ ]*\.pl\) .*(Wstat.*/\1/p' "$work/$1.log" | sort -u); do
		f=$work/saved/$1/regress_log_$(basename "$t" .pl)
		[ -f "$f" ] || continue
		echo "----- $f (last 60 lines)"
		tail -n 60 "$f"
	done
}

regress_status=0
run_suite regress "" TAP_TESTS= || regress_status=$?
if [ "$regress_status" != 0 ] && [ -f "$work/regression.diffs" ]; then
	echo "----- regression.diffs (first 80 lines)"
	head -n 80 "$work/regression.diffs"
fi

if [ $# -gt 0 ]; then
	tap_files="$*"
else
	tap_files=$(cd "$work" && ls test/t/*.pl | sort)
fi
heavy="" light=""
for t in $tap_files; do
	case " $LIGHT_TAP " in
		*" $t "*) light="$light $t" ;;
		*) heavy="$heavy $t" ;;
	esac
done

tap_status=0
tap_logs=""
if [ -n "$heavy" ]; then
	run_suite tap "" REGRESS= PROVE_TESTS="${heavy# }" || tap_status=$?
	save_logs tap
	show_tap_failures tap
	tap_logs="$tap_logs $work/tap.log"
fi
if [ -n "$light" ]; then
	run_suite tap-light ":quarantine_size_mb=0" REGRESS= PROVE_TESTS="${light# }" || tap_status=$?
	save_logs tap-light
	show_tap_failures tap-light
	tap_logs="$tap_logs $work/tap-light.log"
fi

# ---------------------------------------------------------------- summary

san_pattern='ERROR: (Address|Leak)Sanitizer|runtime error:'
nreports=0
declare -A seen=()
ndistinct=0
# A worker that crash-loops writes the same report again and again: print
# each distinct one once (by its SUMMARY line), and count them all.
for f in $(find "$logdir" -type f | sort); do
	nreports=$((nreports + 1))
	key=$(grep -m1 '^SUMMARY:' "$f" || grep -m1 'ERROR: ' "$f" || basename "$f")
	if [ -z "${seen[$key]:-}" ]; then
		echo "===== sanitizer report $(basename "$f")"
		cat "$f"
		ndistinct=$((ndistinct + 1))
		seen[$key]=0
	fi
	c=${seen[$key]}; seen[$key]=$((c + 1))
done
# UBSan writes to stderr: the server logs, the regress_log_* files and the
# captured output (so would ASan if it could not write its log file).
for f in $(grep -l -r -E "$san_pattern" "$work/log" "$work/saved" "$work"/regress.log $tap_logs 2>/dev/null | sort); do
	while IFS= read -r line; do
		nreports=$((nreports + 1))
		key=$(sed -E -e 's/.*(ERROR: (Address|Leak)Sanitizer)/\1/' -e 's/.* ([^ ]+: runtime error: )/\1/' \
			-e 's/0x[0-9a-f]+/0x?/g' -e 's/(PID|pid|thread) [0-9]+/\1 ?/g' <<<"$line")
		if [ -z "${seen[$key]:-}" ]; then
			echo "===== sanitizer output in $f"
			grep -m1 -F -B2 -A40 -- "$line" "$f" || true
			ndistinct=$((ndistinct + 1))
			seen[$key]=0
		fi
		c=${seen[$key]}; seen[$key]=$((c + 1))
	done < <(grep -h -E "$san_pattern" "$f")
done
if [ "$nreports" -gt 0 ]; then
	echo "===== distinct sanitizer findings (times reported)"
	for key in "${!seen[@]}"; do echo "${seen[$key]}x  $key"; done | sort -rn
fi

r_pass=$(grep -c -E '\.\.\. ok' "$work/regress.log" || true)
r_fail=$(grep -c -E '\.\.\. FAILED' "$work/regress.log" || true)
t_files=0 t_tests=0 t_fail=0
for f in $tap_logs; do
	n=$(sed -n 's/^Files=\([0-9]*\), Tests=\([0-9]*\).*/\1 \2/p' "$f" | tail -n 1)
	[ -n "$n" ] || n="0 0"
	t_files=$((t_files + ${n% *}))
	t_tests=$((t_tests + ${n#* }))
	t_fail=$((t_fail + $(sed -n 's/^\([^ ]*\.pl\) .*(Wstat.*/\1/p' "$f" | sort -u | wc -l)))
done
# a suite that failed without a failing test (a server did not start, ...)
[ "$regress_status" = 0 ] || [ "$r_fail" != 0 ] || r_fail=1
[ "$tap_status" = 0 ] || [ "$t_fail" != 0 ] || t_fail=1
t_pass=$((t_files - t_fail))
[ "$t_pass" -ge 0 ] || t_pass=0
elapsed=$(( $(date +%s) - start ))

echo
echo "sanitize: PostgreSQL $srcver and data_embassy built with $SAN (prefix $ASAN_PREFIX)"
echo "sanitize: pg_regress: $r_pass passed, $r_fail failed"
echo "sanitize: TAP: $t_files files ($t_tests tests), $t_pass passed, $t_fail failed"
echo "sanitize: sanitizer reports: $nreports ($ndistinct distinct)"
echo "sanitize: $((elapsed / 60)) min $((elapsed % 60)) s"
ok=$((r_pass + t_pass))
bad=$((r_fail + t_fail + ndistinct))
echo "$ok passed, $bad failed"
if [ "$regress_status" != 0 ] || [ "$tap_status" != 0 ] || [ "$nreports" != 0 ]; then
	exit 1
fi
