#!/usr/bin/env bash
#
# bench/run.sh - the one command for the end-to-end benchmark.
#
# Installs what the benchmark needs from Debian (as root, or through sudo),
# builds data_embassy from this tree into a private copy of the PostgreSQL
# installation (so nothing installed meanwhile changes what is measured),
# then runs bench/e2e.pl with that installation's binaries,
# which starts its own register and embassy clusters on loopback (as the
# "postgres" user when run as root), measures data_embassy beside native
# logical replication and pglogical, and writes bench/results/.
#
#   bench/run.sh               the full run (under 20 minutes on 2 cores)
#   bench/run.sh --quick       small sizes, about 3 minutes, for development
#   bench/run.sh --no-build    benchmark the system's installed data_embassy
#   bench/run.sh --check-install   install what is required and check that
#                              every tool and module loads; run nothing
#   bench/run.sh --help        every option of bench/e2e.pl
#
# Every other option goes to bench/e2e.pl.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

build=1
check=0
args=()
for a in "$@"; do
	case $a in
	--no-build) build=0 ;;
	--check-install) check=1 ;;
	--help | -h) exec perl "$ROOT/bench/e2e.pl" --help ;;
	*) args+=("$a") ;;
	esac
done

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"
	elif sudo -n true 2>/dev/null; then sudo -n "$@"
	else return 1
	fi
}

# No "| grep -q" here: under pipefail, grep -q leaving early makes the
# writer die of SIGPIPE and the whole pipe fail.
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
available() {
	local policy
	policy=$(apt-cache policy "$1" 2>/dev/null) || return 1
	case $policy in *"Candidate: "[0-9]*) return 0 ;; esac
	return 1
}
apt_install() {
	# shellcheck disable=SC2068
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends -o Dpkg::Options::=--force-confold $@ >/dev/null
}

# Required: the server with matching headers and the build dependencies
# (as scripts/common.sh), DBI and DBD::Pg for the driver, ss for wire bytes.
# Wanted when Debian has them: gnuplot (the lag plot), linux-perf (the
# CPU profile), pglogical (a third system).
required="postgresql-15 postgresql-server-dev-15 postgresql-contrib libzstd-dev libssl-dev make gcc pkg-config libdbi-perl libdbd-pg-perl iproute2"
wanted="gnuplot-nox linux-perf postgresql-15-pglogical"

# Install the missing packages of the lists given; the package lists are
# refreshed first (a fresh machine has none).  Required ones must install;
# a wanted one Debian lacks is left out.
install_missing() {
	local req=$1 opt=$2 missing="" p installable="" server=0
	for p in $req $opt; do installed "$p" || missing="$missing $p"; done
	[ -n "$missing" ] || return 0
	log "installing:$missing"
	if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq; then
		log "cannot install packages (not root, no sudo, or no package lists): going on with what is there"
		return 0
	fi
	for p in $missing; do
		case " $req " in
		*" $p "*) installable="$installable $p" ;;
		*)
			if available "$p"; then installable="$installable $p"
			else log "not in this Debian: $p (going on without it)"
			fi ;;
		esac
		[ "$p" != postgresql-15 ] || server=1
	done
	[ -z "$installable" ] || apt_install $installable ||
		{ log "could not install:$installable"; return 1; }
	# Debian starts a default cluster on install; the benchmark never uses it.
	[ "$server" = 0 ] || as_root pg_ctlcluster 15 main stop 2>/dev/null || true
}

# --check-install: install what is required (not the wanted extras: that
# would add pglogical to the server's library directory) and check that
# every tool and Perl module the benchmark uses loads; run nothing else.
check_install() {
	local bad=0 t bindir pkglibdir
	install_missing "$required" ""
	perl -MDBI -MDBD::Pg -MJSON::PP -MTime::HiRes -MIO::Socket::INET \
		-MFile::Temp -MGetopt::Long -e 'DBI->install_driver("Pg")' ||
		{ log "Perl cannot load DBI and DBD::Pg"; bad=1; }
	perl -c "$ROOT/bench/e2e.pl" 2>/dev/null ||
		{ log "bench/e2e.pl does not compile"; bad=1; }
	case $("$PG_CONFIG" --version 2>/dev/null) in
	"PostgreSQL 15."*) ;;
	*) log "$PG_CONFIG is not PostgreSQL 15"; bad=1 ;;
	esac
	bindir=$("$PG_CONFIG" --bindir)
	pkglibdir=$("$PG_CONFIG" --pkglibdir)
	for t in initdb pg_ctl postgres psql pgbench; do
		[ -x "$bindir/$t" ] || { log "missing: $bindir/$t"; bad=1; }
	done
	for t in ss make gcc tar; do
		command -v "$t" >/dev/null || { log "missing: $t"; bad=1; }
	done
	command -v gnuplot >/dev/null || log "optional, missing: gnuplot (no lag plot)"
	command -v perf >/dev/null || log "optional, missing: perf (no CPU profile)"
	[ -e "$pkglibdir/pglogical.so" ] || log "optional, missing: pglogical (not measured)"
	[ "$bad" = 0 ] || { log "bench/run.sh cannot run here"; return 1; }
	log "bench/run.sh has what it needs"
}

if [ "$check" = 1 ]; then
	check_install
	exit
fi

install_missing "$required" "$wanted"

bindir=$($PG_CONFIG --bindir)
if [ "$build" = 1 ]; then
	# A private copy of the PostgreSQL installation (it finds its lib and
	# share directories relative to its binaries) with data_embassy built
	# from a copy of this tree installed into it: the run measures this
	# tree, whatever else gets installed meanwhile.
	priv=$(mktemp -d "${TMPDIR:-/tmp}/de-bench-install.XXXXXX")
	trap 'rm -rf "$priv"' EXIT
	chmod 755 "$priv"
	libdir=$(dirname "$bindir")                     # /usr/lib/postgresql/15
	sharedir=$($PG_CONFIG --sharedir)               # /usr/share/postgresql/15
	mkdir -p "$priv$(dirname "$libdir")" "$priv$(dirname "$sharedir")" "$priv/src"
	cp -a "$libdir" "$priv$libdir"
	cp -a "$sharedir" "$priv$sharedir"
	log "building data_embassy from $ROOT into $priv"
	tar -C "$ROOT" --exclude=./.git --exclude=./tmp_check --exclude=./results \
		--exclude=./bench/results --exclude=./test/fuzz/build \
		--exclude='*.o' --exclude='*.bc' --exclude='*.so' -cf - . | tar -C "$priv/src" -xf -
	make -C "$priv/src" -s -j"$(nproc)" with_llvm=no PG_CONFIG="$PG_CONFIG" >"$priv/build.log" 2>&1 ||
		{ cat "$priv/build.log" >&2; log "the build failed"; exit 1; }
	make -C "$priv/src" -s install with_llvm=no DESTDIR="$priv" PG_CONFIG="$PG_CONFIG" >>"$priv/build.log" 2>&1 ||
		{ cat "$priv/build.log" >&2; log "the install failed"; exit 1; }
	bindir="$priv$bindir"
	perl "$ROOT/bench/e2e.pl" --bindir "$bindir" "${args[@]}"
else
	exec perl "$ROOT/bench/e2e.pl" --bindir "$bindir" "${args[@]}"
fi
