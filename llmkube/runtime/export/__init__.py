"""Exporting published models for inference outside llmkube: ONNX graphs with an explicit KV
cache (graphs.py), exported and checked against PyTorch (exporting.py, parity.py), and run with
ONNX Runtime (onnx_runner.py). Layout and use: docs/export.md."""
