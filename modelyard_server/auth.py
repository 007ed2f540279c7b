"""Who may call what: bearer tokens and mTLS identities, checked at each service's edge.

Two roles. Admin RPCs (ControlPlane DrainWorker/UndrainWorker, RegisterModel/
SetRegistrationOnline/RemoveRegistration, Composer DeployGraph/DeleteGraph) take an admin
token (`authorization: Bearer <token>` metadata) or, under mutual TLS, a client certificate
whose name (common name or a subject alternative name) is in `admin_identities`. Serving
RPCs (Predict, PredictStream, Run, RunStream) take a serving or admin token (or an admin
identity) once `serving_tokens` is set; until then they are open. Everything else (health,
reflection, listings, endpoint and load watches) stays open: orchestrators probe health
without credentials. A role nobody configured is open too, so a local stack needs no setup;
the first admin call that finds its role open logs a warning.

No credentials, or a token nobody issued → UNAUTHENTICATED; a valid caller without the
role → PERMISSION_DENIED. Tokens are compared in constant time against every key, and
neither they nor their lengths appear in a log line or an error message.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import grpc.aio
from pydantic import BaseModel, ConfigDict, Field, SecretStr

log = logging.getLogger(__name__)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class Role(Enum):
    ADMIN = "admin"
    SERVING = "serving"


#: the RPCs each role guards; every other method is open
GUARDED = {
    "/modelyard.v1.ControlPlane/DrainWorker": Role.ADMIN,
    "/modelyard.v1.ControlPlane/UndrainWorker": Role.ADMIN,
    "/modelyard.v1.ControlPlane/RegisterModel": Role.ADMIN,
    "/modelyard.v1.ControlPlane/SetRegistrationOnline": Role.ADMIN,
    "/modelyard.v1.ControlPlane/RemoveRegistration": Role.ADMIN,
    "/modelyard.v1.Composer/DeployGraph": Role.ADMIN,
    "/modelyard.v1.Composer/DeleteGraph": Role.ADMIN,
    "/modelyard.v1.Predict/Predict": Role.SERVING,
    "/modelyard.v1.Predict/PredictStream": Role.SERVING,
    "/modelyard.v1.Predict/PredictMany": Role.SERVING,
    "/modelyard.v1.Composer/Run": Role.SERVING,
    "/modelyard.v1.Composer/RunStream": Role.SERVING,
}
_PEER_NAMES = ("x509_common_name", "x509_subject_alternative_name")


class AuthSettings(BaseModel):
    """Tokens come inline (from the environment, say MODELYARD_COMPOSER_AUTH__ADMIN_TOKENS=
    '["..."]') or from files of one token a line ('#' starts a comment); both add up."""

    model_config = ConfigDict(extra="forbid")

    admin_tokens: list[SecretStr] = Field(
        default_factory=list, description="Bearer tokens with the admin role."
    )
    admin_tokens_file: Path | None = Field(None, description="File of admin tokens.")
    serving_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens that may call Predict and Run; set, they are required.",
    )
    serving_tokens_file: Path | None = Field(None, description="File of serving tokens.")
    admin_identities: list[str] = Field(
        default_factory=list,
        description="Client-certificate names (common name or subject alternative name) "
        "with the admin role; needs tls.client_auth.",
    )
    token: SecretStr | None = Field(
        None, description="Bearer token this service sends on its own calls (to workers)."
    )
    token_file: Path | None = Field(None, description="File holding `token`.")

    def tokens(self, role: Role) -> list[bytes]:
        inline, path = (
            (self.admin_tokens, self.admin_tokens_file)
            if role is Role.ADMIN
            else (self.serving_tokens, self.serving_tokens_file)
        )
        found = [secret.get_secret_value() for secret in inline]
        if path is not None:
            found += _read_tokens(path)
        return [token.encode() for token in found if token]

    def outgoing_token(self) -> str | None:
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None:
            return next(iter(_read_tokens(self.token_file)), None)
        return None


def _read_tokens(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the guarded handlers with the check of their role (module docstring)."""

    def __init__(self, settings: AuthSettings) -> None:
        self._admin = settings.tokens(Role.ADMIN)
        self._serving = settings.tokens(Role.SERVING)
        self._identities = frozenset(settings.admin_identities)
        self._enforced = {
            Role.ADMIN: bool(self._admin or self._identities),
            Role.SERVING: bool(self._serving),
        }
        self._wrapped: dict[str, Handler] = {}
        self._warned_open = False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        role = GUARDED.get(method)
        if handler is None or role is None:
            return handler
        if not self._enforced[role]:
            if role is Role.ADMIN and not self._warned_open:
                # once, at the first admin call: a worker, which has none, never warns
                self._warned_open = True
                log.warning(
                    "%s accepted with no credentials: admin RPCs are open to any caller "
                    "until auth.admin_tokens or auth.admin_identities is set",
                    method,
                )
            return handler
        wrapped = self._wrap(handler, method, role)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, handler: Handler, method: str, role: Role) -> Handler:
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        check = self._check
        if handler.unary_unary is not None:
            unary: Callable[..., Awaitable[Any]] = handler.unary_unary

            async def call(request: Any, context: Context) -> Any:
                await check(method, role, context)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(call, **codec)
        if handler.unary_stream is not None:
            stream: Callable[..., AsyncIterator[Any]] = handler.unary_stream  # type: ignore[assignment]

            async def call_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                await check(method, role, context)
                async for response in stream(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(call_stream, **codec)
        streams: Callable[..., Awaitable[None]] | None = handler.stream_stream  # type: ignore[assignment]
        if streams is not None and not inspect.isasyncgenfunction(streams):
            # a coroutine that reads and writes through its context (PredictMany)
            async def call_streams(requests: Any, context: Context) -> None:
                await check(method, role, context)
                await streams(requests, context)

            return grpc.stream_stream_rpc_method_handler(call_streams, **codec)
        raise TypeError(
            f"{method}: only unary, server-streaming and coroutine bidi RPCs can be guarded"
        )

    async def _check(self, method: str, role: Role, context: Context) -> None:
        """Returns when the caller has `role`; aborts the call otherwise."""
        token = _bearer(context.invocation_metadata() or ())
        if role is Role.ADMIN:
            allowed, known = self._admin, [*self._admin, *self._serving]
        else:
            allowed = known = [*self._admin, *self._serving]
        if token is not None and _matches(token, allowed):
            return
        identities = _peer_identities(context)
        if self._identities.intersection(identities):
            return
        # known but without the role: a valid token of the other role, or a verified
        # certificate sent with no token; anything else is not known at all
        known_caller = _matches(token, known) if token is not None else bool(identities)
        code = (
            grpc.StatusCode.PERMISSION_DENIED if known_caller else grpc.StatusCode.UNAUTHENTICATED
        )
        await self._deny(context, method, code, role)

    async def _deny(self, context: Context, method: str, code: grpc.StatusCode, role: Role) -> None:
        if code is grpc.StatusCode.PERMISSION_DENIED:
            message = f"this caller lacks the {role.value} role that {method} needs"
        else:
            message = f"{method} needs a {role.value} token (authorization: Bearer <token>)" + (
                " or an admin client certificate" if role is Role.ADMIN else ""
            )
        log.info("refused %s from %s: %s", method, context.peer(), code.name)
        await context.abort(code, message)


def _bearer(metadata: Iterable[tuple[str, str | bytes]]) -> bytes | None:
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip().encode()
    return None


def _matches(token: bytes, keys: list[bytes]) -> bool:
    """Compares with every key, never stopping early: the time says nothing about which
    key, or how much of one, matched."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key)
    return found


def _peer_identities(context: Context) -> set[str]:
    """The verified client certificate's names; empty without mutual TLS."""
    auth = context.auth_context()
    return {value.decode() for name in _PEER_NAMES for value in auth.get(name, ())}
