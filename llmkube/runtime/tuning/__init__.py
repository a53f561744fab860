"""Hyperparameter search: Ray Tune over trials that each run a training job."""
