"""One module per DVC stage, each a pure function plus ``main()``: load, preprocess, train,
evaluate, publish. Run one with ``python -m ml.stages.<name>`` from the repository root."""
