"""LLMTrainingJob: reconcile (reconcile.py), the RayJob and ConfigMap it builds (builders.py), its
status (status.py) and the progress files it reads (progress.py)."""
