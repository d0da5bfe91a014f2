"""LoRA adapters on the servers: their names and folders, loading, reloading, unloading.

`publish(version, folder)` loads the adapter as `policy-v{version}` on every server
(`/v1/load_lora_adapter`); requests sent after that name it, and each trajectory records the
version of the adapter its request named. Before any load, requests name the base model:
version 0, since a fresh LoRA adapter is the identity (B = 0). A server that lost our adapter
(restarted) answers 404: the adapter is loaded there again (`reload_if_current`).

Invariants: requests never name an adapter older than the one last published (the staleness
bound holds); a replaced adapter is unloaded only once no request in flight names it
(`in_flight[name] == 0`); one load at a time (`lock`), and requests never wait on it.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..ops.log import host_of
from .http import ERROR_BYTES, RemoteGeneratorError, Servers, Transient, message_of
from .options import RemoteOptions, RemoteStats, log
from .reply import server_message

ADAPTER_PREFIX = "policy-v"


@dataclass(frozen=True)
class Adapter:
    """What a request names: the base model (version 0, no path) or a loaded LoRA adapter."""

    name: str
    version: int
    path: str = ""  # as the servers see it


def adapter_name(version: int) -> str:
    return f"{ADAPTER_PREFIX}{version}"


def adapter_folder(root: str | Path, version: int) -> Path:
    """Where the trainer saves the adapter of `version` for the servers to load."""
    return Path(root).expanduser() / adapter_name(version)


def prune_adapter_folders(root: str | Path, keep: int = 3) -> list[Path]:
    """Delete all but the newest `keep` `policy-vN` folders under `root`; returns those deleted.

    Three by default: the adapter being loaded, the current one, and the previous one that
    requests in flight may still name (a server that restarts reloads from its folder).
    """
    found = []
    for path in Path(root).expanduser().glob(f"{ADAPTER_PREFIX}*"):
        suffix = path.name.removeprefix(ADAPTER_PREFIX)
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    doomed = [path for _, path in sorted(found)[: max(0, len(found) - keep)]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


async def prune_old_adapters(root: str | Path, keep: int = 3) -> list[Path]:
    """`prune_adapter_folders` in a worker thread: deleting folders is blocking file I/O."""
    return await asyncio.to_thread(prune_adapter_folders, root, keep)


def server_path(folder: str | Path, local_root: str = "", server_root: str = "") -> str:
    """Where the servers find `folder`: the same path, or moved from `local_root` to `server_root`.

    A shared volume is often mounted at different places (`/data/adapters` here, `/adapters` in
    the vLLM container): the part of `folder` below `local_root` is kept.
    """
    path = Path(folder).expanduser().resolve()
    if not server_root:
        return str(path)
    root = Path(local_root).expanduser().resolve() if local_root else None
    if root is None or not path.is_relative_to(root):
        raise ConfigError(
            f"adapter folder {path} is not under generator.adapter_root {local_root or '(unset)'}: "
            "the servers could not find it"
        )
    return str(Path(server_root) / path.relative_to(root))


class Adapters:
    """The adapter requests name (`current`) and the adapters loaded on the servers."""

    def __init__(self, servers: Servers, options: RemoteOptions, stats: RemoteStats) -> None:
        self.servers, self.opts, self.stats = servers, options, stats
        self.current = Adapter(options.model, 0)
        self.lock = asyncio.Lock()  # one load at a time; requests never wait on it
        self.in_flight: Counter[str] = Counter()  # adapter name -> requests naming it (> 0)
        self._stale: dict[str, Adapter] = {}  # replaced adapters, unloaded once idle

    @contextmanager
    def in_use(self) -> Iterator[Adapter]:
        """The current adapter, counted in flight until the request that names it has its answer.

        Chosen and counted with no await in between: a load that completes meanwhile cannot
        unload it under the request.
        """
        adapter = self.current
        self.in_flight[adapter.name] += 1
        try:
            yield adapter
        finally:
            self.in_flight[adapter.name] -= 1
            if self.in_flight[adapter.name] <= 0:
                del self.in_flight[adapter.name]

    async def publish(self, version: int, folder: str | Path | None,
                      take_out: Callable[[str, str], None]) -> None:
        """Requests name the adapter of `version` (in `folder`; None: the base model) from now on.

        A server that still refuses it after its retries is `take_out(url, reason)`: the probe
        loads it there later. Raises only for a bug, or a folder outside `generator.adapter_root`.
        """
        if folder is None:
            if version != 0:
                raise RemoteGeneratorError(
                    f"policy version {version} has no adapter folder: a remote generator needs the "
                    "adapter saved where the servers can read it (generator.adapter_root)"
                )
            async with self.lock:
                self._switch(Adapter(self.opts.model, 0))  # the base model is policy version 0
            return
        path = server_path(folder, self.opts.adapter_root, self.opts.server_adapter_root)
        adapter = Adapter(adapter_name(version), version, path)
        async with self.lock:
            if adapter == self.current:
                return
            started = time.monotonic()
            self._stale.pop(adapter.name, None)
            results = await asyncio.gather(*(self._load_retrying(url, adapter) for url in self.opts.urls),
                                           return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, (Transient, RemoteGeneratorError)):
                    raise result  # a bug or a cancellation: not ours to reword
            self._switch(adapter)
            refused = [(url, r) for url, r in zip(self.opts.urls, results) if isinstance(r, BaseException)]
            for url, error in refused:
                take_out(url, f"adapter {adapter.name} from {adapter.path} not loaded: {message_of(error)}")
            if len(refused) < len(self.opts.urls):
                self.stats.loads += 1
                log().info("adapter_loaded", adapter=adapter.name, version=version, path=path,
                           servers=len(self.opts.urls) - len(refused), seconds=round(time.monotonic() - started, 3))
            if self.opts.unload_stale:
                await self._unload_idle()

    async def restore_on(self, url: str) -> Adapter:
        """The current adapter loaded on `url` (again: a server back from an outage); returns it."""
        async with self.lock:
            adapter = self.current
            if adapter.path:
                await self._load_on(url, adapter)
        return adapter

    async def reload_if_current(self, url: str, adapter: Adapter) -> None:
        """`url` lost `adapter` (a restart): one try at loading it there again, if it is still current.

        The request's retry follows, naming whatever is current by then.
        """
        if adapter != self.current:
            return
        try:
            await self._load_on(url, adapter)
        except (Transient, RemoteGeneratorError) as e:
            raise Transient(f"{host_of(url)} lost adapter {adapter.name} and did not take it back: {e}",
                            server=url) from None
        self.stats.reloads += 1
        log().warning("adapter_reloaded", adapter=adapter.name, server=host_of(url))

    def _switch(self, adapter: Adapter) -> None:
        """Requests name `adapter` from now on; the adapter it replaces is unloaded once idle."""
        previous, self.current = self.current, adapter
        if previous.path and previous.name != adapter.name:
            self._stale[previous.name] = previous

    async def _load_retrying(self, url: str, adapter: Adapter) -> None:
        await self.servers.retrying(counter="load_retries")(self._load_on, url, adapter)

    async def _load_on(self, url: str, adapter: Adapter) -> None:
        body = {"lora_name": adapter.name, "lora_path": adapter.path}
        status, raw, headers = await self.servers.call("POST", url, "/v1/load_lora_adapter", body, ERROR_BYTES)
        if status < 400:
            return
        message = server_message(raw)
        if status == 400 and "already" in message and "loaded" in message:
            return  # an earlier attempt got through before its answer was lost
        if status == 404:
            # vLLM's "No adapter found": the folder is not (yet) visible on the server's side
            # of a shared volume. Worth a few retries, then the hint says what to fix.
            raise Transient(f"HTTP 404 from {host_of(url)}: {message} (can the server read {adapter.path}? "
                            "see generator.adapter_root / server_adapter_root)", server=url)
        self.servers.raise_for_status(url, "/v1/load_lora_adapter", status, raw, headers)

    async def _unload_idle(self) -> None:
        """Unload replaced adapters that no request in flight names (best effort)."""
        for name, adapter in list(self._stale.items()):
            if self.in_flight[name] > 0:
                continue  # still sampling: at the next load
            results = await asyncio.gather(*(self._unload_on(url, adapter) for url in self.opts.urls),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                log().warning("adapter_unload_failed", adapter=name, reason=self.servers.scrub(str(errors[0])))
            else:
                del self._stale[name]

    async def _unload_on(self, url: str, adapter: Adapter) -> None:
        status, raw, _ = await self.servers.call("POST", url, "/v1/unload_lora_adapter",
                                                 {"lora_name": adapter.name}, ERROR_BYTES)
        if status >= 400 and status != 404:  # 404: not there, which is what we wanted
            raise RemoteGeneratorError(f"HTTP {status} from {host_of(url)}: {server_message(raw)}")
