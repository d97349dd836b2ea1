"""Objects that live as long as the worker, kept out of the garbage collector's passes.

A full (generation 2) collection walks every tracked object not frozen: after the admin app
was built (FastAPI and pydantic's schemas, ~13 MB of objects) one took ~27 ms, and the churn of
a big admin listing set one off, holding the worker's loop that long. What exists at start,
and what the admin app holds once built, is frozen (``gc.freeze``) after one full collection.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Collect what is garbage now, then move everything left out of the GC's generations
    (freed as usual when its last reference goes; never walked again by a collection)."""
    gc.collect()
    gc.freeze()
