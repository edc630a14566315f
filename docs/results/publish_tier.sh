#!/usr/bin/env bash
# Publish the cpu-regime grid from its run directories: the archive of the finished runs (weights
# included), the report, the claims audit of OLS against hard labels and LS, and the generated sections
# (docs/results/cpu-regime.md, the README's table). Run it whenever more cells are done; while the grid is
# unfinished the page marks the results interim.
#
#   bash docs/results/publish_tier.sh [RESULTS_DIR]     # default results/cpu-regime
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-results/cpu-regime}
DOCS=docs/results/cpu-regime
# the preset's scoring setting as the published runs were scored, before the gradient-masking checks (the
# audit's --no-checks gives the same; tests/training/test_matrix.py and tests/spec/test_identity.py check it)
EVAL_ID=e2907d948677
mkdir -p "$DOCS"
done_runs=$(cd "$OUT" && for d in */; do [ -f "$d/DONE" ] && echo "${d%/}"; done)
# the finished run directories only (an unfinished one resumes from scratch of its cell), in a stable order,
# with the evaluation records of this setting alone (the re-scorings have archives of their own)
others=$(mktemp)
(cd "$OUT" && find $done_runs -path '*/evals/*' ! -name "$EVAL_ID.*" > "$others")
(cd "$OUT" && tar --sort=name --owner=0 --group=0 --numeric-owner -X "$others" -cf - $done_runs) | xz -9 > "$DOCS/runs.tar.xz.tmp"
rm -f "$others"
mv "$DOCS/runs.tar.xz.tmp" "$DOCS/runs.tar.xz"
rbols report "$OUT" --to "$DOCS" --paper --format png --eval-id "$EVAL_ID" --html --audit "$DOCS/claims" --audit "$DOCS/autoattack/claims"
rbols audit --method ols --against hard,ls --preset cpu-regime --out "$OUT" --no-run --no-checks --to "$DOCS/claims"
python docs/results/build_readme.py
echo "published $(echo "$done_runs" | wc -w) finished runs from $OUT"
