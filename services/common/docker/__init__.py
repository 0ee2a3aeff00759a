"""The one adapter of the Docker engine (SPEC §2): every service that needs an engine uses
`engine.DockerEngine`; docker-py, requests and urllib3 are imported nowhere else.

- `engine`: the `DockerEngine` class (for the builder, the registry service, and the
  local-rack supervisor's ping and busybox seeding) and the timeout policy;
- `errors`: the one table translating docker-py/requests errors and engine texts;
- `streams`: the build context tar, stream messages as lines or events, interrupting reads;
- `skopeo`: loading OCI archives;
- `fallback`: the one local-image fallback after a failed pull;
- `types`: the dataclasses, protocols and `EngineError` callers see (no docker-py import).

Nothing is imported here, so `types` stays importable without docker-py.
"""
