# The gateway image for compose.yaml: Litestar + uvicorn in front of a Triton container.
# Triton itself runs from triton/Dockerfile.triton; this image needs no GPU.
FROM python:3.11-slim

WORKDIR /opt/a2f
COPY pyproject.toml README.md constraints.txt ace_requirements.txt ./
COPY a2f_protocol ./a2f_protocol
COPY gateway ./gateway
COPY a2f_client ./a2f_client
COPY loadtest ./loadtest
# pyproject lists every package; these three are installed, not run, in this image.
COPY triton ./triton
COPY training ./training
COPY gpu_kit ./gpu_kit
# The gateway reads channel names from the manifest, emotion names from expressions.json.
COPY model_repository ./model_repository
RUN pip install --no-cache-dir -c constraints.txt '.[server]' \
    && pip install --no-cache-dir --no-deps -r ace_requirements.txt

RUN useradd --system a2f
USER a2f
ENV A2F_MODEL_REPOSITORY=/opt/a2f/model_repository
# The WebSocket and HTTP API; NVIDIA's Audio2Face-3D gRPC API (the NIM's port).
EXPOSE 8765 52000
CMD ["python", "-m", "gateway"]
