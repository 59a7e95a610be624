#!/usr/bin/env bash
# The latency model's prediction error on six families, eager PyTorch and ONNX Runtime, 1 thread, batch 1:
# 10 random members each, costs fitted on 4 references timed in interleaved rounds. Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=studies/experiments/latency-model
for pair in timm-mobilenetv2:studies/experiments/timm-mobilenetv2/runs/derive \
            timm-lcnet:studies/experiments/your-data-lcnet/runs/derive \
            timm-efficientnet_b0:$out/families/efficientnet_b0-smoke \
            wrn-16-2:studies/cifar10-cpu/runs/prune-fisher-k2e25 \
            timm-resnet18:$out/families/resnet18-latency-smoke \
            timm-mnasnet_050:$out/families/mnasnet_050-latency-smoke; do
  name=${pair%%:*} family=${pair#*:}
  [ -f "$out/runtimes-$name.json" ] && [ "${FORCE:-0}" = 0 ] && continue  # done: resumable
  python benchmarks/latency_model.py --family "$family" --members 10 --threads 1 --batches 1 \
    --runtimes eager,onnxruntime --rows --json "$out/runtimes-$name.json.part"
  mv "$out/runtimes-$name.json.part" "$out/runtimes-$name.json"
done
