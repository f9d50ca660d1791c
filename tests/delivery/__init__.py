"""Delivery checks: container image, Kubernetes manifests, GitLab CI pipeline."""
