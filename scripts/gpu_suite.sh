#!/usr/bin/env bash
# Run ON the lent GPU machine (`device` tool, carry [".gpu"] made by scripts/gpu_prepare.sh), e.g.
#   run(command="bash scripts/gpu_suite.sh", carry=[".gpu"], timeout_s=600)
# The two reference readers (bf16, batch 64, 2 epochs) into outputs/readers/, scored on the official
# dev sets, their figures in docs/results/bench_reader.json, the int8 ONNX readers (≤ 16 MB each) and
# the figures copied to $OUT. Budget: ≤ 12 minutes on one H100/H200 (the device tool allows 15 per
# session, start-up included). GPU_SUITE_SMOKE=1 runs the same chain on 256 questions (on CPU too).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_suite_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled HF_HUB_OFFLINE=1
PY=${PY:-python3}
if [ -d .gpu/whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
DATA=$PWD/.gpu/data
for f in $(find .gpu -name '*.xz'); do [ -f "${f%.xz}" ] || xz -dc "$f" > "${f%.xz}"; done
export METAQA_SHARED_DATA=$DATA
MODEL=(); [ -d .gpu/minilm ] && MODEL=(--pretrained "$PWD/.gpu/minilm")
SMOKE=(); [ "${GPU_SUITE_SMOKE:-0}" = 1 ] && SMOKE=(--limit-train 256 --limit-eval 200 --val-every 4 --val-questions 50)
TRAINER=$($PY -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt" || true
time $PY scripts/bench_reader.py --reference minilm_squad2 minilm_squad1 --trainer "$TRAINER" --batch-size 64 \
  --epochs 2 --lr 1e-4 --val-every 1000 "${MODEL[@]}" "${SMOKE[@]}" 2>&1 | tee "$OUT/bench_reader.log" | grep -v Warning
for pair in minilm_squad2:squad1_hardneg minilm_squad1:squad1_all; do   # reader:its prep data (gate on its dev split)
  name=${pair%%:*}; dir=$(ls -d outputs/readers/${name}* 2>/dev/null | head -1) || continue
  $PY -m metaqa.cli export model_dir="$dir/reader" export=int8_dynamic export.quantization.per_channel=true \
    paths.shared_data="$DATA" export.parity.source="outputs/data/${pair##*:}/dev" \
    hydra.run.dir="$dir/export_int8" 2>&1 | tail -3 || true
  [ -f "$dir/export_int8/onnx/model.onnx" ] && cp "$dir/export_int8/onnx/model.onnx" "$OUT/${name}_int8.onnx"
done
cp docs/results/bench_reader*.json "$OUT/" 2>/dev/null || true
ls -la "$OUT"
