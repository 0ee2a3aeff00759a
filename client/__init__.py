"""Slipway's typed client library and the `slipway` command."""

__version__ = "0.1.0"
