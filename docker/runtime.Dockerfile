# The runtime image of the Ray pods (training RayJobs and serving RayServices): Ray, PyTorch,
# tokenizers and llmkube.runtime.
#   docker build -f docker/runtime.Dockerfile -t llmkube/runtime:0.1.0 .
# PyPI's torch wheel is a CUDA build: the same image trains on GPU node pools and on CPUs.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# KubeRay's probes call wget; Ray's own start-up needs nothing else.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --create-home ray
WORKDIR /app
COPY pyproject.toml README.md ./
COPY llmkube ./llmkube
RUN pip install ".[runtime,export]" \
    && python -c "import llmkube.runtime.train, llmkube.runtime.serve"
USER 1000
WORKDIR /home/ray
