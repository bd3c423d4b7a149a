#!/usr/bin/env bash
# Run HERE, on the CPU machine, before a session that is lent a GPU (`device` tool): packs into
# .gpu/ (git-ignored, carried to the GPU machine, which reaches no network) what that machine
# lacks — wheels for hydra/omegaconf/bm25s and the transformers pinned here (it has 5.x), MiniLM-L6
# in bf16, xz-packed (32 MB; fp32 is 91 MB, over the 64 MiB carry limit; loaded back as fp32), and
# the SQuAD files xz-packed. Then: device run `bash scripts/gpu_suite.sh` with carry [".gpu"].
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/data/squad .gpu/minilm
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl hydra-core==1.3.2 omegaconf==2.3.0 bm25s==0.3.16 transformers==4.57.6 \
  tokenizers==0.22.1 huggingface-hub==0.36.0
$PY -m pip wheel -q --no-deps -w .gpu/whl antlr4-python3-runtime==4.9.3   # sdist only: build it here
$PY - <<'EOF'
import torch
from transformers import AutoModel, AutoTokenizer
from metaqa.models.factory import packaged_model_dir
src = packaged_model_dir()
AutoModel.from_pretrained(src, torch_dtype=torch.bfloat16).save_pretrained(".gpu/minilm")
AutoTokenizer.from_pretrained(src).save_pretrained(".gpu/minilm")
EOF
xz -T2 -6 .gpu/minilm/model.safetensors   # bf16 packs to ~32 MB
for f in train-v1.1.json dev-v1.1.json dev-v2.0.json; do xz -T2 -9 -c ../shared/data/squad/$f > .gpu/data/squad/$f.xz; done
mkdir -p .gpu/data/devrev_sample && xz -9 -c ../shared/data/devrev_sample/df_sample.csv > .gpu/data/devrev_sample/df_sample.csv.xz
du -sh .gpu
