"""How the judge reaches an endpoint: which openai client, which credentials, which limits.

    Azure, URL ending in /openai/v1   AsyncOpenAI(base_url=URL), the deployment as `model`, no api-version
    Azure, resource URL               AsyncAzureOpenAI (/openai/deployments/NAME/...?api-version=V)
    OpenAI-compatible                 AsyncOpenAI(base_url=URL)

Credentials: the endpoint's key (`judge.auth = "key"`), or an Entra ID token
(`judge.auth = "entra"`: azure-identity's DefaultAzureCredential for the Cognitive Services
scope, refreshed by the SDK before each request; the optional extra `jobrl-async[azure]`).
Every token fetched is registered with the log redactor before it is used.

The server is not trusted to be polite (issue: hostile servers): redirects are not followed
(httpx would carry Azure's `api-key` header to another origin), a reply body is read up to
MAX_BODY_BYTES and no further (a verdict is a few hundred bytes), and the client gives each
attempt a total deadline on top of the SDK's per-read timeout (a server that trickles a byte
at a time never trips a read timeout).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
import openai

from ..errors import ConfigError, JudgeError
from ..ops import log as logging_

MAX_BODY_BYTES = 1024 * 1024
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"


class BodyTooLarge(httpx2.ReadError):
    """The server sent more than MAX_BODY_BYTES: the transfer is cut (the SDK sees a read error)."""


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, cap: int) -> None:
        self._inner, self._cap, self._read = inner, cap, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._read += len(chunk)
            if self._read > self._cap:
                raise BodyTooLarge(f"the reply body is larger than {self._cap} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedTransport(httpx2.AsyncBaseTransport):
    """httpx's transport with every response body cut at `cap` bytes (Content-Length checked first)."""

    def __init__(self, cap: int = MAX_BODY_BYTES) -> None:
        self._inner = httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_connections=1000,
                                                                     max_keepalive_connections=100))
        self._cap = cap

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._cap:
            await response.aclose()
            raise BodyTooLarge(f"the reply body is {declared} bytes, more than {self._cap}", request=request)
        response.stream = _CappedStream(response.stream, self._cap)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def http_client(timeout_s: float) -> httpx2.AsyncClient:
    return openai.DefaultAsyncHttpxClient(transport=CappedTransport(), follow_redirects=False,
                                          timeout=timeout_s)


def is_v1_url(url: str) -> bool:
    """Azure's v1 API: the resource URL with /openai/v1 (the plain client, no api-version)."""
    return url.rstrip("/").endswith("/openai/v1")


TokenProvider = Callable[[], Awaitable[str]]


class EntraToken:
    """An Entra ID bearer token provider for one endpoint, closed with the client."""

    def __init__(self, where: str) -> None:
        try:
            from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider
        except ImportError:
            raise ConfigError(f"{where}: judge.auth = \"entra\" needs azure-identity: "
                              "pip install 'jobrl-async[azure]'") from None
        self.where = where
        self._credential = DefaultAzureCredential()
        self._provider = get_bearer_token_provider(self._credential, ENTRA_SCOPE)

    async def __call__(self) -> str:
        try:
            token = await self._provider()
        except Exception as e:  # azure-identity's chain failed: say which endpoint, not the token
            raise JudgeError(f"Entra ID sign-in for the judge ({self.where}) failed: "
                             f"{logging_.redact(_one_line(e))[:400]}") from None
        logging_.refresh_secrets([token])  # before the SDK puts it in a header
        return token

    async def aclose(self) -> None:
        await self._credential.close()


def _one_line(e: Exception) -> str:
    """azure-identity's message in one line: its summary and each credential's reason."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    reasons = [line for line in lines[1:] if ":" in line and not line.startswith(("To mitigate", "Attempted"))]
    return "; ".join([lines[0], *reasons])


def make_sdk(kind: str, url: str, model: str, api_version: str, key: str, entra: EntraToken | None,
             timeout_s: float) -> openai.AsyncOpenAI:
    """The openai client for one endpoint; our retries only (`max_retries=0`)."""
    common: dict[str, Any] = {"max_retries": 0, "timeout": timeout_s, "http_client": http_client(timeout_s)}
    if kind == "azure" and not is_v1_url(url):
        auth: dict[str, Any] = {"azure_ad_token_provider": entra} if entra else {"api_key": key}
        return openai.AsyncAzureOpenAI(azure_endpoint=url, api_version=api_version, azure_deployment=model,
                                       **auth, **common)
    return openai.AsyncOpenAI(base_url=url, api_key=entra or key, **common)
