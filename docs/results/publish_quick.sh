#!/usr/bin/env bash
# Publish the quick grid from its run directories: the report (Markdown and HTML), the claims audit of OLS
# against hard labels and LS, the example plugin's audit, and docs/results/quick.md's generated section.
#
#   bash docs/results/publish_quick.sh [RESULTS_DIR]     # default results/quick (seeds 0 and 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-results/quick}
DOCS=docs/results/quick
rbols audit --method ols --against hard,ls --preset quick --seeds 0,1 --out "$OUT" --no-run --to "$DOCS/claims"
PYTHONPATH=. rbols audit --method examples.prior_smoothing:PriorSmoothing --against ls,ols --preset quick --seeds 0,1 \
  --out "$OUT" --no-run --to docs/results/audit-example
rbols report "$OUT" --to "$DOCS" --paper --format png --html --audit "$DOCS/claims" --audit docs/results/audit-example
python docs/results/build_readme.py
echo "published $(ls -d "$OUT"/*/DONE | wc -l) finished runs from $OUT"
