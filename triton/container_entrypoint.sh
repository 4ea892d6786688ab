#!/bin/sh
# Entry point of the official Triton container (triton/Dockerfile.triton): render the runtime
# repository with the same repository.py the embedded launcher uses, then exec tritonserver
# with the arguments given to the container (ports, log level, ...). A2F_MODEL_VERSION picks
# the a2f_net version served (0 or unset: the highest); one that is not there stops here.
set -eu
python3 /opt/a2f/repository.py \
  --source /opt/a2f/model_repository \
  --target /tmp/a2f_model_repository \
  --backend-directory /opt/tritonserver/backends \
  --flavour "${A2F_TRITON_FLAVOUR:-auto}" \
  --instances "${A2F_TRITON_INSTANCES:-1}" \
  --ort-threads "${A2F_ORT_THREADS:-1}" \
  --model_version "${A2F_MODEL_VERSION:-0}" \
  ${A2F_TRT_FP16:+--trt-fp16}
exec tritonserver --model-repository=/tmp/a2f_model_repository "$@"
