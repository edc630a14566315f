#!/usr/bin/env bash
# The suite on a GPU, in one go (about 10 minutes on one recent GPU): the paper's model for two epochs on
# the whole CIFAR-10, in fp32 and with bf16 autocast (--amp), each scored with PGD-20 on 1,000 test
# images; then benchmarks/gpu_check.py checks that every record is complete and prints images/s and the
# ratio to a bare loop of the same model on the same device; then benchmarks/device_check.py checks the
# batches and PGD starts against the CPU's and a --deterministic kill-and-resume bit for bit, and measures
# 1, 2 and 4 workers packed on the GPU in fp32, TF32 and bf16 (device_check.json and .md under $OUT).
#
#   RBOLS_DATA=../shared/data bash benchmarks/gpu_check.sh
#
# Every size can be changed through the environment; the test suite runs the CPU path with tiny ones:
#   DEVICE=cpu MODEL=resnet8 SUBSET=500 ATTACK_EXAMPLES=20 BARE_STEPS=3 DEVICE_CHECK="--models resnet8
#     --workers 1,2 --steps 3 --batch 32 --resume-model resnet8 --resume-subset 300 --resume-epochs 6" \
#     bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-resnet56b}
EPOCHS=${EPOCHS:-2}
SUBSET=${SUBSET:-0}            # 0: the whole training set
ATTACK_EXAMPLES=${ATTACK_EXAMPLES:-1000}
BARE_STEPS=${BARE_STEPS:-50}
OUT=${OUT:-gpu_check_runs}
DEVICE_CHECK=${DEVICE_CHECK:-}  # benchmarks/device_check.py's options (default: its GPU sizes)
PYTHON=${PYTHON:-python}
echo "gpu_check: $MODEL, $EPOCHS epochs, train subset $SUBSET (0 = all), PGD-20 on $ATTACK_EXAMPLES images, device $DEVICE, out $OUT"
for amp in --no-amp --amp; do
  # one test pass, at the last epoch: epoch 1's seconds in epochs.csv are training alone
  "$PYTHON" -m robustbench_ols run --dataset cifar10 --model "$MODEL" --method hard --noise symmetric:0.4 \
    --epochs "$EPOCHS" --milestones "" --train-subset "$SUBSET" --test-every "$EPOCHS" $amp \
    --device "$DEVICE" --attack pgd --attack-examples "$ATTACK_EXAMPLES" --no-progress --out "$OUT"
done
"$PYTHON" benchmarks/gpu_check.py --out "$OUT" --device "$DEVICE" --model "$MODEL" --epochs "$EPOCHS" \
  --bare-steps "$BARE_STEPS"
"$PYTHON" benchmarks/device_check.py --device "$DEVICE" --out "$OUT/device_check" $DEVICE_CHECK
