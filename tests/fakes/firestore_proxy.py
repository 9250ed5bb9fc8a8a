"""A gRPC proxy in front of the Firestore emulator, on loopback, that forwards every call
unchanged (bytes in, bytes out) but those a test tells it to refuse: Firestore failing for
one read while the rest of the database works, as the server's real client sees it.

    proxy = FirestoreProxy(emulator_host).start()
    proxy.refuse = lambda method, request: (grpc.StatusCode.PERMISSION_DENIED, "denied") \
        if method == "RunQuery" and request.parent.endswith("/users/bob") else None
    # FIRESTORE_EMULATOR_HOST=proxy.host for the server under test
    proxy.refused        # [(method, request), ...] refused so far
    proxy.stop()

`request` is the decoded request (RunQueryRequest, CommitRequest, ...) of method `method`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc
from google.cloud.firestore_v1 import types

_SERVICE = "google.firestore.v1.Firestore"
_STREAMS = {"BatchGetDocuments": "unary_stream", "RunQuery": "unary_stream",
            "RunAggregationQuery": "unary_stream", "Write": "stream_stream",
            "Listen": "stream_stream"}

Refusal = Callable[[str, object], tuple[grpc.StatusCode, str] | None]


class FirestoreProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.refuse: Refusal = lambda method, request: None
        self.refused: list[tuple[str, object]] = []
        self._channel = grpc.insecure_channel(upstream)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=32,
                                                              thread_name_prefix="fs-proxy"))
        self._server.add_generic_rpc_handlers([_Forward(self)])
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FirestoreProxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=1).wait(5)
        self._channel.close()

    def _check(self, method: str, raw: bytes, context) -> None:
        request_type = getattr(types, f"{method}Request", None)
        if request_type is None:
            return
        request = request_type.deserialize(raw)
        refusal = self.refuse(method, request)
        if refusal is not None:
            self.refused.append((method, request))
            context.abort(*refusal)


def _metadata(context) -> list[tuple[str, str]]:
    return [(k, v) for k, v in context.invocation_metadata()
            if not k.startswith((":", "grpc-")) and k != "user-agent"]


def _relay(call, context):
    """Run `call` upstream; its gRPC error becomes this call's error."""
    try:
        return call()
    except grpc.RpcError as exc:
        context.abort(exc.code(), exc.details())


def _relay_stream(answers, context):
    """Pass `answers` on as they come; an upstream gRPC error becomes this call's error."""
    try:
        yield from answers
    except grpc.RpcError as exc:
        context.abort(exc.code(), exc.details())


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, proxy: FirestoreProxy):
        self.proxy = proxy

    def service(self, details):
        service, _, method = details.method.lstrip("/").partition("/")
        if service != _SERVICE:
            return None
        kind = _STREAMS.get(method, "unary_unary")
        upstream = getattr(self.proxy._channel, kind)(details.method)
        proxy = self.proxy

        if kind == "unary_unary":
            def unary(request, context):
                proxy._check(method, request, context)
                return _relay(lambda: upstream(request, metadata=_metadata(context)), context)
            return grpc.unary_unary_rpc_method_handler(unary)

        if kind == "unary_stream":
            def unary_stream(request, context):
                proxy._check(method, request, context)
                yield from _relay_stream(upstream(request, metadata=_metadata(context)),
                                         context)
            return grpc.unary_stream_rpc_method_handler(unary_stream)

        def stream_stream(requests, context):
            yield from _relay_stream(upstream(requests, metadata=_metadata(context)), context)
        return grpc.stream_stream_rpc_method_handler(stream_stream)
