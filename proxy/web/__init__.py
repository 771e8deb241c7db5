"""The HTTP edge: app factory, routes, handlers, middlewares."""
