#!/usr/bin/env bash
# Run ON the lent GPU machine (`device` tool, carry [".gpu"] made by scripts/gpu_prepare.sh), e.g.
#   run(command="bash scripts/gpu_suite.sh", carry=[".gpu"], timeout_s=600)
# The two reference readers (bf16, batch 64, 2 epochs) into outputs/readers/, scored on the official
# dev sets, their figures in docs/results/bench_reader.json; the readers packed into $OUT (below).
# Export and the int8 gate run back on the CPU machine, where the reader serves. Budget: ≤ 12 minutes on one H100/H200 (the device tool allows 15 per
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
# The readers come back as bf16 save_pretrained dirs, tar.xz-packed and split into 15 MB parts ($OUT
# takes 8 files of <= 16 MiB, 64 MiB in all: minilm_squad2 first). Here, on the CPU machine:
#   cat <files_at>/minilm_squad2.tar.xz.part* | tar -xJ -C outputs/readers/minilm_squad2/
# then export / gate on the CPU that serves (metaqa export model_dir=outputs/readers/minilm_squad2/reader ...).
suffix=""; [ "${GPU_SUITE_SMOKE:-0}" = 1 ] && suffix="_first256"
for name in minilm_squad2 minilm_squad1; do
  dir=outputs/readers/$name$suffix; [ -d "$dir/reader" ] || continue
  $PY - "$dir/reader" "/tmp/pack/$name/reader" <<'EOF_PY'
import sys, torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer
src, dst = sys.argv[1], sys.argv[2]
AutoModelForQuestionAnswering.from_pretrained(src).to(torch.bfloat16).save_pretrained(dst)
AutoTokenizer.from_pretrained(src).save_pretrained(dst)
EOF_PY
  cp "$dir"/summary.json "$dir"/learning_curve.json "/tmp/pack/$name/" 2>/dev/null || true
  tar -C "/tmp/pack/$name" -cf - . | xz -T0 -6 | split -b 15M -d - "$OUT/$name.tar.xz.part"
done
cp docs/results/bench_reader*.json "$OUT/" 2>/dev/null || true
ls -la "$OUT"
