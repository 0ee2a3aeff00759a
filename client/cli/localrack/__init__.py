"""Running a rack on this machine: the Docker engine, the registry and the four services."""
