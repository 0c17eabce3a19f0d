# Shared by scripts/test.sh and scripts/demo.sh: install what is missing,
# build, install the extension, and run commands as a non-root user
# (PostgreSQL refuses to run as root).

PG_MAJOR=15
# DE_PG_BINDIR: another server's bin directory, for example a copy of
# Debian's /usr/lib/postgresql/15 and /usr/share/postgresql/15 under one
# prefix (PostgreSQL finds its files relative to its binaries), so that
# several work trees can build, install and test at once.
PG_BINDIR=${DE_PG_BINDIR:-/usr/lib/postgresql/$PG_MAJOR/bin}
export PG_CONFIG=$PG_BINDIR/pg_config
DE_PACKAGES="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-contrib libzstd-dev libssl-dev libipc-run-perl make gcc pkg-config"
# the fuzzer (scripts/test.sh) needs clang's libFuzzer and sanitizer runtimes
DE_TEST_PACKAGES="clang libclang-rt-14-dev"

de_log() { printf '==> %s\n' "$*" >&2; }

# Run a command as root: directly, or through sudo.
de_as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

# Install the packages we need unless they are all present, and make sure
# the server and its headers are the same minor version.
de_install_deps() {
	local missing=""
	for p in $DE_PACKAGES ${DE_EXTRA_PACKAGES:-}; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing="$missing $p"
	done
	local srv dev
	srv=$(dpkg-query -W -f='${Version}' postgresql-$PG_MAJOR 2>/dev/null || true)
	dev=$(dpkg-query -W -f='${Version}' postgresql-server-dev-$PG_MAJOR 2>/dev/null || true)
	if [ -z "$missing" ] && [ "$srv" = "$dev" ]; then
		return 0
	fi
	de_log "installing:${missing:- (upgrading server and headers together)}"
	de_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	de_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		-o Dpkg::Options::=--force-confold $DE_PACKAGES ${DE_EXTRA_PACKAGES:-} >/dev/null
	# Debian starts a default cluster on install; we never use it.
	de_as_root pg_ctlcluster $PG_MAJOR main stop 2>/dev/null || true
}

# Build and install the extension from the tree in $1.
de_build_install() {
	de_log "building data_embassy"
	make -C "$1" -s -j"$(nproc)" PG_CONFIG="$PG_CONFIG" PG_CFLAGS="${PG_CFLAGS:-}"
	de_log "installing data_embassy into $($PG_CONFIG --pkglibdir)"
	de_as_root make -C "$1" -s install PG_CONFIG="$PG_CONFIG" PG_CFLAGS="${PG_CFLAGS:-}" >/dev/null
}

# The user clusters run as: ourselves, or "postgres" when we are root.
de_run_user() {
	if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi
}

# Copy the tree in $1 somewhere the run user owns and print its path.
de_private_copy() {
	local dest
	dest=$(mktemp -d "${TMPDIR:-/tmp}/data_embassy.XXXXXX")
	tar -C "$1" --exclude=./.git --exclude=./tmp_check --exclude=./results --exclude=./test/fuzz/build -cf - . | tar -C "$dest" -xf -
	if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dest"; fi
	echo "$dest"
}

# Run a command as the run user, with our PostgreSQL first on PATH.
de_as_user() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- env PATH="$PG_BINDIR:$PATH" PG_CONFIG="$PG_CONFIG" "$@"
	else
		env PATH="$PG_BINDIR:$PATH" "$@"
	fi
}
