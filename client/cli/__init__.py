"""The `slipway` command: argument parsing, rendering, configuration and the local-rack
supervisor. No service imports this layer."""

import os

# gRPC core writes its own log lines to stderr (a failed TLS handshake, a refused
# connection); the command reports each failure once, as `ERROR: …`. Set before anything
# imports grpc; SLIPWAY_DEBUG=1 or GRPC_VERBOSITY brings them back.
if not os.environ.get("SLIPWAY_DEBUG", "").strip("0"):
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
