"""Small datasets for pipeline tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def custom_frame(rows: int = 90, seed: int = 3) -> pd.DataFrame:
    """A small dataset unlike penguins: an int feature, a dropped id, a numeric-looking target."""
    rng = np.random.default_rng(seed)
    label = np.repeat([1, 2, 3], rows // 3)
    size = label * 2.0 + rng.normal(0, 0.6, rows)
    size[::17] = np.nan
    colour = np.where(label == 1, "red", np.where(label == 2, "green", "blue")).astype(object)
    flip = rng.random(rows) < 0.2
    colour[flip] = rng.choice(["red", "green", "blue"], flip.sum())
    colour[5::23] = None
    return pd.DataFrame(
        {
            "row_id": np.arange(rows),
            "size": size.round(3),
            "legs": (label + rng.integers(0, 2, rows)).astype(int),
            "colour": colour,
            "grade": label,
        }
    )


def penguins_table() -> pd.DataFrame:
    """The packaged penguins table as an extract of it would arrive: every column, raw."""
    import palmerpenguins

    return palmerpenguins.load_penguins()
