"""The pure ASGI middlewares: request context and headers, body limit, JSON depth."""
