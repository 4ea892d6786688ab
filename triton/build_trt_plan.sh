#!/usr/bin/env bash
# Build a TensorRT plan of the network for GPU hosts: model_repository/a2f_net/N/model.plan,
# N the version A2F_MODEL_VERSION names (as the renderer reads it; unset or 0: the highest).
#
# A plan is tied to the GPU model and the TensorRT version, so build it on the serving host
# with the TensorRT release of Triton 24.10 (TensorRT 10.5), e.g. inside
#   docker run --rm --gpus all -v "$PWD:/w" -w /w nvcr.io/nvidia/tensorrt:24.10-py3 \
#     triton/build_trt_plan.sh
# Once model.plan exists, `repository.py --flavour auto` serves it (platform tensorrt_plan)
# wherever the tensorrt backend is installed, when that version is the one served. Plans are
# build outputs: never commit them.
#
# Usage: triton/build_trt_plan.sh [ONNX] [PLAN]
# Env:   A2F_MODEL_VERSION (which version's ONNX when none is given; 0: the highest),
#        MIN_BATCH (1), OPT_BATCH (128), MAX_BATCH (1024, = max_batch_size in config.pbtxt),
#        PRECISION (fp16 | fp32; default fp16), WORKSPACE_MIB (1024).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
# Without ONNX: the served version's, as the renderer itself picks it (stdlib only).
network=""
if [[ -z "${1:-}" ]]; then
  network="$(python3 -c '
import sys
sys.path.insert(0, sys.argv[1])
import repository
try:
    print(repository.network_directory(sys.argv[2], int(sys.argv[3])))
except ValueError as exc:
    sys.exit(f"error: {exc}")' "$here/triton" "$here/model_repository" "${A2F_MODEL_VERSION:-0}")"
fi
onnx="${1:-$network/model.onnx}"
plan="${2:-$(dirname "$onnx")/model.plan}"
manifest="$(dirname "$onnx")/manifest.json"
min="${MIN_BATCH:-1}" opt="${OPT_BATCH:-128}" max="${MAX_BATCH:-1024}"

command -v trtexec >/dev/null || { echo "trtexec not found (use the TensorRT container)" >&2; exit 1; }
# The window length and input name come from the manifest, never from this script.
read -r input window < <(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
(name, spec), = m["inputs"].items()
print(name, spec["shape"][0])' "$manifest")

precision=()
[[ "${PRECISION:-fp16}" == fp16 ]] && precision=(--fp16)

trtexec \
  --onnx="$onnx" \
  --saveEngine="$plan" \
  --minShapes="$input:${min}x$window" \
  --optShapes="$input:${opt}x$window" \
  --maxShapes="$input:${max}x$window" \
  --memPoolSize="workspace:${WORKSPACE_MIB:-1024}" \
  "${precision[@]}"
echo "wrote $plan (batch $min/$opt/$max, ${PRECISION:-fp16})"
