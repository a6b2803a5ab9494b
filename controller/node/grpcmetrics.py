"""Per-method gRPC server metrics: an aio interceptor counting and timing every call.

The families follow the names dashboards for gRPC servers already use
(grpc_server_started_total, grpc_server_handled_total{grpc_code},
grpc_server_handling_seconds); controller/node/metrics.py declares and renders them.
"""

from __future__ import annotations

import asyncio
import inspect
import time

import grpc
from grpc.aio import AbortError

from .metrics import Metrics

__all__ = ["CallMetrics"]

_TYPES = {(False, False): "unary", (False, True): "server_stream",
          (True, False): "client_stream", (True, True): "bidi_stream"}
_MAKERS = {"unary": grpc.unary_unary_rpc_method_handler,
           "server_stream": grpc.unary_stream_rpc_method_handler,
           "client_stream": grpc.stream_unary_rpc_method_handler,
           "bidi_stream": grpc.stream_stream_rpc_method_handler}
_BEHAVIOURS = {"unary": "unary_unary", "server_stream": "unary_stream",
               "client_stream": "stream_unary", "bidi_stream": "stream_stream"}


def _code(context: grpc.aio.ServicerContext, failed: BaseException | None) -> str:
    """The status a call ended with: what the servicer set or aborted with; UNKNOWN for an
    exception it let escape; CANCELLED when the client went away."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # some grpcio versions hand back the raw number
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    if failed is None or isinstance(failed, AbortError):
        return "OK"
    if isinstance(failed, GeneratorExit | asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


class CallMetrics(grpc.aio.ServerInterceptor):
    """Counts each call when it starts and when it ends (with its code), and times it."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # The wrapped handler of each method, made once: gRPC asks for it on every call.
        self._wrapped: dict[str, tuple[object, object]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED itself
            return None
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, handler_call_details.method)
        if len(self._wrapped) < 256:  # the services' methods; unknown names get None above
            self._wrapped[handler_call_details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler, full_method: str):
        kind = _TYPES[(handler.request_streaming, handler.response_streaming)]
        service, _, method = full_method.lstrip("/").rpartition("/")
        labels = (kind, service, method)
        behaviour = getattr(handler, _BEHAVIOURS[kind])
        wrapped = (self._stream if inspect.isasyncgenfunction(behaviour) else self._call)(
            behaviour, labels)
        return _MAKERS[kind](wrapped, request_deserializer=handler.request_deserializer,
                             response_serializer=handler.response_serializer)

    def _call(self, behaviour, labels):
        metrics = self.metrics

        async def call(request, context):
            metrics.grpc_started[labels] += 1
            started, failed = time.perf_counter(), None
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                failed = exc
                raise
            finally:
                metrics.observe_call(labels, _code(context, failed),
                                     time.perf_counter() - started)

        return call

    def _stream(self, behaviour, labels):
        metrics = self.metrics

        async def stream(request, context):
            metrics.grpc_started[labels] += 1
            started, failed = time.perf_counter(), None
            try:
                async for item in behaviour(request, context):
                    yield item
            except BaseException as exc:
                failed = exc
                raise
            finally:
                metrics.observe_call(labels, _code(context, failed),
                                     time.perf_counter() - started)

        return stream
