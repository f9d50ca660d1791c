"""The training pipeline: DVC stages that turn a dataset into a published experiment.

Each stage in ``ml.stages`` is a pure function plus a ``main()`` that DVC runs as
``python -m ml.stages.<name>`` from the repository root; ``dvc.yaml`` wires them together.
"""
