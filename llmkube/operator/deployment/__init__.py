"""LLMDeployment: reconcile (reconcile.py), the RayService, Service and ServiceMonitor it builds
(builders.py), its status (status.py) and the autoscaler (autoscaler/)."""
