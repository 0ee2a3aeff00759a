"""The typed client library: channels, stubs and the one gRPC error mapping, speaking
the kernel's dataclasses. Services use it to call each other; the CLI sits on it."""
