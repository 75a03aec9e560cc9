"""HTTP edge: aiohttp app, middlewares, handlers, OpenAI wire format, the request pipeline, CLI."""
