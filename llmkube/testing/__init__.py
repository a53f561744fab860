"""Harnesses that start real components (control plane, MinIO, Prometheus) for tests and benchmarks.

Nothing here is mocked: each harness runs the real server binary on loopback and stops it, with
every child process, when closed.
"""
