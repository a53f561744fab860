"""The LLMDeployment autoscaler: the metric's PromQL, a pure policy, the loop applying it."""
