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
# at 1/255, where these models are off the floor, for hard labels, LS and OLS (the same 100 images)
SCORING_1="--attack fgsm:eps=1/255 --attack pgd:eps=1/255 --attack autoattack:eps=1/255 --no-checks --attack-examples 100"
EVAL_ID_1=dcb8014774bf
DATA="--threads 1 --no-progress --data-root ${RBOLS_DATA:-../shared/data}"
for run in "$OUT"/*/; do
  [ -f "$run/DONE" ] || continue
  rbols eval "$run" $SCORING $DATA >/dev/null
  if grep -Eq '"method": "(hard|ls|ols)"' "$run/spec.json"; then rbols eval "$run" $SCORING_1 $DATA >/dev/null; fi
done
# the evaluation records themselves (figures, checks, per-image outcomes, provenance): small, kept beside the report
(cd "$OUT" && tar --sort=name --owner=0 --group=0 --numeric-owner -cf - */evals/$EVAL_ID.* */evals/$EVAL_ID_1.*) \
  | xz -9 > "$DOCS/evals.tar.xz"
rbols report "$OUT" --to "$DOCS" --format png --eval-id "$EVAL_ID"
rbols report "$OUT" --to "$DOCS/eps1" --format png --eval-id "$EVAL_ID_1"
rbols audit --method ols --against hard,ls --preset cpu-regime --out "$OUT" --no-run $SCORING --to "$DOCS/claims"
python docs/results/build_readme.py
