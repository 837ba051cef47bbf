"""Live events: one model per event type, a bus between processes, the WebSocket hub, webhooks."""
