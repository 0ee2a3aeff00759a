"""The archive service: source tarballs, verified by size and sha256 before they are
committed to a content-addressed object store, then streamed back out."""
