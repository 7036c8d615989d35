"""The HTTP ingress: FastAPI routes in front of one `ModelServer` deployment per model.

GET /healthz, GET /models, POST /segment/{model}; OpenAPI docs at /docs. Every error is
JSON `{"error": "..."}` that says what was wrong and how to fix it; bad input gets a 4xx
and never reaches a model replica.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from segray.data.decode import FORMATS, TooManyPixels, decode_image
from segray.serve.replica import ModelError

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff", "application/octet-stream")
READY = ("HEALTHY", "UPSCALING", "DOWNSCALING")  # serving; autoscaling does not stop it

app = FastAPI(
    title="segray",
    description="Person segmentation by the models a segray benchmark evaluated: each answer's mask is "
    "the mask_png the evaluation stores for the same image and weights.",
)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


@app.exception_handler(ApiError)
async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=error.status, headers=error.headers)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    message = error.detail
    if error.status_code == 404:
        message = f"no route {request.method} {request.url.path}: see GET /docs"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}: see GET /docs"
    return JSONResponse({"error": message}, status_code=error.status_code)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
    return JSONResponse({"error": f"bad request ({problems}): see GET /docs"}, status_code=400)


IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "the image file (PNG, JPEG, WebP, BMP or TIFF) as the body, or a multipart form upload",
        "content": {
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in IMAGE_TYPES},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"}}}},
        },
    }
}


@serve.deployment
@serve.ingress(app)
class Api:
    """`servers`: each served model's deployment handle; `variants`: each model's variant
    names; `default_variants`: the variant a request without ?variant= gets;
    `unavailable`: models that are not served, and why; `token_sha256`: the SHA-256 of the
    bearer token every route but /healthz asks for (None: none)."""

    def __init__(self, servers: dict[str, DeploymentHandle], variants: dict[str, list[str]],
                 default_variants: dict[str, str], unavailable: dict[str, str], max_pixels: int, max_bytes: int,
                 token_sha256: str | None = None, retry_after_s: int = 2):
        self.servers, self.variants, self.default_variants = servers, variants, default_variants
        self.unavailable, self.max_pixels, self.max_bytes = unavailable, max_pixels, max_bytes
        self.token_sha256, self.retry_after_s = token_sha256, retry_after_s

    def _authorize(self, request: Request) -> None:
        """With a token set: 401 unless the request carries `Authorization: Bearer TOKEN`.
        Checked before the body is read."""
        if self.token_sha256 is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = hashlib.sha256(token.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.token_sha256):
            raise ApiError(401, "missing or wrong bearer token: send Authorization: Bearer TOKEN",
                           {"WWW-Authenticate": "Bearer"})

    @app.get("/healthz", summary="200 once every model deployment serves; 503 before")
    async def healthz(self) -> JSONResponse:
        name = serve.get_replica_context().app_name
        status = (await asyncio.to_thread(serve.status)).applications.get(name)
        deployments = {d: s.status.value for d, s in status.deployments.items()} if status else {}
        waiting = {d: s for d, s in deployments.items() if s not in READY}
        if status is None or waiting:
            return JSONResponse({"error": f"not ready: {waiting or 'the application is not deployed'}",
                                 "deployments": deployments}, status_code=503)
        return JSONResponse({"status": "ok", "deployments": deployments})

    @app.get("/models", summary="the served models: version, variants, input size, device, batch size")
    async def models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        infos = await asyncio.gather(*(handle.describe.remote() for handle in self.servers.values()))
        return {"models": list(infos), "unavailable": self.unavailable}

    @app.post("/segment/{model}", openapi_extra=IMAGE_BODY,
              summary="segment the person in an image: JSON with the mask as base64 PNG (0/255)")
    async def segment(self, model: str, request: Request,
                      variant: str | None = Query(None, description="a variant of the model (GET /models), "
                                                  "or 'all'; default: the best one of the benchmark")) -> dict:
        self._authorize(request)
        handle = self._server(model)
        variant = self._variant(model, variant)
        data = await self._image_bytes(request)
        image = await asyncio.to_thread(self._decode, data)
        try:
            return await handle.segment.remote(image, variant)
        except BackPressureError:
            raise ApiError(503, f"{model}'s queue is full: retry in {self.retry_after_s} s",
                           {"Retry-After": str(self.retry_after_s)}) from None
        except Exception as error:
            cause = getattr(error, "cause", None) or error
            if isinstance(cause, ModelError):
                raise ApiError(500, str(cause)) from None
            raise ApiError(503, f"{model} could not answer ({type(cause).__name__}: {cause}); its replica is "
                           "being replaced: retry in a few seconds") from None

    def _server(self, model: str) -> DeploymentHandle:
        if model in self.servers:
            return self.servers[model]
        if model in self.unavailable:
            raise ApiError(503, f"{model} is not served: {self.unavailable[model]}")
        raise ApiError(404, f"no model {model!r}; served: {', '.join(self.servers)} (GET /models)")

    def _variant(self, model: str, variant: str | None) -> str:
        if variant is None:
            return self.default_variants[model]
        if variant != "all" and variant not in self.variants[model]:
            raise ApiError(400, f"{model} has no variant {variant!r}; use one of "
                           f"{', '.join(self.variants[model])}, or 'all'")
        return variant

    async def _image_bytes(self, request: Request) -> bytes:
        """The image file: the body, or the first file of a multipart form."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and kind not in IMAGE_TYPES and kind != "multipart/form-data":
            raise ApiError(415, f"content type {kind!r} is not an image: send the file as the body with "
                           "Content-Type image/png or image/jpeg (curl -H 'Content-Type: image/png' "
                           "--data-binary @FILE), or as a multipart form upload (curl -F file=@FILE)")
        too_big = ApiError(413, f"the request body is over --max-bytes ({self.max_bytes} bytes): send a "
                           "smaller image, or restart the API with a larger --max-bytes")
        if int(request.headers.get("content-length") or 0) > self.max_bytes:
            raise too_big
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_bytes:
                raise too_big
        if kind == "multipart/form-data":
            body = await self._uploaded_file(request, bytes(body))
        if not body:
            raise ApiError(400, "the request has no image: send the image file as the body "
                           "(curl --data-binary @FILE) or as a form upload (curl -F file=@FILE)")
        return bytes(body)

    async def _uploaded_file(self, request: Request, body: bytes) -> bytes:
        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_part_size=self.max_bytes)
        except Exception as error:
            raise ApiError(400, f"bad multipart form ({error}): upload the image as a file field "
                           "(curl -F file=@FILE)") from None
        files = [value for value in form.values() if isinstance(value, UploadFile)]
        if not files:
            raise ApiError(400, "the multipart form has no file: upload the image as a file field "
                           "(curl -F file=@FILE)")
        return await files[0].read()

    def _decode(self, data: bytes):
        """The image as evaluation decodes it (`decode_image`): only a PNG, JPEG, WebP, BMP or
        TIFF whose header declares at most `max_pixels` pixels is decoded (a small file can
        declare a huge image)."""
        try:
            return decode_image(data, self.max_pixels)
        except TooManyPixels as error:
            raise ApiError(413, f"{error}: send a smaller image, or restart the API with a larger "
                           "data.max_pixels") from None
        except ValueError as error:
            raise ApiError(400, f"the body is not an image we can read ({error}): send a {FORMATS} file") from None
