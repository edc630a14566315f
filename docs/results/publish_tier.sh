#!/usr/bin/env bash
# Publish the cpu-regime grid from its run directories: the archive of the finished runs (weights and every
# evaluation record included, no path of this machine), the report, the plan and the confirmatory audit of OLS
# against hard labels and LS (issue 26) and of ELR, and the generated sections (docs/results/cpu-regime.md, the README's
# table). Run it when the pilot (seeds 0 and 1 of every method) and the confirmation seeds the plan asks for are
# done; until then the confirmatory audit says which claims wait for seeds.
#
#   bash docs/results/publish_tier.sh [RESULTS_DIR] [DOCS_DIR]   # defaults results/cpu-regime, docs/results/cpu-regime
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-results/cpu-regime}
DOCS=${2:-docs/results/cpu-regime}
# the preset's scoring setting: FGSM, PGD-20 (step eps/4) and AutoAttack at 8/255, 2/255 and 1/255 on 100 test
# images, the gradient-masking checks and the transfer check (tests/training/test_matrix.py checks the id)
EVAL_ID=5941e1bbdfab
AUDIT="rbols audit --method ols --against hard,ls --preset cpu-regime --out $OUT --no-run"
mkdir -p "$DOCS"
# The finished run directories (weights and every evaluation record included; spec.json naming the data root as the
# commands give it: portable_copy.py), in a stable order, without the oracle epoch's weights (model_oracle.pt: only
# `--select oracle` re-scoring reads them, and they would double the archives). Published archives stay as they
# are (a 30 MB archive is not committed again for nothing): runs.tar.xz (the pilot, seeds 0 and 1, its scoring at
# $EVAL_ID in autoattack/evals.tar.xz) and runs-confirm.tar.xz (OLS's confirmation seeds, issue 26); the runs
# finished after them go to runs-added.tar.xz (pilot seeds: issue 28's gls, elr and CIFAR-10N cells) and
# runs-confirm-added.tar.xz (confirmation seeds: ELR's and its baselines'). restore.sh unpacks them all.
copy=$(mktemp -d)
python docs/results/portable_copy.py "$OUT" "$copy" ../shared/data
archive() {  # archive NAME DIRS...: the run directories DIRS of the copy as $DOCS/NAME
  local name=$1; shift
  (cd "$copy" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --exclude='*/model_oracle.pt' \
    -cf - "$@") | xz -9 > "$DOCS/$name.tmp"
  mv "$DOCS/$name.tmp" "$DOCS/$name"
}
# "<run directory> pilot|confirmation" for every run of the copy (seeds 0 and 1 are the pilot's), read once
kinds=$(cd "$copy" && python -c 'import glob, json, os
for f in sorted(glob.glob("*/spec.json")):
    print(os.path.dirname(f), "pilot" if json.load(open(f))["spec"]["seed"] < 2 else "confirmation")')
not_in() {  # not_in ARCHIVE pilot|confirmation: the copy's run directories of those seeds that ARCHIVE lacks
  tar -tJf "$DOCS/$1" | cut -d/ -f1 | sort -u > "$copy/.published"
  awk -v kind="$2" '$2 == kind {print $1}' <<<"$kinds" | grep -vxF -f "$copy/.published" || true
}
added=$(not_in runs.tar.xz pilot)
confirm_added=$(not_in runs-confirm.tar.xz confirmation)
[ -z "$added" ] || archive runs-added.tar.xz $added
[ -z "$confirm_added" ] || archive runs-confirm-added.tar.xz $confirm_added
rm -rf "$copy"
# the pilot's plan, committed before the confirmation seeds were trained, must be what the pilot still gives;
# then the claims decided on the confirmation seeds alone, and the pilot's own exploratory audit
replan=$(mktemp -d)
$AUDIT --plan --to "$replan" >/dev/null
cmp "$replan/plan.csv" "$DOCS/plan/plan.csv" || { echo "the pilot no longer gives the committed plan" >&2; exit 1; }
rm -rf "$replan"
$AUDIT --confirm --to "$DOCS/confirm"
$AUDIT --seeds 0,1 --to "$DOCS/claims"
# the methods issue 28 added, audited on the pilot seeds like OLS (exploratory), and their per-run tables
rbols audit --method gls --against hard,ls,gls:rate=0.2 --preset cpu-regime --out "$OUT" --no-run --seeds 0,1 \
  --to "$DOCS/gls-claims"
rbols audit --method gls:rate=-0.2,warmup=20 --against hard,ls,gls:rate=0.2 --preset cpu-regime --out "$OUT" --no-run \
  --seeds 0,1 --to "$DOCS/gls-warmup-claims"
rbols audit --method elr --against hard,ls --preset cpu-regime --out "$OUT" --no-run --seeds 0,1 --to "$DOCS/elr-claims"
# what confirming them would take: the confirmation seeds each claim needs (the plan; NLS's not trained)
rbols audit --method gls --against hard,ls,gls:rate=0.2 --preset cpu-regime --out "$OUT" --no-run --plan \
  --to "$DOCS/gls-plan" >/dev/null
# ELR's plan, committed before its confirmation seeds were trained, must be what the pilot still gives; then its
# claims decided on those seeds alone (trained by the same audit command with --confirm and without --no-run)
replan=$(mktemp -d)
rbols audit --method elr --against hard,ls --preset cpu-regime --out "$OUT" --no-run --plan --to "$replan" >/dev/null
cmp "$replan/plan.csv" "$DOCS/elr-plan/plan.csv" || { echo "the pilot no longer gives ELR's committed plan" >&2; exit 1; }
rm -rf "$replan"
rbols audit --method elr --against hard,ls --preset cpu-regime --out "$OUT" --no-run --confirm --to "$DOCS/elr-confirm"
python docs/results/added_tables.py "$OUT" "$DOCS"
rbols report "$OUT" --to "$DOCS" --paper --format png --eval-id "$EVAL_ID" --html --audit "$DOCS/confirm" \
  --audit "$DOCS/claims" --audit "$DOCS/gls-claims" \
  --audit "$DOCS/gls-warmup-claims" --audit "$DOCS/elr-claims" --audit "$DOCS/elr-confirm"
python docs/results/build_readme.py
echo "published $(echo "$added" | wc -w) added pilot-seed runs and $(echo "$confirm_added" | wc -w) added confirmation runs from $OUT (runs.tar.xz and runs-confirm.tar.xz as before)"
