"""The builder service: the rack's coordinator and front door (`python -m services.builder`)."""
