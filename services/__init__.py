"""Slipway's four services: archive, builder, registry and metadata."""
