"""The ``gatehouse`` command."""
