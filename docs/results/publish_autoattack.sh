#!/usr/bin/env bash
# Re-score the cpu-regime runs with AutoAttack and the gradient-masking checks (issue 14), then publish
# the report, the robustness claims and the README's section. Needs the runs (restore the archive first:
# see the README's cpu-regime section); resumes (a run already scored with this setting is skipped).
#
#   bash docs/results/publish_autoattack.sh [RESULTS_DIR]     # default results/cpu-regime
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-results/cpu-regime}
DOCS=docs/results/cpu-regime/autoattack
# FGSM, PGD-20 and AutoAttack (standard) at 8/255 and 2/255 on 100 class-balanced test images, the checks
# on all 100 (tests/report/test_readme_results.py checks that this setting's id is EVAL_ID)
SCORING="--attack fgsm --attack pgd --attack fgsm:eps=2/255 --attack pgd:eps=2/255 --attack autoattack
         --attack autoattack:eps=2/255 --attack-examples 100"
EVAL_ID=b227a4026236
for run in "$OUT"/*/; do
  [ -f "$run/DONE" ] && rbols eval "$run" $SCORING --threads 1 --no-progress --data-root "${RBOLS_DATA:-../shared/data}" >/dev/null
done
rbols report "$OUT" --to "$DOCS" --format png --eval-id "$EVAL_ID"
rbols audit --method ols --against hard,ls --preset cpu-regime --out "$OUT" --no-run $SCORING --to "$DOCS/claims"
python docs/results/build_readme.py
