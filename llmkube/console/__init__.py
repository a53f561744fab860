"""`llmkube console`: the web page where people watch training, compare runs and talk to their
models. One app (app.py) over one interface (source.py) with two implementations: the local data
folder of `llmkube run` (local_source.py) and, in a cluster, the Kubernetes API."""
