"""Codecs: wire formats (our JSON rows, CSV, OIP tensors) in, one internal batch out.

A codec parses what it can without knowing the model (syntax, shape, encoding) into a
``Decoded`` request; the arm the router picks then turns it into a validated ``Batch`` with
its own schema. The model never sees a wire format.
"""

from app.codecs.decoded import Decoded

__all__ = ["Decoded"]
