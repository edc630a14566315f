#!/usr/bin/env bash
# Publish the cpu-regime grid from its run directories: the archive of the finished runs (weights and every
# evaluation record included, no path of this machine), the report, the plan and the confirmatory audit of OLS
# against hard labels and LS (issue 26), and the generated sections (docs/results/cpu-regime.md, the README's
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
# The confirmation seeds' finished run directories (seeds after the pilot's 0 and 1; an unfinished one resumes
# from scratch of its cell) with all their evaluation records and final weights, spec.json naming the data root as
# the commands give it (portable_copy.py), in a stable order, as runs-confirm.tar.xz; not the oracle epoch's
# weights (model_oracle.pt: only `--select oracle` re-scoring reads them, and they would double the archive). The
# pilot stays as published in runs.tar.xz, its scoring at $EVAL_ID in autoattack/evals.tar.xz (a 30 MB archive
# is not committed again for nothing); restore.sh unpacks all three.
copy=$(mktemp -d)
python docs/results/portable_copy.py "$OUT" "$copy" ../shared/data
confirm=$(cd "$copy" && for d in */; do
  python -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["spec"]["seed"] < 2)' "$d/spec.json" && echo "$d"
done)
(cd "$copy" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --exclude='*/model_oracle.pt' \
  -cf - $confirm) | xz -9 > "$DOCS/runs-confirm.tar.xz.tmp"
mv "$DOCS/runs-confirm.tar.xz.tmp" "$DOCS/runs-confirm.tar.xz"
n=$(echo "$confirm" | wc -w)
# the pilot seeds' runs added after the pilot was published (issue 28: gls, elr, the CIFAR-10N cells), likewise
published=$(tar -tJf "$DOCS/runs.tar.xz" | cut -d/ -f1 | sort -u)
added=$(cd "$copy" && for d in */; do
  python -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["spec"]["seed"] >= 2)' "$d/spec.json" &&
    ! grep -qx "${d%/}" <<<"$published" && echo "$d"
done; true)
if [ -n "$added" ]; then
  (cd "$copy" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --exclude='*/model_oracle.pt' \
    -cf - $added) | xz -9 > "$DOCS/runs-added.tar.xz.tmp"
  mv "$DOCS/runs-added.tar.xz.tmp" "$DOCS/runs-added.tar.xz"
fi
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
# what confirming them would take: the confirmation seeds each claim needs (the plan, not run)
rbols audit --method gls --against hard,ls,gls:rate=0.2 --preset cpu-regime --out "$OUT" --no-run --plan \
  --to "$DOCS/gls-plan" >/dev/null
rbols audit --method elr --against hard,ls --preset cpu-regime --out "$OUT" --no-run --plan --to "$DOCS/elr-plan" >/dev/null
python docs/results/added_tables.py "$OUT" "$DOCS"
rbols report "$OUT" --to "$DOCS" --paper --format png --eval-id "$EVAL_ID" --html --audit "$DOCS/confirm" \
  --audit "$DOCS/claims" --audit "$DOCS/gls-claims" \
  --audit "$DOCS/gls-warmup-claims" --audit "$DOCS/elr-claims"
python docs/results/build_readme.py
echo "published $n confirmation runs and $(echo "$added" | wc -w) added pilot-seed runs from $OUT (the pilot: runs.tar.xz, as before)"
