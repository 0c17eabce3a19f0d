#!/usr/bin/env bash
#
# scripts/pgindent.sh [--check] [file...]
# scripts/pgindent.sh --typedefs
#
# Indent C files as PostgreSQL 15's pgindent does: pg_bsd_indent (Debian's
# pg-bsd-indent, installed if missing) with pgindent's flags and our
# typedefs.list.  Without files: every .c and .h under src/.  --check
# changes nothing: it prints the diff and exits 1 if a file would change.
# --typedefs regenerates typedefs.list: the names our sources declare with
# typedef, plus the names of PostgreSQL, libpq, OpenSSL and zstd typedefs
# that our sources use (PostgreSQL's own typedefs.list is only in its
# source tree).
#
# Difference from pgindent: pgindent also runs Perl pre- and
# post-processing around pg_bsd_indent (it protects comments after
# "#else"/"#endif", keeps some comment blocks as they are, and fixes up a
# few constructs pg_bsd_indent mangles).  Of that, this script does only
# the "Type *" of function definitions, so a few lines may come out
# differently from what pgindent would make; review the diff before
# committing it.
#
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
typedefs="$top/typedefs.list"
PG_CONFIG=${PG_CONFIG:-${DE_PG_BINDIR:+$DE_PG_BINDIR/pg_config}}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

# src/tools/pgindent/pgindent of PostgreSQL 15
flags="-bad -bap -bbb -bc -bl -cli1 -cp33 -cdb -nce -d0 -di12 -nfc1 -i4 -l79 -lp -lpl -nip -npro -sac -tpg -ts4"

log() { printf '==> %s\n' "$*" >&2; }

# Every typedef name in the header files given (a close approximation: the
# last identifier before ";" of "typedef ...;" and of "} Name;", and the
# name of function pointer typedefs).
header_typedefs() {
	find "$@" -name '*.h' -print0 2>/dev/null | xargs -0 cat 2>/dev/null |
		perl -0777 -ne '
			s{/\*.*?\*/}{ }gs;
			print "$1\n" while /\btypedef\b[^;{]*?\(\s*\*\s*(\w+)\s*\)/g;
			print "$1\n" while /\btypedef\b[^;{(]*?\b(\w+)\s*(?:\[[^\]]*\]\s*)?;/g;
			print "$1\n" while /\}\s*(\w+)\s*;/g;' |
		sort -u
}

generate_typedefs() {
	local ours theirs used inc
	ours=$(header_typedefs "$top/src"; cat "$top"/src/*.c "$top"/src/*/*.c |
		perl -0777 -ne '
			s{/\*.*?\*/}{ }gs;
			print "$1\n" while /\btypedef\b[^;{]*?\(\s*\*\s*(\w+)\s*\)/g;
			print "$1\n" while /\btypedef\b[^;{(]*?\b(\w+)\s*;/g;
			print "$1\n" while /\}\s*(\w+)\s*;/g;' | sort -u)
	inc=$("$PG_CONFIG" --includedir)
	theirs=$(header_typedefs "$("$PG_CONFIG" --includedir-server)" \
		"$inc/libpq-fe.h" "$inc/postgres_ext.h" /usr/include/openssl \
		/usr/include/zstd.h)
	used=$(cat "$top"/src/*.[ch] "$top"/src/*/*.[ch] | grep -oE '\b[A-Za-z_][A-Za-z0-9_]*\b' | sort -u)
	{
		printf '%s\n' "$ours"
		# "} name;" also matches variables of anonymous struct types: of
		# lower-case names keep only those that look like types.
		comm -12 <(printf '%s\n' "$theirs") <(printf '%s\n' "$used") |
			grep -E '^[A-Z]|_t$|_type$|^u?int[0-9]+$|^float[48]$|^(bool|bytea|text|pg_wchar|pgsocket|int2vector)$|^dlist_'
		# C library types pg_bsd_indent must know as types too
		printf '%s\n' FILE size_t ssize_t off_t pid_t mode_t uint8_t uint16_t \
			uint32_t uint64_t int32_t int64_t va_list sigjmp_buf
	} | grep -vxE 'break|continue|return|case|default|goto|sizeof|' | sort -u >"$typedefs"
	log "wrote $(wc -l <"$typedefs") names to $typedefs"
}

if ! command -v pg_bsd_indent >/dev/null; then
	log "installing pg-bsd-indent"
	if [ "$(id -u)" = 0 ]; then as_root=(); else as_root=(sudo -n); fi
	"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends pg-bsd-indent >/dev/null
fi

check=0
case ${1:-} in
--typedefs) generate_typedefs; exit 0 ;;
--check) check=1; shift ;;
esac

[ -f "$typedefs" ] || generate_typedefs
if [ $# -eq 0 ]; then
	set -- "$top"/src/*.[ch] "$top"/src/*/*.[ch]
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for f in "$@"; do
	# pg_bsd_indent writes the indented file next to its input
	cp "$f" "$tmp/in.c"
	# shellcheck disable=SC2086
	pg_bsd_indent $flags "-U$typedefs" "$tmp/in.c" "$tmp/out.c" ||
		{ log "pg_bsd_indent failed on $f"; status=2; continue; }
	# pgindent's post-processing of function definitions: one space
	# between a return type and its "*" on a line of their own
	perl -pi -e 's/^([A-Za-z_]\S*)\s+\*$/$1 */' "$tmp/out.c"
	if cmp -s "$f" "$tmp/out.c"; then
		continue
	fi
	if [ "$check" = 1 ]; then
		diff -u --label "$f" --label "$f (indented)" "$f" "$tmp/out.c" || true
		[ "$status" = 2 ] || status=1
	else
		cp "$tmp/out.c" "$f"
		log "indented $f"
	fi
done
exit $status
