#!/usr/bin/env bash
# Restore a published grid's run directories with every evaluation record published for them, so that
# `rbols matrix`, `rbols report` and `rbols audit` on that preset find them done and scored:
#
#   bash docs/results/restore.sh cpu-regime [DEST]     # default DEST: results/<name>
#
# It unpacks docs/results/<name>/runs.tar.xz (and runs-*.tar.xz: runs published apart, e.g. the confirmation
# seeds trained so far), then each evaluation archive of that grid (evals*.tar.xz, e.g.
# cpu-regime/autoattack/evals.tar.xz: the preset's own scoring, with AutoAttack and the checks) over them.
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME=${1:?give the grid: cpu-regime, quick or noisy-val}
DEST=${2:-results/$NAME}
SRC=docs/results/$NAME
[ -f "$SRC/runs.tar.xz" ] || { echo "no published runs for $NAME ($SRC/runs.tar.xz)" >&2; exit 2; }
mkdir -p "$DEST"
for archive in "$SRC"/runs.tar.xz "$SRC"/runs-*.tar.xz; do [ -f "$archive" ] && tar -xJf "$archive" -C "$DEST"; done
find "$SRC" -name 'evals*.tar.xz' | sort | while read -r archive; do tar -xJf "$archive" -C "$DEST"; done
echo "restored $(find "$DEST" -mindepth 2 -maxdepth 2 -name DONE | wc -l) finished runs of $NAME in $DEST"
