"""The storage layer: local paths, file:// and s3:// (moto's server) behave alike."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from botocore.exceptions import ClientError, EndpointConnectionError

from jobrl_async.config import StorageConfig
from jobrl_async.errors import StorageError
from jobrl_async.storage import (
    TMP_PREFIX,
    LocalStore,
    Location,
    S3Store,
    StorageConflict,
    Store,
    open_store,
    parse_uri,
    read_uri,
    s3_error,
)
from tests.support.s3 import S3Env

SMALL_PARTS = StorageConfig(multipart_threshold_mb=5, multipart_chunk_mb=5)


@pytest.fixture
async def store(root_uri: str) -> AsyncIterator[Store]:
    async with open_store(root_uri, SMALL_PARTS) as s:
        yield s


def keys(infos: list) -> list[str]:
    return [i.key for i in infos]


# ---------------------------------------------------------------- URIs (pure)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("data/set.json", Location("file", "", "data/set.json")),
        ("/abs/dir", Location("file", "", "/abs/dir")),
        ("file:///abs/dir", Location("file", "", "/abs/dir")),
        ("s3://bucket/a/b/", Location("s3", "bucket", "a/b")),
        ("s3://bucket", Location("s3", "bucket", "")),
    ],
)
def test_parse_uri(uri: str, expected: Location) -> None:
    assert parse_uri(uri) == expected


@pytest.mark.parametrize("uri", ["s3://ab/key", "s3:///key", "s3://", "gs://bucket/key", "", "file://"])
def test_parse_uri_rejects_bad_uris_naming_them(uri: str) -> None:
    with pytest.raises(StorageError) as err:
        parse_uri(uri)
    assert repr(uri) in str(err.value) or not uri.strip()


# ---------------------------------------------------------------- every backend alike


async def test_bytes_round_trip_and_overwrite(store: Store) -> None:
    await store.write_bytes("best.json", b'{"step": 1}')
    assert await store.read_bytes("best.json") == b'{"step": 1}'
    await store.write_bytes("best.json", b'{"step": 22}')
    assert await store.read_bytes("best.json") == b'{"step": 22}'
    await store.write_bytes("empty", b"")
    assert await store.read_bytes("empty") == b""


async def test_file_round_trip_creates_folders(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "adapter.safetensors"
    src.write_bytes(os.urandom(100_000))
    await store.upload_file("step-000001/adapter.safetensors", src)
    dst = tmp_path / "down" / "deep" / "adapter.safetensors"
    await store.download_file("step-000001/adapter.safetensors", dst)
    assert dst.read_bytes() == src.read_bytes()
    assert not [p for p in dst.parent.iterdir() if p.name.startswith(TMP_PREFIX)]


async def test_list_is_recursive_sorted_with_sizes(store: Store) -> None:
    for key, size in [("b.json", 3), ("a/2.bin", 20), ("a/1.bin", 10), ("a/sub/x", 1), ("ab.txt", 5)]:
        await store.write_bytes(key, b"x" * size)
    everything = await store.list()
    assert keys(everything) == ["a/1.bin", "a/2.bin", "a/sub/x", "ab.txt", "b.json"]
    assert [i.size for i in everything] == [10, 20, 1, 5, 3]
    assert all(i.modified.tzinfo is not None for i in everything)
    assert keys(await store.list("a/")) == ["a/1.bin", "a/2.bin", "a/sub/x"]
    assert keys(await store.list("a")) == ["a/1.bin", "a/2.bin", "a/sub/x", "ab.txt"]  # string prefix
    assert keys(await store.list("a/sub/")) == ["a/sub/x"]
    assert await store.list("zzz/") == []


async def test_exists_and_delete(store: Store) -> None:
    assert not await store.exists("latest.json")
    await store.write_bytes("latest.json", b"{}")
    assert await store.exists("latest.json")
    await store.delete("latest.json")
    assert not await store.exists("latest.json")
    await store.delete("latest.json")  # deleting a missing key is not an error (as in S3)


async def test_delete_prefix_removes_one_checkpoint(store: Store) -> None:
    for key in ["step-000001/a", "step-000001/sub/b", "step-000002/a", "best.json"]:
        await store.write_bytes(key, b"1")
    await store.delete_prefix("step-000001/")
    assert keys(await store.list()) == ["best.json", "step-000002/a"]
    with pytest.raises(StorageError, match="empty prefix"):
        await store.delete_prefix("")


async def test_missing_key_names_it(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="nope/x.json") as err:
        await store.read_bytes("nope/x.json")
    assert "does not exist" in str(err.value)
    target = tmp_path / "out" / "x.json"
    with pytest.raises(StorageError, match="nope/x.json"):
        await store.download_file("nope/x.json", target)
    assert not target.exists()


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", ""])
async def test_invalid_keys_are_refused(store: Store, key: str) -> None:
    with pytest.raises(StorageError, match="invalid storage key"):
        await store.write_bytes(key, b"x")


async def test_check_writable_leaves_nothing_behind(store: Store) -> None:
    await store.check_writable()
    assert await store.list() == []


async def test_read_uri_with_a_size_bound(store: Store, root_uri: str) -> None:
    await store.write_bytes("data.json", b"[1, 2, 3]")
    uri = f"{root_uri}/data.json"
    assert await read_uri(uri) == b"[1, 2, 3]"
    assert await read_uri(uri, max_bytes=9) == b"[1, 2, 3]"
    with pytest.raises(StorageError, match="over the 8-byte limit") as err:
        await read_uri(uri, max_bytes=8)
    assert "data.json" in str(err.value)
    with pytest.raises(StorageError, match="over the 8-byte limit"):
        await store.read_bytes("data.json", max_bytes=8)


async def test_download_stops_at_its_bound_and_leaves_no_file(store: Store, tmp_path: Path) -> None:
    await store.write_bytes("step-000001/adapter_model.safetensors", b"x" * 4096)
    dest = tmp_path / "dl"
    await store.download_file("step-000001/adapter_model.safetensors", dest / "ok", max_bytes=4096)
    assert (dest / "ok").read_bytes() == b"x" * 4096
    with pytest.raises(StorageError, match="over the 4095-byte limit") as err:
        await store.download_file("step-000001/adapter_model.safetensors", dest / "big", max_bytes=4095)
    assert "step-000001/adapter_model.safetensors" in str(err.value)
    assert sorted(p.name for p in dest.iterdir()) == ["ok"]  # no partial file, no temp file


async def test_write_if_is_a_compare_and_swap(store: Store) -> None:
    assert await store.read_tagged("lease.json", 1024) is None
    first = await store.write_if("lease.json", b"run-a", None)  # create only
    with pytest.raises(StorageConflict):
        await store.write_if("lease.json", b"run-b", None)  # someone created it first
    assert await store.read_tagged("lease.json", 1024) == (b"run-a", first)
    second = await store.write_if("lease.json", b"run-a again", first)
    assert second != first
    with pytest.raises(StorageConflict):
        await store.write_if("lease.json", b"run-b", first)  # a stale tag: it changed since
    assert (await store.read_tagged("lease.json", 1024))[0] == b"run-a again"
    await store.delete("lease.json")
    with pytest.raises(StorageConflict):
        await store.write_if("lease.json", b"run-b", second)  # gone since it was read
    assert keys(await store.list()) == []  # no lock file or temp file shows in a listing


async def test_read_tagged_is_bounded(store: Store) -> None:
    await store.write_bytes("lease.json", b"x" * 100)
    with pytest.raises(StorageError, match="over the 99-byte limit"):
        await store.read_tagged("lease.json", 99)


async def test_racing_writers_exactly_one_wins(store: Store) -> None:
    results = await asyncio.gather(*(store.write_if("lease.json", f"run-{i}".encode(), None) for i in range(6)),
                                   return_exceptions=True)
    assert sum(isinstance(r, str) for r in results) == 1
    assert all(isinstance(r, (str, StorageConflict)) for r in results)


async def test_uri_of_a_key_is_readable_by_read_uri(store: Store) -> None:
    await store.write_bytes("step-000001/manifest.json", b"{}")
    assert store.uri("step-000001/manifest.json").startswith(store.uri())
    assert await read_uri(store.uri("step-000001/manifest.json")) == b"{}"


# ---------------------------------------------------------------- local only


async def test_local_write_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "taken").mkdir()  # a folder where the file should go: os.replace fails
    with pytest.raises(StorageError, match="taken"):
        await store.write_bytes("taken", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


async def test_local_check_writable_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    store = LocalStore(tmp_path / "a-file" / "sub")  # a root under a regular file
    with pytest.raises(StorageError, match="a-file/sub"):
        await store.check_writable()


async def test_local_delete_removes_the_folders_it_empties(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    await store.write_bytes("step-000001/a", b"1")
    await store.write_bytes("step-000001/sub/b", b"1")
    await store.delete("step-000001/sub/b")
    assert sorted(p.name for p in (tmp_path / "root" / "step-000001").iterdir()) == ["a"]
    await store.delete("step-000001/a")
    assert list((tmp_path / "root").iterdir()) == []  # as on S3: a prefix ends with its last key
    assert (tmp_path / "root").is_dir()  # the root itself stays


async def test_local_upload_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no-such-file"):
        await LocalStore(tmp_path).upload_file("x", tmp_path / "no-such-file")


# ---------------------------------------------------------------- S3 only


async def test_s3_store_sees_only_its_prefix(s3_env: S3Env) -> None:
    client = s3_env.client()
    client.put_object(Bucket=s3_env.bucket, Key="runs/ab/other", Body=b"1")
    client.put_object(Bucket=s3_env.bucket, Key="runs/a/mine", Body=b"22")
    async with open_store(s3_env.uri("runs/a")) as store:
        assert keys(await store.list()) == ["mine"]
        assert store.uri("mine") == "s3://jobrl-test/runs/a/mine"
        await store.delete_prefix("m")
    assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_env.bucket)["Contents"]] == ["runs/ab/other"]


async def test_s3_missing_bucket_is_named(s3_env: S3Env) -> None:
    async with open_store("s3://no-such-bucket/ckpt") as store:
        for call in (
            store.read_bytes("best.json"),
            store.write_bytes("best.json", b"{}"),
            store.list(),
            store.check_writable(),
        ):
            with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
                await call
    with pytest.raises(StorageError, match="s3://no-such-bucket/data.json"):
        await read_uri("s3://no-such-bucket/data.json")


async def test_s3_multipart_upload_round_trips(s3_env: S3Env, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * 1024 * 1024))  # 5 + 5 + 1 MiB parts
    async with open_store(s3_env.uri("ckpt"), SMALL_PARTS) as store:
        await store.upload_file("step-000001/big.bin", src)
        head = s3_env.client().head_object(Bucket=s3_env.bucket, Key="ckpt/step-000001/big.bin")
        assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag counts its parts
        await store.download_file("step-000001/big.bin", tmp_path / "back.bin")
        assert (await store.list())[0].size == src.stat().st_size
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


async def test_s3_store_takes_its_region_from_config_then_environment(
    s3_env: S3Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    async with S3Store(s3_env.bucket) as store:
        await store.exists("x")
        assert store._client.meta.region_name == "eu-west-3"
    async with S3Store(s3_env.bucket, "", StorageConfig(region="eu-north-1")) as store:
        await store.exists("x")
        assert store._client.meta.region_name == "eu-north-1"


async def test_s3_unknown_profile_is_named(
    s3_env: S3Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    async with S3Store(s3_env.bucket, "", StorageConfig(profile="no-such-profile")) as store:
        with pytest.raises(StorageError, match="AWS profile 'no-such-profile' not found"):
            await store.list()


async def test_s3_read_uri_needs_a_key(s3_env: S3Env) -> None:
    with pytest.raises(StorageError, match="names a bucket, not an object"):
        await read_uri(s3_env.uri())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_s3_unreachable_endpoint_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    async with S3Store("jobrl-test", "ckpt", StorageConfig(max_attempts=1)) as store:
        with pytest.raises(StorageError, match=rf"s3://jobrl-test/ckpt/x.*cannot reach http://127.0.0.1:{port}"):
            await store.read_bytes("x")


@dataclass
class FakeS3:
    url: str = ""
    paths: list[str] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0


@asynccontextmanager
async def fake_s3(failures: int = 0, delay_s: float = 0.0) -> AsyncIterator[FakeS3]:
    """An S3 look-alike: 503 SlowDown `failures` times, then b"payload" after `delay_s`."""
    fake = FakeS3()

    async def handle(request: web.Request) -> web.Response:
        fake.paths.append(request.path)
        fake.in_flight += 1
        fake.peak = max(fake.peak, fake.in_flight)
        try:
            await asyncio.sleep(delay_s)
            if len(fake.paths) <= failures:
                body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                return web.Response(status=503, text=body, content_type="application/xml")
            return web.Response(body=b"payload", headers={"ETag": '"abc"'})
        finally:
            fake.in_flight -= 1

    async with serving(handle) as url:
        fake.url = url
        yield fake


@asynccontextmanager
async def serving(handle: Any) -> AsyncIterator[str]:
    """`handle` answering every path on 127.0.0.1; its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield "http://127.0.0.1:%d" % site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_s3_throttling_is_retried_by_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    async with fake_s3(failures=1) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", fake.url)
        async with S3Store("jobrl-test", "", StorageConfig(max_attempts=2)) as store:
            assert await store.read_bytes("k") == b"payload"
    assert fake.paths == ["/jobrl-test/k", "/jobrl-test/k"]


