"""Images in requests, one way for every endpoint that takes them: multipart file parts, or
base64 strings (optionally `data:image/...;base64,` URLs) in a JSON object body.

`ImageBody(...)` is the dependency that reads them, with the request's other fields, and
`ImageBody.openapi()` the request body it documents. It refuses, before any analysis: a body
that is neither JSON nor multipart (415), a missing image or one that is not a file part or a
base64 string (422 naming the field), more images than `max_images` (413), and decoded images
over the upload limit together (413).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request
from starlette.datastructures import UploadFile

from facesphere.errors import ImageError
from facesphere.serve.deps import service
from facesphere.serve.limits import BodyTooLargeError
from facesphere.serve.state import ServiceState

_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class ImagePart:
    """One image of a request: its field (`image`, `images[2]`), its label in answers (the
    uploaded file's name, else the field) and its encoded bytes; or, for an image of a batch
    that is not valid base64, that `error` (answered for that image alone)."""

    field: str
    label: str
    data: bytes
    error: ImageError | None = None


@dataclass(frozen=True)
class ImageRequest:
    """The images of a request by field, and its other (non-image) fields."""

    images: dict[str, list[ImagePart]]
    fields: dict[str, Any]

    def one(self, field: str) -> ImagePart:
        """The single image of `field`."""
        return self.images[field][0]


def decode_base64(text: Any, field: str) -> bytes:
    """The bytes of a base64 string (whitespace and a `data:image/...;base64,` prefix allowed);
    ImageError naming `field` otherwise."""
    if not isinstance(text, str):
        raise ImageError(field, "must be a base64 string")
    prefix = _DATA_URL.match(text)
    if prefix is not None:
        text = text[prefix.end() :]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(field, "not valid base64") from exc


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object (422 otherwise)."""
    try:
        body = await request.json()
    except RecursionError as exc:
        raise HTTPException(422, "body: nested too deeply") from exc
    except ValueError as exc:
        raise HTTPException(422, "body: not valid JSON") from exc
    if not isinstance(body, dict):
        raise HTTPException(422, "body: must be a JSON object")
    return body


def content_type(request: Request) -> str:
    """The request's media type, lower case, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class ImageBody:
    """Dependency reading a request's images: one each of `single` fields, one or more (up to
    the service's `max_images`) of the `many` field, and the `extra` fields (name:
    description), JSON objects: as text in a form, as themselves in a JSON body."""

    def __init__(
        self,
        *single: str,
        many: str | None = None,
        extra: dict[str, str] | None = None,
        each: bool = False,
    ) -> None:
        self.single = single
        self.many = many
        self.extra = extra or {}
        self.each = each  # a batch: an invalid base64 image is its own error, not the request's

    async def __call__(
        self, request: Request, state: ServiceState = Depends(service)
    ) -> ImageRequest:
        kind = content_type(request)
        if kind == "application/json":
            images, fields = self._from_json(await read_json_object(request))
        elif kind == "multipart/form-data":
            images, fields = await self._from_form(request)
        else:
            raise HTTPException(415, "send the images as multipart/form-data or as JSON")
        self._check(images, state)
        return ImageRequest(images, fields)

    def _from_json(self, body: dict[str, Any]) -> tuple[dict[str, list[ImagePart]], dict]:
        images: dict[str, list[ImagePart]] = {}
        for field in self.single:
            if field in body:
                images[field] = [ImagePart(field, field, decode_base64(body[field], field))]
        if self.many is not None and self.many in body:
            values = body[self.many]
            if not isinstance(values, list):
                raise ImageError(self.many, "must be a list of base64 strings")
            labels = [f"{self.many}[{number}]" for number in range(len(values))]
            images[self.many] = [self._part(label, value) for label, value in zip(labels, values)]
        return images, {name: body.get(name) for name in self.extra}

    def _part(self, field: str, value: Any) -> ImagePart:
        try:
            return ImagePart(field, field, decode_base64(value, field))
        except ImageError as exc:
            if not self.each:
                raise
            return ImagePart(field, field, b"", exc)

    async def _from_form(self, request: Request) -> tuple[dict[str, list[ImagePart]], dict]:
        images: dict[str, list[ImagePart]] = {}
        form = await request.form()
        try:
            for field in (*self.single, *([self.many] if self.many else [])):
                values = form.getlist(field)
                if field in self.single and len(values) > 1:
                    raise ImageError(field, "give one image")
                parts = []
                for number, value in enumerate(values):
                    name = field if field in self.single else f"{field}[{number}]"
                    if not isinstance(value, UploadFile):
                        raise ImageError(name, "must be a file part")
                    parts.append(ImagePart(name, value.filename or name, await value.read()))
                if parts:
                    images[field] = parts
            fields = {name: form.get(name) for name in self.extra}
        finally:
            await form.close()
        return images, fields

    def _check(self, images: dict[str, list[ImagePart]], state: ServiceState) -> None:
        for field in (*self.single, *([self.many] if self.many else [])):
            if not images.get(field):
                raise ImageError(field, "no image given")
        limit = state.config.max_images
        if self.many is not None and len(images[self.many]) > limit:
            raise BodyTooLargeError(
                f"{self.many}: {len(images[self.many])} images, over the limit of {limit} "
                "per request"
            )
        total = sum(len(part.data) for parts in images.values() for part in parts)
        if total > state.max_upload_bytes:
            raise BodyTooLargeError(
                f"images of {total} bytes, over the limit of {state.max_upload_bytes} bytes"
            )

    def openapi(self) -> dict[str, Any]:
        """The request body to document (`openapi_extra` of the endpoint)."""
        names = [*self.single, *([self.many] if self.many else [])]

        def properties(image: dict[str, Any]) -> dict[str, Any]:
            found: dict[str, Any] = {name: image for name in self.single}
            if self.many is not None:
                found[self.many] = {
                    "type": "array",
                    "items": image,
                    "description": "One or more images (at most the service's `max_images`).",
                }
            for name, description in self.extra.items():
                found[name] = {"type": "string", "description": description}
            return found

        binary = {"type": "string", "format": "binary"}
        encoded = {
            "type": "string",
            "format": "byte",
            "description": "Base64, optionally as a data:image/...;base64, URL.",
        }
        json_properties = properties(encoded)
        for name, description in self.extra.items():
            json_properties[name] = {"type": "object", "description": description}
        return {
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": names,
                            "properties": properties(binary),
                        }
                    },
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": names,
                            "properties": json_properties,
                        }
                    },
                },
            }
        }


PHOTO = ImageBody("image")
PHOTOS = ImageBody(many="images", each=True)
