#!/usr/bin/env bash
#
# The data_embassy demo: a register cluster and an embassy cluster on
# loopback, a sample population register replicated live, the lag view,
# and at the end a comparison of both sites' contents.
#
# Installs what is missing on Debian 12, builds and installs the extension,
# and runs the clusters as a non-root user in a temporary directory that is
# removed at the end (set KEEP=1 to keep it; it then says how to stop it).
#
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/common.sh"

de_install_deps
de_build_install "$top"

work=$(de_private_copy "$top")
de_log "demo clusters live in $work, run as $(de_run_user)"
status=0
de_as_user env KEEP="${KEEP:-0}" bash "$work/demo/sites.sh" "$work" || status=$?
if [ "${KEEP:-0}" != 1 ]; then rm -rf "$work"; fi
exit $status
