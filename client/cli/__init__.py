"""The `slipway` command: argument parsing, rendering, configuration and the local-rack
supervisor. No service imports this layer."""
