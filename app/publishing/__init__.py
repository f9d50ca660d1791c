"""Publishing: the one way an experiment enters the registry, with its checked ONNX copy."""

from app.publishing.publish import publish_experiment, registry_from_settings

__all__ = ["publish_experiment", "registry_from_settings"]
