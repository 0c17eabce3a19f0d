#!/usr/bin/env bash
# test/fuzz/run.sh -- build and run the frame/record fuzzer.
#
# Usage: test/fuzz/run.sh [SECONDS] [--seeds]
#
#   SECONDS   how long to fuzz (default 60); 0 only replays the corpus
#   --seeds   regenerate the seed-* files of test/fuzz/corpus/ first
#
# Builds src/seal/frame.c, src/seal/codec.c and src/seal/crypto.c with the shim
# (pg_shim.c, pg_stubs.c) and the target (fuzz_frame.c) under clang's
# -fsanitize=fuzzer,address,undefined in test/fuzz/build/, replays every
# input in test/fuzz/corpus/ (seeds and every crash found so far), then
# fuzzes for SECONDS.  New interesting inputs go to build/work/, not to
# the repository.  A crash, leak, timeout or out-of-memory is copied into
# test/fuzz/corpus/ as regression-<kind>-<hash>, and the script fails.
#
# Needs clang with its sanitizer and libFuzzer runtimes (Debian:
# clang-14 libclang-rt-14-dev), the server headers (postgresql-server-dev-15),
# libzstd-dev and libssl-dev.  As root, missing clang pieces are installed.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$here/build
corpus=$here/corpus

secs=60
seeds=0
for arg in "$@"; do
	case $arg in
		--seeds) seeds=1 ;;
		''|*[!0-9]*) echo "usage: $0 [SECONDS] [--seeds]" >&2; exit 2 ;;
		*) secs=$arg ;;
	esac
done

PG_CONFIG=${PG_CONFIG:-}
if [ -z "$PG_CONFIG" ]; then
	if [ -x /usr/lib/postgresql/15/bin/pg_config ]; then
		PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	else
		PG_CONFIG=pg_config
	fi
fi
incdir=$("$PG_CONFIG" --includedir-server)

find_clang() {
	for c in ${CC:-} clang clang-16 clang-15 clang-14; do
		if command -v "$c" >/dev/null 2>&1; then echo "$c"; return 0; fi
	done
	return 1
}

# Can this clang link a libFuzzer target with ASan and UBSan?
can_fuzz() {
	local cc=$1
	printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return 0; }\n' \
		> "$build/probe.c"
	"$cc" -fsanitize=fuzzer,address,undefined "$build/probe.c" -o "$build/probe" \
		>/dev/null 2>&1
}

mkdir -p "$build" "$build/work" "$build/artifacts" "$corpus"

CC=$(find_clang || true)
if [ -z "$CC" ] || ! can_fuzz "$CC"; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "run.sh: installing clang and its sanitizer runtimes"
		apt-get install -y clang libclang-rt-14-dev >/dev/null 2>&1 ||
			{ apt-get update >/dev/null && apt-get install -y clang libclang-rt-14-dev >/dev/null; }
		CC=$(find_clang)
	fi
	if [ -z "$CC" ] || ! can_fuzz "$CC"; then
		echo "run.sh: clang with -fsanitize=fuzzer is not available (apt-get install clang libclang-rt-14-dev)" >&2
		exit 1
	fi
fi

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-g -O1 -fno-omit-frame-pointer -std=gnu11 -Wall -Wno-unused-parameter
	-Wno-ignored-attributes -Wno-missing-field-initializers
	-I$incdir -I$root/src -I$here"
LIBS="-lzstd -lcrypto"

echo "run.sh: building with $CC in $build"
objs=()
for src in "$root/src/seal/frame.c" "$root/src/seal/codec.c" "$root/src/seal/crypto.c" \
	"$here/pg_shim.c" "$here/pg_stubs.c"; do
	obj=$build/$(basename "$src" .c).o
	"$CC" $CFLAGS $SAN -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
	objs+=("$obj")
done
"$CC" $CFLAGS $SAN -fsanitize=fuzzer-no-link -c "$here/fuzz_frame.c" \
	-o "$build/fuzz_frame.o"
