"""Objects that live as long as the process, kept out of the garbage collector's passes.

A full (generation 2) collection walks every tracked object not frozen: after the admin app
was built (FastAPI and pydantic's schemas, ~13 MB of objects) one took ~27 ms, and the churn of
a big admin listing set one off, holding the worker's loop that long. What exists at start,
and what the admin app holds once built, is frozen (``gc.freeze``) after one full collection.

A CLI command is a short process that imports ~550 modules (``keys list``: SQLAlchemy, its
ORM, pydantic, Typer, Rich) and then does a little work. The collections its imports set off
walked those modules' objects again and again (~40 ms), and the interpreter's exit walked
them all once more (~80 ms): of ``keys list``'s ~490 ms, ~130 (bench/cli.py). So a command
process (``main()``, not a test calling the Typer app) imports with the collector off,
freezes what it imported, and runs its command with the collector on (a long command —
``doctor``, a migration — collects its own garbage as usual); what is left at the end is
frozen before the interpreter exits.
"""

from __future__ import annotations

import gc

_command = False  # this process is a CLI command's (gatehouse.cli.main.main)


def freeze_long_lived() -> None:
    """Collect what is garbage now, then move everything left out of the GC's generations
    (freed as usual when its last reference goes; never walked again by a collection)."""
    gc.collect()
    gc.freeze()


def command_starts() -> None:
    """A command's process begins: no collections while it imports."""
    global _command
    _command = True
    gc.disable()


def command_loaded() -> None:
    """The command's modules are imported: they live as long as the process, so out of the
    collector's way; collections on again for what the command itself makes. Nothing in a
    process that is not a command's (a test driving the Typer app)."""
    if _command:
        gc.freeze()
        gc.enable()


def command_ends() -> None:
    """The command is done: the interpreter's exit need not walk its objects."""
    if _command:
        gc.freeze()
