#!/usr/bin/env bash
# Re-score the cpu-regime runs with FGSM, PGD-20 and AutoAttack at every budget, the gradient-masking checks
# and the transfer check (issues 14 and 24), then publish the report, the robustness claims and their
# section of docs/results/cpu-regime.md. Needs the runs (restore the archive first: see that page); resumes (a run
# already scored with this setting is skipped, and only its missing transfer check is added).
#
#   bash docs/results/publish_autoattack.sh [RESULTS_DIR]     # default results/cpu-regime
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-results/cpu-regime}
DOCS=docs/results/cpu-regime/autoattack
# FGSM, PGD-20 (step eps/4) and AutoAttack (standard) at 8/255, 2/255 and 1/255 on 100 class-balanced test
# images; the checks on all 100; the transfer check from each run's hard-label cell (tests/report/
# test_readme_results.py checks that this setting's id is EVAL_ID)
SCORING="--attack fgsm --attack pgd --attack autoattack --attack fgsm:eps=2/255 --attack pgd:eps=2/255
         --attack autoattack:eps=2/255 --attack fgsm:eps=1/255 --attack pgd:eps=1/255 --attack autoattack:eps=1/255
         --attack-examples 100"
EVAL_ID=5941e1bbdfab
# the settings it replaces, whose PGD-20 stepped 2/255 at every budget (kept in the runs' evals/, restored from
# evals-step-2-255.tar.xz): compared run by run in step_rule.csv
OLD_EVAL_ID=b227a4026236
OLD_EVAL_ID_1=dcb8014774bf
export SCORING OUT
export DATA="--threads 1 --no-progress --data-root ${RBOLS_DATA:-../shared/data}"
# two single-thread workers, one per core
ls -d "$OUT"/*/ | while read -r run; do [ -f "$run/DONE" ] && echo "$run"; done \
  | xargs -P 2 -I{} sh -c 'rbols eval "$1" $SCORING $DATA >/dev/null' _ {}
# the evaluation records themselves (figures, checks, transfer add-ons, per-image outcomes, provenance)
(cd "$OUT" && tar --sort=name --owner=0 --group=0 --numeric-owner -cf - */evals/$EVAL_ID.*) | xz -9 > "$DOCS/evals.tar.xz"
python docs/results/step_rule.py "$OUT" "$EVAL_ID" "$OLD_EVAL_ID" "$OLD_EVAL_ID_1" > "$DOCS/step_rule.csv"
rbols report "$OUT" --to "$DOCS" --format png --eval-id "$EVAL_ID"
rbols audit --method ols --against hard,ls --preset cpu-regime --out "$OUT" --no-run $SCORING --to "$DOCS/claims"
python docs/results/build_readme.py
