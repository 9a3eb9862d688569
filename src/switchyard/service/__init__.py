"""The gateway pipeline: authorize, route, call the provider, relay, account."""
