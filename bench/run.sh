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
#   bench/run.sh --help        every option of bench/e2e.pl
#
# Every other option goes to bench/e2e.pl.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

build=1
args=()
for a in "$@"; do
	case $a in
	--no-build) build=0 ;;
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

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
available() { apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]'; }

# Required: the server with matching headers and the build dependencies
# (as scripts/common.sh), DBD::Pg for the driver, ss for wire bytes.
# Wanted when Debian has them: gnuplot (the lag plot), linux-perf (the
# CPU profile), pglogical (a third system).
required="postgresql-15 postgresql-server-dev-15 postgresql-contrib libzstd-dev libssl-dev make gcc pkg-config libdbd-pg-perl iproute2"
wanted="gnuplot-nox linux-perf postgresql-15-pglogical"

missing=""
for p in $required $wanted; do installed "$p" || missing="$missing $p"; done
if [ -n "$missing" ]; then
	log "installing:$missing"
	if as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq; then
		installable=""
		for p in $missing; do
			if available "$p"; then installable="$installable $p"
			else log "not in this Debian: $p (going on without it)"
			fi
		done
		# shellcheck disable=SC2086
		[ -z "$installable" ] || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends -o Dpkg::Options::=--force-confold $installable >/dev/null
		# Debian starts a default cluster on install; the benchmark never uses it.
		as_root pg_ctlcluster 15 main stop 2>/dev/null || true
	else
		log "cannot install packages (not root, no sudo): going on with what is there"
	fi
fi

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
