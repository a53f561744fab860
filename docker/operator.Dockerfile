# The operator image: Kopf + the Kubernetes client, no torch and no Ray; also runs the web
# console (the chart's console.enabled).
#   docker build -f docker/operator.Dockerfile -t llmkube/operator:0.1.0 .
# The chart runs it as UID 65532 with a read-only root filesystem.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY llmkube ./llmkube
RUN pip install ".[operator,console]" && python -c "import llmkube.operator, llmkube.console.app"
USER 65532:65532
ENTRYPOINT []
CMD ["python", "-m", "llmkube.operator"]
