"""What every Slipway service shares: the server factory, the interceptor, logging."""
