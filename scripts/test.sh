#!/usr/bin/env bash
#
# Run every data_embassy test: a -Werror build, the META.json version check,
# a pgindent check (scripts/pgindent.sh --check), bench/run.sh
# --check-install, a bounded run of the frame and record fuzzer
# (test/fuzz/), the pg_regress suite (sql/, expected/) and the isolation
# specs (specs/, expected/) on temporary instances, then the TAP suite
# (test/t/) with its own clusters.
# Installs what is missing on Debian 12, builds and installs the extension,
# and runs the clusters as a non-root user.
#
#	scripts/test.sh						everything
#	scripts/test.sh test/t/010_stream.pl	one TAP test (and the regress suite)
#	DE_FUZZ_SECONDS=600 scripts/test.sh		fuzz longer (0: replay the corpus only)
#
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/common.sh"

DE_EXTRA_PACKAGES=$DE_TEST_PACKAGES de_install_deps

# The test command is the strict build: a compiler warning fails it (the
# Makefile rebuilds every object when PG_CFLAGS changes).
export PG_CFLAGS="${PG_CFLAGS:+$PG_CFLAGS }-Werror"
de_build_install "$top"

de_log "checking META.json against data_embassy.control"
make -C "$top" -s check-meta PG_CONFIG="$PG_CONFIG"

de_log "checking that the sources are pgindent-clean"
bash "$top/scripts/pgindent.sh" --check

de_log "checking what bench/run.sh needs"
bash "$top/bench/run.sh" --check-install

work=$(de_private_copy "$top")
trap 'rm -rf "$work"' EXIT
de_log "running tests in $work as $(de_run_user)"

prove_tests=""
if [ $# -gt 0 ]; then prove_tests="PROVE_TESTS=$*"; fi

de_log "fuzzing frames and records for ${DE_FUZZ_SECONDS:-60} s"
de_as_user bash "$work/test/fuzz/run.sh" "${DE_FUZZ_SECONDS:-60}"

status=0
de_as_user make -C "$work" -s installcheck PG_CONFIG="$PG_CONFIG" $prove_tests || status=$?
if [ $status -ne 0 ]; then
	for f in "$work/regression.diffs" "$work/output_iso/regression.diffs" \
		"$work"/tmp_check/log/regress_log_*; do
		[ -f "$f" ] || continue
		echo "----- $f (last 80 lines)"
		tail -n 80 "$f"
	done
	exit $status
fi
