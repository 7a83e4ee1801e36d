# The HTTP estimation service on a PyTorch runtime image (torch, torchvision and CUDA come with it).
# Build: docker build -t pytest-mlestimate .      Run: docker compose up (see compose.yaml)
ARG PYTORCH_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${PYTORCH_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLESTIMATE_CACHE_DIR=/var/cache/mlestimate

WORKDIR /opt/pytest-mlestimate
COPY pyproject.toml README.md ./
COPY pytest_mlestimate ./pytest_mlestimate
# pip keeps the image's torch and torchvision: they satisfy the package's requirements.
RUN pip install --no-cache-dir ".[service]" \
    && useradd --create-home --uid 10001 mlestimate \
    && mkdir -p "$MLESTIMATE_CACHE_DIR" \
    && chown mlestimate "$MLESTIMATE_CACHE_DIR"

USER mlestimate
# Measured profiles outlive the container here.
VOLUME ["/var/cache/mlestimate"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["mlestimate", "serve", "--host", "0.0.0.0", "--port", "8000"]