"$CC" $CFLAGS $SAN -c "$here/gen_seeds.c" -o "$build/gen_seeds.o"

# Link; functions the code under test came to need since pg_stubs.c was
# written get an aborting stub generated here, with a warning.
link() {
	"$CC" $SAN -fsanitize=fuzzer "$build/fuzz_frame.o" "${objs[@]}" "$@" \
		$LIBS -o "$build/fuzz_frame" 2> "$build/link.log"
}
if ! link; then
	missing=$(sed -n "s/.*undefined reference to \`\([A-Za-z_][A-Za-z0-9_]*\)'.*/\1/p" \
		"$build/link.log" | sort -u)
	if [ -z "$missing" ]; then cat "$build/link.log" >&2; exit 1; fi
	echo "run.sh: warning: generating stubs for: $(echo $missing)" >&2
	{
		echo '#include <stdio.h>'
		echo '#include <stdlib.h>'
		for m in $missing; do
			echo "void $m(void); void $m(void) { fprintf(stderr, \"stub $m called\\n\"); abort(); }"
		done
	} > "$build/auto_stubs.c"
	"$CC" -c "$build/auto_stubs.c" -o "$build/auto_stubs.o"
	link "$build/auto_stubs.o" || { cat "$build/link.log" >&2; exit 1; }
	objs+=("$build/auto_stubs.o")
fi
"$CC" $SAN "$build/gen_seeds.o" "${objs[@]}" $LIBS -o "$build/gen_seeds"

if [ "$seeds" = 1 ]; then
	rm -f "$corpus"/seed-*
	"$build/gen_seeds" "$corpus"
	echo "run.sh: wrote $(ls "$corpus"/seed-* | wc -l) seeds to $corpus"
fi

# Keep every crash as a regression case in the corpus.
save_artifacts() {
	local n=0 f kind
	for f in "$build"/artifacts/*; do
		[ -e "$f" ] || continue
		kind=$(basename "$f" | sed 's/-.*//')
		cp "$f" "$corpus/regression-$kind-$(sha1sum "$f" | cut -c1-16)"
		echo "run.sh: saved $(basename "$f") as regression-$kind-... in $corpus" >&2
		rm -f "$f"
		n=$((n + 1))
	done
	return $n
}

opts=(-rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -max_len=65536
	-artifact_prefix="$build/artifacts/" -print_final_stats=1)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "run.sh: replaying $(ls "$corpus" | wc -l) corpus inputs"
if ! "$build/fuzz_frame" "${opts[@]}" -runs=0 "$corpus" > "$build/replay.log" 2>&1; then
	tail -n 40 "$build/replay.log" >&2
	save_artifacts || true
	echo "run.sh: FAILED: a corpus input crashes" >&2
	exit 1
fi

if [ "$secs" = 0 ]; then
	echo "run.sh: corpus replayed, no crash"
	exit 0
fi

echo "run.sh: fuzzing for $secs s"
status=0
"$build/fuzz_frame" "${opts[@]}" -max_total_time="$secs" \
	"$build/work" "$corpus" > "$build/fuzz.log" 2>&1 || status=$?

execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$build/fuzz.log" | tail -n 1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$build/fuzz.log" | tail -n 1)
cov=$(grep -o 'cov: [0-9]*' "$build/fuzz.log" | tail -n 1 || true)
saved=0
save_artifacts || saved=$?
echo "run.sh: ${execs:-?} executions (${rate:-?}/s), ${cov:-cov: ?}, $saved crash(es)"
if [ "$status" != 0 ] || [ "$saved" != 0 ]; then
	grep -B2 -A30 -m1 'ERROR: \|runtime error\|fuzz_frame: \|deadly signal' "$build/fuzz.log" >&2 || tail -n 40 "$build/fuzz.log" >&2
	echo "run.sh: FAILED (see $build/fuzz.log)" >&2
	exit 1
fi
echo "1 passed, 0 failed"