async def test_s3_gives_up_after_max_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    async with fake_s3(failures=100) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", fake.url)
        async with S3Store("jobrl-test", "", StorageConfig(max_attempts=2)) as store:
            with pytest.raises(StorageError, match=r"s3://jobrl-test/k: SlowDown \(HTTP 503\) after 2 attempts"):
                await store.read_bytes("k")
    assert len(fake.paths) == 2


async def test_s3_read_stops_at_its_bound_whatever_the_length_header_says(monkeypatch: pytest.MonkeyPatch) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"ETag": '"abc"'})  # chunked: no Content-Length at all
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"x" * 65536)
        return resp

    async with serving(endless) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)
        async with S3Store("jobrl-test", "", StorageConfig(max_attempts=1)) as store:
            with pytest.raises(StorageError, match="over the 1024-byte limit"):
                await store.read_bytes("latest.json", max_bytes=1024)


async def test_s3_calls_are_bounded_by_max_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    async with fake_s3(delay_s=0.05) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", fake.url)
        async with S3Store("jobrl-test", "", StorageConfig(max_concurrency=2)) as store:
            results = await asyncio.gather(*(store.read_bytes(f"k{i}") for i in range(8)))
    assert results == [b"payload"] * 8
    assert fake.peak == 2


SECRET = "zzSECRETzz-Do-Not-Leak-1234567890"


