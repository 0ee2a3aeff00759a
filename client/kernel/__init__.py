"""The grpc-free kernel shared by the services and the client: errors, records, chunk
streams, the convox.yml schema, .dockerignore semantics and context walking."""
