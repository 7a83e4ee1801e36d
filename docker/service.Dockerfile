# One image for the fleet of compose.fleet.yaml: the service replicas, and the Ray worker nodes that measure the
# profiles (a node imports this package to run a profile, so it needs the same code as the replicas).
#
# Ray requires the same Ray and Python versions on the driver (a replica) and on every node of the cluster: this
# image is Python 3.11 with ray 2.60.0, as the head's image rayproject/ray:2.60.0-py311 is. Change the three
# together (RAY_VERSION here, the base image's Python, and the head's tag in compose.fleet.yaml). Ray compares
# Python down to the patch release by default; the two images' 3.11 patch releases may differ, so this one asks
# Ray to compare major and minor only (RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ARG RAY_VERSION=2.60.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLESTIMATE_CACHE_DIR=/var/cache/mlestimate \
    RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor

WORKDIR /opt/pytest-mlestimate
# torch first, in a layer of its own: PyPI's Linux wheels carry CUDA, which the GPU worker measures on.
RUN pip install --no-cache-dir torch torchvision
COPY pyproject.toml README.md ./
COPY pytest_mlestimate ./pytest_mlestimate
RUN pip install --no-cache-dir ".[service,postgres,ray]" "ray==${RAY_VERSION}" \
    && useradd --create-home --uid 10001 mlestimate \
    && mkdir -p "$MLESTIMATE_CACHE_DIR" \
    && chown mlestimate "$MLESTIMATE_CACHE_DIR"

USER mlestimate
EXPOSE 8000
CMD ["mlestimate", "serve", "--host", "0.0.0.0", "--port", "8000"]
