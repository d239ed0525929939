"""`FaasAPI`: FastAPI with the shorter stack every faas request goes through.

FastAPI (0.16x) puts seven layers of its own around an app's middleware and routes:
`FastAPI.__call__`, `Starlette.__call__`, the server-error middleware, an exception-telemetry
middleware, an app-wide body limit, the exception middleware (two frames and a `Request` per
request) and an exit stack for uploaded files. Each layer is a coroutine frame that every
suspension and resumption of the request passes through, several times a request (the upstream
call alone suspends it three or four times). faas does its own telemetry and body limits, so
`FaasAPI` keeps only what it uses:

    ServerErrorMiddleware → the app's middleware → inner middleware → ExceptionMiddleware →
    AsyncExitStackMiddleware → router

`inner_middleware` sits inside every middleware the app adds and outside FastAPI's exception
handling: the direct routes (`faas.shared.direct_routes`) go there, handling their endpoints'
errors with the app's handlers themselves, so their requests skip the last four layers too.
Each inner middleware is built with `exception_handlers`: the handlers the exception middleware
gets, as they stand when the stack is built. FastAPI's own telemetry is off (faas's
TracingMiddleware traces and measures every request) and an app-wide `max_body_size` is refused
(faas's BodyLimitMiddleware applies its limits); for the same reason a `FaasAPI` is not meant to
be mounted under an app with a body limit, whose limit FastAPI's dropped layer would enforce.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class InnerLayer(Protocol):
    """Makes an inner middleware around `app`, which answers errors with `exception_handlers`."""

    def __call__(self, app: ASGIApp, *, exception_handlers: Mapping[Any, Any]) -> ASGIApp: ...


_TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False}


class FaasAPI(FastAPI):
    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("max_body_size") is not None:
            raise TypeError("faas applies body limits in its own middleware: no max_body_size")
        if kwargs.setdefault("telemetry", _TELEMETRY_OFF) != _TELEMETRY_OFF:
            raise TypeError("faas traces and measures requests itself: FastAPI's telemetry is off")
        super().__init__(**kwargs)
        self.inner_middleware: list[InnerLayer] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan and websockets: FastAPI's own handling
            await super().__call__(scope, receive, send)
            return
        stack = self.middleware_stack
        if stack is None:
            stack = self.middleware_stack = self.build_middleware_stack()
        if self.root_path:  # as FastAPI.__call__ does
            scope["root_path"] = self.root_path
        scope["app"] = self
        await stack(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        # As FastAPI splits them: a handler for 500 or Exception answers what nothing else
        # caught, from the outermost layer; the others are the exception middleware's.
        error_handler = None
        handlers: dict[Any, Any] = {}
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                error_handler = value
            else:
                handlers[key] = value
        app: ASGIApp = AsyncExitStackMiddleware(self.router)  # closes a request's UploadFiles
        app = ExceptionMiddleware(app, handlers=handlers, debug=self.debug)
        for make in reversed(self.inner_middleware):
            app = make(app, exception_handlers=handlers)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return ServerErrorMiddleware(app, handler=error_handler, debug=self.debug)
