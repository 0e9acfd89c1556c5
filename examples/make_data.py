"""Writes the example folders' CSV files (committed; rerun to regenerate them byte for byte)."""

from pathlib import Path

import numpy as np

from losslab.core.data import two_moons, write_table

HERE = Path(__file__).parent


def house_prices(n: int = 80, seed: int = 0) -> dict[str, np.ndarray]:
    """Floor area in square feet, bedrooms, and a price in $1000s, roughly linear in both."""
    rng = np.random.default_rng(seed)
    sqft = rng.uniform(600, 3500, n).round()
    rooms = np.clip((sqft / 700 + rng.normal(0, 0.7, n)).round(), 1, 6)
    price = (0.12 * sqft + 15 * rooms + 40 + rng.normal(0, 15, n)).round(1)
    return {"sqft": sqft, "bedrooms": rooms, "price": price}


if __name__ == "__main__":
    write_table(HERE / "house_prices" / "houses.csv", house_prices())
    write_table(HERE / "moons" / "moons.csv", two_moons(n=200, noise=0.1, seed=1))
