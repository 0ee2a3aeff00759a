"""The registry service: tags local engine images into the rack's registry and pushes them,
streaming progress."""
