"""The S3 store: objects under `s3://bucket/prefix`, through aioboto3.

Honours the standard AWS environment (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_REGION`
/ `AWS_DEFAULT_REGION`, `AWS_PROFILE`, the credential chain). Retries on throttling and 5xx are
botocore's own ("standard" mode); large transfers go multipart.

Invariants: at most `storage.max_concurrency` requests are in flight (one semaphore around
every request); a read never holds more than one chunk past its `max_bytes`, whatever the
object's ContentLength says; every error is one `StorageError` built from the error's code,
never from botocore's text, which can carry request URLs and signatures (`s3_error`).
`write_if` is S3's conditional write (If-Match / If-None-Match on the ETag).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aioboto3
import aiohttp
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotocoreConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    NoCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from ..config import StorageConfig
from ..errors import StorageError
from .interface import CHUNK, MiB, ObjectInfo, StorageConflict, check_key, check_prefix, over_limit, write_probe
from .local import AtomicFile, local_error

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
# a conditional write lost: the object changed (412), or a concurrent write to it is under way (409)
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
# codes botocore's standard mode retries: when one reaches us, the attempts are spent
_RETRIED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
            "RequestTimeout", "InternalError", "ServiceUnavailable"}
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


class S3Store:
    """Objects under `s3://bucket/prefix`. One client, opened on first use, closed on exit."""

    def __init__(self, bucket: str, prefix: str = "", cfg: StorageConfig | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cfg = cfg or StorageConfig()
        self._limit = asyncio.Semaphore(self.cfg.max_concurrency)
        self._transfer = TransferConfig(
            multipart_threshold=self.cfg.multipart_threshold_mb * MiB,
            multipart_chunksize=self.cfg.multipart_chunk_mb * MiB,
            max_concurrency=self.cfg.max_concurrency,
            max_io_queue=self.cfg.max_concurrency,  # parts read ahead: bounds memory
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._opening = asyncio.Lock()
        self._endpoint = "the S3 endpoint"  # the real URL once the client is open

    async def __aenter__(self) -> "S3Store":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._client = None
        await self._stack.aclose()

    def uri(self, key: str = "") -> str:
        path = self._key(key) if key else self.prefix
        return f"s3://{self.bucket}/{path}" if path else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _open(self) -> Any:
        async with self._opening:
            if self._client is None:
                session = aioboto3.Session(profile_name=self.cfg.profile or None)
                self._client = await self._stack.enter_async_context(
                    session.client("s3", region_name=_region(self.cfg), config=self._botocore_config())
                )
                self._endpoint = _safe_endpoint(self._client.meta.endpoint_url)
        return self._client

    def _botocore_config(self) -> BotocoreConfig:
        return BotocoreConfig(
            # botocore's "max_attempts" counts retries only; "total_max_attempts" counts them all
            retries={"mode": "standard", "total_max_attempts": self.cfg.max_attempts},
            max_pool_connections=max(10, self.cfg.max_concurrency),
        )

    @contextlib.asynccontextmanager
    async def _request(self, action: str, key: str) -> AsyncIterator[Any]:
        """The client, under the concurrency bound, with errors turned into StorageError."""
        uri = f"s3://{self.bucket}/{key}"
        async with self._limit:
            try:
                yield self._client or await self._open()
            except (BotoCoreError, ClientError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise s3_error(exc, action, self.bucket, uri, self._endpoint, self.cfg) from None

    async def _chunks(self, body: Any, key: str, max_bytes: int | None) -> AsyncIterator[bytes]:
        """The body's chunks, refused as soon as they add up to more than `max_bytes`."""
        received = 0
        async for chunk in body.iter_chunks(CHUNK):
            received += len(chunk)
            if max_bytes is not None and received > max_bytes:
                raise over_limit(self.uri(key), max_bytes)
            yield chunk

    async def read_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        full = self._key(key)
        async with self._request("read", full) as s3:
            resp = await s3.get_object(Bucket=self.bucket, Key=full)
            return await self._bounded_body(resp, key, max_bytes)

    async def _bounded_body(self, resp: dict, key: str, max_bytes: int | None) -> bytes:
        """The body, refused as soon as it is over `max_bytes`: whatever ContentLength says."""
        body = resp["Body"]
        async with body:  # `as` would give the raw aiohttp response, not botocore's checks
            if max_bytes is None:
                return await body.read()
            size = resp.get("ContentLength", 0)
            if size > max_bytes:
                raise StorageError(f"{self.uri(key)} is {size} bytes, over the {max_bytes}-byte limit")
            return b"".join([chunk async for chunk in self._chunks(body, key, max_bytes)])

    async def write_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        async with self._request("write", full) as s3:
            # the managed transfer switches to multipart above the threshold
            await s3.upload_fileobj(io.BytesIO(data), self.bucket, full, Config=self._transfer)

    async def read_tagged(self, key: str, max_bytes: int) -> tuple[bytes, str] | None:
        """The object's bytes and its ETag, or None when there is none."""
        full = self._key(key)
        async with self._request("read", full) as s3:
            try:
                resp = await s3.get_object(Bucket=self.bucket, Key=full)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    return None
                raise
            return await self._bounded_body(resp, key, max_bytes), str(resp.get("ETag", ""))

    async def write_if(self, key: str, data: bytes, expected: str | None) -> str:
        """Write only if the ETag is still `expected` (None: only if there is no object), with
        S3's conditional writes (If-Match / If-None-Match); else StorageConflict. The new ETag."""
        full = self._key(key)
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        async with self._request("write", full) as s3:
            try:
                resp = await s3.put_object(Bucket=self.bucket, Key=full, Body=data, **condition)
            except ClientError as exc:
                if _code(exc) in _CONFLICT or _code(exc) in _NOT_FOUND:
                    raise StorageConflict(f"{self.uri(key)} changed since it was read") from None
                raise
        return str(resp.get("ETag", ""))

    async def upload_file(self, key: str, local_path: str | os.PathLike) -> None:
        full, path = self._key(key), Path(local_path)
        if not path.is_file():
            raise StorageError(f"cannot upload {path} to {self.uri(key)}: no such file")
        async with self._request("upload to", full) as s3:
            await s3.upload_file(str(path), self.bucket, full, Config=self._transfer)

    async def download_file(self, key: str, local_path: str | os.PathLike, max_bytes: int | None = None) -> None:
        full, path = self._key(key), Path(local_path)
        async with self._request("download", full) as s3:
            resp = await s3.get_object(Bucket=self.bucket, Key=full)
            # streamed into a temp file: a failed download never leaves a partial file behind
            out = await asyncio.to_thread(AtomicFile, path)
            try:
                body = resp["Body"]
                async with body, contextlib.aclosing(self._chunks(body, key, max_bytes)) as chunks:
                    async for chunk in chunks:
                        await asyncio.to_thread(out.file.write, chunk)
            except BaseException as exc:
                await asyncio.to_thread(out.discard)
                if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError):
                    raise local_error(path, "write", exc) from None  # the local disk, not S3
                raise
        await asyncio.to_thread(out.commit)

    async def exists(self, key: str) -> bool:
        full = self._key(key)
        async with self._request("check", full) as s3:
            try:
                await s3.head_object(Bucket=self.bucket, Key=full)
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    return False
                raise
        return True

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        root = self.prefix + "/" if self.prefix else ""
        full = root + check_prefix(prefix)
        out: list[ObjectInfo] = []
        async with self._request("list", full) as s3:
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/"):  # a console's "folder" marker, not an object
                        continue
                    out.append(ObjectInfo(obj["Key"][len(root):], obj["Size"], obj["LastModified"]))
        return sorted(out, key=lambda o: o.key)

    async def delete(self, key: str) -> None:
        full = self._key(key)
        async with self._request("delete", full) as s3:
            await s3.delete_object(Bucket=self.bucket, Key=full)

    async def delete_prefix(self, prefix: str) -> None:
        if not check_prefix(prefix):
            raise StorageError(f"refusing to delete everything under {self.uri()} (empty prefix)")
        keys = [self._key(o.key) for o in await self.list(prefix)]
        for start in range(0, len(keys), _DELETE_BATCH):
            await self._delete_batch(keys[start:start + _DELETE_BATCH])

    async def _delete_batch(self, batch: list[str]) -> None:
        async with self._request("delete", batch[0]) as s3:
            resp = await s3.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
        if failed := resp.get("Errors"):
            first = failed[0]
            raise StorageError(
                f"cannot delete s3://{self.bucket}/{first.get('Key')}: {first.get('Code')}"
                f" ({len(failed)} of {len(batch)} keys failed)"
            )

    async def check_writable(self) -> None:
        await write_probe(self)


