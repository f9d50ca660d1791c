"""Edge export: ``ml-api export --tag T OUTDIR`` writes a bundle that runs a model offline,
on a device, with onnxruntime alone.

The bundle holds the experiment's ONNX copy (only one that publishing verified against
scikit-learn, checked again here against its sha256 and the reference rows), ``model.json``
describing its inputs, outputs and classes, a README with a runnable example, and
``SHA256SUMS``. Modules: ``description`` (model.json), ``readme`` (the README), ``bundle``
(checks and writing).
"""

from app.edge.bundle import Bundle, export_bundle

__all__ = ["Bundle", "export_bundle"]
