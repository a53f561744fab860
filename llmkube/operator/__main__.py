"""`python -m llmkube.operator`: run the operator (settings from LLMKUBE_* variables)."""

import logging

import kopf

from llmkube.operator import handlers  # noqa: F401  (importing registers the handlers)
from llmkube.operator.settings import OperatorSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Read once, at start-up; the handlers find them in kopf's memo.
    settings = OperatorSettings.from_env()
    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        memo=kopf.Memo(settings=settings),
    )


if __name__ == "__main__":
    main()