def _region(cfg: StorageConfig) -> str | None:
    # botocore reads AWS_DEFAULT_REGION and the profile itself, but not AWS_REGION
    return cfg.region or os.environ.get("AWS_REGION") or None


def _safe_endpoint(url: str | None) -> str:
    """The endpoint without user info, path or query (nothing secret can ride along)."""
    if not url:
        return "S3"
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.hostname or "", "", "", "")) + (
        f":{parts.port}" if parts.port else ""
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def s3_error(
    exc: BaseException, action: str, bucket: str, uri: str, endpoint: str, cfg: StorageConfig
) -> StorageError:
    """One clear line from a botocore/aiohttp error, built from its code, never its text."""
    where = f"cannot {action} {uri}"
    if isinstance(exc, ClientError):
        return _client_error(exc, where, bucket, endpoint, cfg)
    if isinstance(exc, NoCredentialsError):
        hint = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        return StorageError(f"{where}: no AWS credentials found ({hint})")
    if isinstance(exc, ProfileNotFound):
        profile = cfg.profile or os.environ.get("AWS_PROFILE", "")
        return StorageError(f"{where}: AWS profile '{profile}' not found")
    if isinstance(exc, (ReadTimeoutError, asyncio.TimeoutError)):
        return StorageError(f"{where}: {endpoint} timed out after {cfg.max_attempts} attempts")
    if isinstance(exc, (BotoConnectionError, aiohttp.ClientConnectionError)):
        return StorageError(f"{where}: cannot reach {endpoint} after {cfg.max_attempts} attempts")
    return StorageError(f"{where}: {type(exc).__name__}")


def _client_error(exc: ClientError, where: str, bucket: str, endpoint: str, cfg: StorageConfig) -> StorageError:
    code = _code(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    if code == "NoSuchBucket":
        return StorageError(f"{where}: bucket '{bucket}' does not exist")
    if code in _NOT_FOUND:
        return StorageError(f"{where}: it does not exist")
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return StorageError(f"{where}: access denied (check the credentials' permissions on '{bucket}')")
    if code == "InvalidAccessKeyId":
        return StorageError(f"{where}: the AWS access key id is not known to {endpoint}")
    if code == "SignatureDoesNotMatch":
        return StorageError(f"{where}: the AWS secret key does not match the access key id")
    if code in ("ExpiredToken", "TokenRefreshRequired", "InvalidToken"):
        return StorageError(f"{where}: the AWS session token is expired or invalid")
    if code in _RETRIED or str(status).startswith("5"):
        return StorageError(f"{where}: {code} (HTTP {status}) after {cfg.max_attempts} attempts")
    return StorageError(f"{where}: {code or 'error'} (HTTP {status})")
