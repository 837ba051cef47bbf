"""The HTTP/WebSocket edge: parse, authenticate, call a service, map errors. No business logic."""