async def test_s3_errors_never_show_the_secret(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    texts: list[str] = []
    async with open_store(s3_env.uri("p")) as store:
        for call in (store.read_bytes("missing"), store.download_file("missing", "/nonexistent/x")):
            with pytest.raises(StorageError) as err:
                await call
            texts.append(str(err.value))
    async with open_store("s3://no-such-bucket/p") as store:
        with pytest.raises(StorageError) as err:
            await store.check_writable()
        texts.append(str(err.value))
    # botocore's own texts can carry secrets and signed URLs: none of that may pass through
    signed = f"http://127.0.0.1:1/b/k?X-Amz-Signature=abc&secret={SECRET}"
    for exc in (
        ClientError(
            {"Error": {"Code": "SignatureDoesNotMatch", "Message": f"expected {SECRET}"},
             "ResponseMetadata": {"HTTPStatusCode": 403}},
            "GetObject",
        ),
        ClientError({"Error": {"Code": "InvalidAccessKeyId", "Message": signed}}, "PutObject"),
        EndpointConnectionError(endpoint_url=signed),
    ):
        texts.append(str(s3_error(exc, "read", "b", "s3://b/k", "http://127.0.0.1:1", StorageConfig())))
    assert len(texts) == 6
    for text in texts:
        assert text.startswith("storage: ")
        assert SECRET not in text and "Signature=" not in text, text
