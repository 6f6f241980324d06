#!/usr/bin/env bash
# Every GPU check of issue 28 in one device call of at most 9 minutes: the CUDA tests, then
# bench/inference.py on the Qwen3-1.7B layer shape in bf16, in six runs with their own time limits and
# JSON files (a run cut short keeps its finished sections): (1) prefill 4K-128K, with a profile of one more
# prefill at 8K and 128K (where the time goes: the ops that took the most); (2) a plain generate() at 16K and
# 128K with the hybrid's first-call compile time; (3) eager decode and decode under CUDA graphs at 16K and
# 128K, batch 1 (each graph row records its graph, break and skipped-CUDA-graph counts); (4) eager decode at
# batch 8, 128K, and the largest batch whose cache fits at 128K; (5) op counts; (6) the host's time per eager
# decode step and per 64-token prompt at widths too narrow to count (what bounds eager decode on a GPU, and a
# prefill wherever its kernels take less).
#
# Usage:  bench/gpu.sh OUT [extra bench/inference.py options]
# On the device (torch 2.11, transformers 5.17, triton, no fla, no network), with fla's two wheels carried:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform any -d .whl/wheels flash-linear-attention==0.6.0 fla-core==0.6.0 \
#     einops   (fla's one dependency the image may lack; `pip show fla-core` lists them)
#   run(carry=[".whl/wheels"], timeout_s=570, command="bench/gpu.sh $OUT/gpu 2>&1 | tee $OUT/gpu.log")
# On a CPU (what the test runs, tiny sizes):  DEVICE=cpu bench/gpu.sh out/ --layers 1 --prefill 256 ...
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n '2,18p' "$0" >&2
    exit 2
fi
mkdir -p "$1"
OUT=$(realpath "$1")
shift
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
if compgen -G ".whl/wheels/*.whl" > /dev/null && ! "$PY" -c "import fla" 2> /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/wheels/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ "$DEVICE" = cuda ]; then  # without fla the hybrid runs its PyTorch path: say so, do not measure it silently
    "$PY" -c "import fla.ops.gated_delta_rule, fla.modules.causal_conv1d, importlib.metadata as m; print('fla-core', m.version('fla-core'))" \
        | tee "$OUT/fla.txt" || { echo "fla does not import: carry its wheels (see the top of this file)" >&2; exit 1; }
fi
"$PY" -c "import torch, transformers, platform; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'device', torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor())" | tee "$OUT/environment.txt"

BENCH=("$PY" bench/inference.py --device "$DEVICE" --models teacher,hydrahead-7:1,all-gdn)
if [ "$DEVICE" = cuda ]; then
    export TRITON_PRINT_AUTOTUNING=1  # the log shows where fla's first calls spend their time
    # Each run its own process and time limit, the most wanted first: a run cut short keeps its finished rows, and
    # the limits add up to 525 s. Compiles are few: CUDA graphs at batch 1 only (16K, 128K), batch 8 eager.
    timeout -k 5 90 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tail -15 | tee "$OUT/cuda_tests.txt" || true
    COMMON=(--dtype bf16 --layers 4 --vocab 21760 --repeats 2)
    timeout -k 5 115 "${BENCH[@]}" "${COMMON[@]}" --sections prefill --prefill 4096,8192,16384,65536,131072 \
        --profile 8192,131072 --json "$OUT/prefill.json" "$@" 2>&1 | tee "$OUT/prefill.txt" || true
    timeout -k 5 80 "${BENCH[@]}" "${COMMON[@]}" --sections generate --generate 16384,131072 --new-tokens 64 \
        --json "$OUT/generate.json" "$@" 2>&1 | tee "$OUT/generate.txt" || true
    timeout -k 5 110 "${BENCH[@]}" "${COMMON[@]}" --sections decode --decode 16384,131072 --batch 1 --graphs \
        --json "$OUT/decode.json" "$@" 2>&1 | tee "$OUT/decode.txt" || true
    timeout -k 5 60 "${BENCH[@]}" "${COMMON[@]}" --sections decode,max-batch --decode 131072 --batch 8 \
        --max-batch 131072 --json "$OUT/max_batch.json" "$@" 2>&1 | tee "$OUT/max_batch.txt" || true
    timeout -k 5 30 "${BENCH[@]}" "${COMMON[@]}" --sections ops --json "$OUT/ops.json" "$@" 2>&1 \
        | tee "$OUT/ops.txt" || true
    timeout -k 5 40 "${BENCH[@]}" "${COMMON[@]}" --sections host --ops-layers 4 \
        --json "$OUT/host.json" "$@" 2>&1 | tee "$OUT/host.txt" || true
else  # the CPU dry run: every section once, small
    "${BENCH[@]}" --sections ops,host,floors,prefill,decode,generate,max-batch --profile --json "$OUT/inference.json" \
        "$@" 2>&1 | tee "$OUT/inference.txt"
fi
