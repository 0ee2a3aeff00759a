"""The metadata service: apps, builds, releases and build logs in a SQL database."""
