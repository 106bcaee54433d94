#!/usr/bin/env bash
# The GPU figures of docs/performance.md, in one script that runs in under 8 minutes on one H100/H200-class
# GPU with JAX (0.10 to 0.12, CUDA), flax, optax, orbax-checkpoint, PyTorch, torchvision and timm; neither
# tensorflow-datasets nor grain is needed (MNIST is read straight from its official files, and the run holds
# it on the device).
#
#   experiments/gpu_check.sh [OUT]        # OUT: where the JSON and logs go (default /tmp/gpu_check)
#
# 1. Training throughput in bfloat16, ours (one jitted train step, the state donated) against the same
#    network from torchvision/timm with AMP and channels-last on the same card, batches resident on the
#    device, the windows of the two interleaved: ResNet-50 (batch 256), ViT-S/16 and ConvNeXt-T (batch 128).
#    MFU: 3 x forward FLOPs (2 x multiply-adds) per image x images/s / the card's peak (PEAK_TFLOPS, default
#    989: H100/H200 SXM dense bfloat16).
# 2. The README's main job (simple_cnn on MNIST, 5 epochs), when CNN_DATA_DIR holds mnist/ (official files).
#
# SMOKE=1 shrinks every part to seconds (checks the script itself on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/gpu_check}"
mkdir -p "$OUT"
PEAK="${PEAK_TFLOPS:-989}"
if [ "${SMOKE:-0}" = "1" ]; then
  SIZES=(--image-size 32) ; WINDOWS=(--windows 1 --steps-per-window 1 --warmup-steps 1); BIG=4; SMALL=4; EPOCHS=0.01
else
  SIZES=() ; WINDOWS=(--windows 5 --steps-per-window 20 --warmup-steps 3); BIG=256; SMALL=128; EPOCHS=5
fi
python - <<'EOF' | tee "$OUT/machine.txt"
import jax, platform
print("jax", jax.__version__, "| backend", jax.default_backend(), "|", [d.device_kind for d in jax.devices()],
      "|", platform.platform())
EOF

python -m experiments.benchmark --models resnet50 --batch-sizes "$BIG" --dtype bfloat16 --reference torch \
  --peak-tflops "$PEAK" "${SIZES[@]}" "${WINDOWS[@]}" --json "$OUT/train.json" 2> "$OUT/resnet50.log" | tee "$OUT/resnet50.txt"
python -m experiments.benchmark --models vit_small_patch16_224,convnext_tiny --batch-sizes "$SMALL" --dtype bfloat16 \
  --reference torch --peak-tflops "$PEAK" "${SIZES[@]}" "${WINDOWS[@]}" --json "$OUT/train.json" 2> "$OUT/vit_convnext.log" \
  | tee "$OUT/vit_convnext.txt"

if [ -f "${CNN_DATA_DIR:-}/mnist/train-images-idx3-ubyte.gz" ]; then
  rm -rf "$OUT/mnist"
  start=$(date +%s.%N)
  python -m experiments.train --config experiments/configs/mnist_simple_cnn.py --workdir "$OUT/mnist" \
    --config.training.epochs="$EPOCHS" --config.training.progress_bar=False > "$OUT/mnist.json" 2> "$OUT/mnist.log"
  end=$(date +%s.%N)
  python - "$OUT" "$start" "$end" <<'EOF'
import json, sys
out, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
results = json.loads(open(f"{out}/mnist.json").read().strip().splitlines()[-1])
print(f"main job: {results['test_accuracy']:.4f} test accuracy, {results['train_seconds']:.1f} s of training, "
      f"{end - start:.1f} s wall, {results['steps']} steps")
EOF
else
  echo "main job: skipped (CNN_DATA_DIR does not hold mnist/train-images-idx3-ubyte.gz)"
fi
