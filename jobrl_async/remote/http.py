"""HTTP to the completion servers: one aiohttp session, bounded reads, statuses as errors, retries.

Invariant: a call returns a whole answer of at most `limit` bytes (an error body: `ERROR_BYTES`)
or raises `Transient`: nothing is read past the bound, a failure is never half an answer. A
status a later try may pass (429, 408/409, 5xx) is `Transient`, carrying what `Retry-After`
asked; any other refusal is a `RemoteGeneratorError` that names the server. Neither the API key
nor a password in a server URL ever reaches a message.

aiohttp, not openai's client: already a runtime dependency (the fake servers use it), and it
lets us read a reply in chunks and stop past a size bound before parsing it (replies hold
n x max_tokens log-probs). openai's `httpx2` is a transitive dependency whose API we would not
control.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from tenacity import AsyncRetrying

from ..errors import ModelError
from ..ops import log as logging_
from ..ops.log import host_of
from ..retry import retry_after_s, retryable_status, retrying
from .options import RemoteOptions, RemoteStats, log
from .reply import MalformedReply, server_message

ERROR_BYTES = 64 * 1024  # an error body is read up to this, for its message
CHUNK_BYTES = 64 * 1024


class RemoteGeneratorError(ModelError):
    """A generator server refused us (at start-up, or a request as such); names the server."""

    kind = "generator"

    def __init__(self, text: str, status: int = 0) -> None:
        super().__init__(text)
        self.status = status  # the HTTP status of the refusal, 0 when there was none


class Transient(Exception):
    """A failure worth retrying (on the next server): a 429/5xx, a timeout, a bad reply."""

    def __init__(self, text: str, retry_after: float | None = None, server: str = "") -> None:
        super().__init__(text)
        self.retry_after = retry_after  # seconds the server asked us to wait, if it did
        self.server = server  # the URL that failed


def message_of(error: BaseException) -> str:
    """An error's message without the "generator: " kind prefix (it goes inside another message)."""
    return str(error.args[0]) if isinstance(error, RemoteGeneratorError) and error.args else str(error)


class Servers:
    """The HTTP side of the remote generator, shared by sampling, adapter loads and the probe."""

    def __init__(self, options: RemoteOptions, stats: RemoteStats, api_key: str = "") -> None:
        self.opts, self.stats = options, stats
        self._key = api_key
        # The key, and any password in a server URL (http://user:password@host), never reach a log.
        logging_.refresh_secrets([api_key, *(urlsplit(u).password or "" for u in options.urls)])
        self._session: aiohttp.ClientSession | None = None

    async def call(self, method: str, url: str, path: str, body: Any, limit: int,
                   timeout_s: float | None = None) -> tuple[int, bytes, Mapping[str, str]]:
        """(status, body, headers); `Transient` for what never got a whole answer."""
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.opts.timeout_s)
        data = orjson.dumps(body) if body is not None else None
        try:
            async with self._client().request(method, url + path, data=data, timeout=timeout) as resp:
                raw = await read_bounded(resp, limit if resp.status < 400 else ERROR_BYTES)
                return resp.status, raw, resp.headers
        except MalformedReply as e:
            raise Transient(f"oversized reply from {host_of(url)}: {e}", server=url) from None
        except TimeoutError:
            raise Transient(f"no answer from {host_of(url)} within {timeout.total:g} s", server=url) from None
        except aiohttp.ClientError as e:
            raise Transient(f"cannot reach {host_of(url)}: {self.scrub(str(e) or type(e).__name__)}",
                            server=url) from None

    def raise_for_status(self, url: str, path: str, status: int, raw: bytes, headers: Mapping[str, str]) -> None:
        """`Transient` for a status worth retrying, else the refusal (`RemoteGeneratorError`)."""
        if status == 429:
            self.stats.http_429 += 1
        if retryable_status(status):
            raise Transient(f"HTTP {status} from {host_of(url)}: {self.scrub(server_message(raw))}",
                            retry_after=retry_after_s(headers), server=url)
        raise self.refused(url, path, status, raw)

    def refused(self, url: str, path: str, status: int, raw: bytes) -> RemoteGeneratorError:
        where = f"{host_of(url)}{path}"
        message = self.scrub(server_message(raw))
        if status == 401:
            return RemoteGeneratorError(f"authentication failed at {where} (HTTP 401): check VLLM_API_KEY", 401)
        if status == 404 and path == "/v1/completions":
            return RemoteGeneratorError(f"model '{self.opts.model}' not found at {where} (HTTP 404): "
                                        f"{message}; check generator.model", 404)
        return RemoteGeneratorError(f"request rejected by {where} (HTTP {status}): {message}", status)

    def retrying(self, counter: str) -> AsyncRetrying:
        """Retries of `Transient` failures (the shared policy), counted in `self.stats.<counter>`."""

        def count(attempt: int, wait: float, error: BaseException | None) -> None:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            log().debug("generator_retry", attempt=attempt, wait_s=round(wait, 3), reason=self.scrub(str(error)))

        return retrying(
            attempts=self.opts.max_retries + 1,
            first_s=self.opts.backoff_first_s,
            max_s=self.opts.backoff_max_s,
            retry_if=lambda e: isinstance(e, Transient),
            asked=lambda e: e.retry_after if isinstance(e, Transient) else None,
            on_retry=count,
        )

    def scrub(self, text: str) -> str:
        if self._key:
            text = text.replace(self._key, logging_.REDACTED)
        return logging_.redact(text)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Content-Type": "application/json"}
            if self._key:
                headers["Authorization"] = f"Bearer {self._key}"
            # Connections for every request in flight plus an adapter load per server.
            connector = aiohttp.TCPConnector(limit=self.opts.max_concurrency + 2 * len(self.opts.urls))
            self._session = aiohttp.ClientSession(headers=headers, connector=connector, raise_for_status=False)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or `MalformedReply` as soon as it is longer than `limit` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        raise MalformedReply(f"{resp.content_length} bytes, more than the {limit} expected")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise MalformedReply(f"more than the {limit} bytes expected")
        chunks.append(chunk)
    return b"".join(chunks)
