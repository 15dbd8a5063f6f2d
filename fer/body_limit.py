"""An ASGI middleware that refuses any HTTP request body over a byte limit before the app reads it.

Gradio checks the size of uploaded files, but a JSON body (an image sent as a data: URL, or plain garbage) is read
in full by FastAPI before anything looks at it. This refuses such a body with 413 as soon as its declared length
(Content-Length), or the bytes received so far for a body without one, exceed the limit:

    gr.Blocks.launch(app_kwargs={"middleware": [BodyLimit.middleware(max_bytes, "what to tell the client")]})
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

logger = logging.getLogger(__name__)


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413 and `message`, logging one line (method, path, client)."""

    def __init__(self, app, max_bytes: int, message: str | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.text = message or f"The request is larger than this app accepts ({max_bytes:,} bytes)."

    @classmethod
    def middleware(cls, max_bytes: int, message: str | None = None) -> Middleware:
        """For FastAPI(middleware=[...]) (Gradio's `launch(app_kwargs=...)`): `message` is the 413's text."""
        return Middleware(cls, max_bytes=max_bytes, message=message)

    def _log(self, scope) -> None:
        client = (scope.get("client") or ("unknown client",))[0]
        logger.warning("refused a request body over %d bytes: %s %s from %s", self.max_bytes, scope.get("method"),
                       scope.get("path"), client)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            self._log(scope)
            return await PlainTextResponse(self.text, status_code=413)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    self._log(scope)
                    # An HTTPException: FastAPI's body parsing and Starlette pass it on as this 413 response.
                    raise HTTPException(status_code=413, detail=self.text)
            return message

        return await self.app(scope, counted_receive, send)
