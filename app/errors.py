"""Domain errors. Each carries the HTTP status it maps to; domain code knows nothing of HTTP."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service reports to a client."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServiceError):
    """A request whose content does not match what the active model takes."""

    status_code = 422
    code = "invalid_input"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class MalformedRequest(InvalidInput):
    """A body that cannot be parsed at all (bad JSON, bad CSV encoding)."""

    status_code = 400
    code = "malformed_request"


class InvalidHeader(InvalidInput):
    """A request header the service reads (request id, routing key) is malformed."""

    status_code = 400
    code = "invalid_header"


class PayloadTooLarge(InvalidInput):
    """Too many rows or too many bytes."""

    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(InvalidInput):
    status_code = 415
    code = "unsupported_media_type"


class NoActiveModel(ServiceError):
    status_code = 503
    code = "no_active_model"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"


class ManagementDisabled(ServiceError):
    status_code = 403
    code = "management_disabled"


class InvalidTag(ServiceError):
    status_code = 422
    code = "invalid_tag"


class ExperimentNotFound(ServiceError):
    status_code = 404
    code = "experiment_not_found"


class ExperimentExists(ServiceError):
    status_code = 409
    code = "experiment_exists"


class ModelRejected(ServiceError):
    """A model that failed a check on load (hash, trusted types, schema, reference sample)."""

    status_code = 422
    code = "model_rejected"


class RegistryUnavailable(ServiceError):
    status_code = 503
    code = "registry_unavailable"


class BrokenExperiment(ServiceError):
    """An experiment whose metadata cannot be read or does not validate."""

    status_code = 422
    code = "broken_experiment"


class InvalidSettings(ServiceError):
    """An ``ML_API_*`` setting that does not validate (for commands other than the server)."""

    status_code = 500
    code = "invalid_settings"


class IncompatibleSpec(ServiceError):
    """A deployment spec whose models cannot serve together (different input features)."""

    status_code = 422
    code = "incompatible_spec"


class UnknownCandidate(ServiceError):
    """Promote named a tag that is not a candidate of the deployment."""

    status_code = 409
    code = "not_a_candidate"


class NothingToRollBack(ServiceError):
    status_code = 409
    code = "nothing_to_roll_back"


class ModelNotLoaded(ServiceError):
    """A request pinned to an experiment that the deployment does not serve."""

    status_code = 404
    code = "model_not_loaded"


class FeedbackStoreUnavailable(ServiceError):
    """The shared feedback store (SQLite or Redis) cannot be reached: predictions go on."""

    status_code = 503
    code = "feedback_store_unavailable"


class FeedbackDisabled(ServiceError):
    status_code = 403
    code = "feedback_disabled"


class FeedbackRejected(ServiceError):
    """One feedback item that cannot be joined; ``code`` says why (malformed, forged...)."""

    def __init__(self, message: str, code: str, status_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.status_code = status_code


class UnknownModel(ServiceError):
    """An OIP request names a model this server does not serve."""

    status_code = 404
    code = "model_not_found"


class PrimaryNotRemovable(ServiceError):
    """The primary cannot leave the deployment by itself: another tag must replace it."""

    status_code = 409
    code = "primary_not_removable"


class BatchInputError(ServiceError):
    """Batch scoring cannot start or go on: an unreadable or malformed input, a feature or
    ``--keep`` column the input lacks, options that contradict each other."""

    status_code = 422
    code = "batch_input"


class RowsRejected(ServiceError):
    """``--fail-fast``: a row failed validation, so the batch run stopped there."""

    status_code = 422
    code = "rows_rejected"


class ExportRefused(ServiceError):
    """An experiment that cannot be exported for the edge (no verified ONNX copy, a copy that
    does not match its hash, an output folder in the way)."""

    status_code = 422
    code = "export_refused"
