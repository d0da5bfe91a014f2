"""Dataset loading, validation and the split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobrl_async.data import (
    BUNDLED_PATH,
    load_dataset,
    load_dataset_file,
    parse_dataset,
    split_dataset,
)
from jobrl_async.errors import DataError
from jobrl_async.records import Context

GOOD = [
    {"context": {"job_title": "Data Scientist", "language": "en", "skills": ["Python", "SQL", "Statistics"],
                 "industry": "Tech"}},
    {"context": {"job_title": "Infirmière", "language": "fr", "skills": ["Soins", "Hygiène", "Écoute"]}},
    {"job_title": "Welder", "language": "EN", "skills": ["TIG", "MIG", "Blueprints"]},  # bare context
]


def test_json_array_jsonl_and_bom_give_the_same_contexts() -> None:
    array = json.dumps(GOOD).encode()
    jsonl = "\n".join(json.dumps(r, ensure_ascii=False) for r in GOOD).encode() + b"\n\n"
    bom = b"\xef\xbb\xbf" + array
    results = [parse_dataset(raw, "src").contexts for raw in (array, jsonl, bom)]
    assert results[0] == results[1] == results[2]
    assert results[0][1].job_title == "Infirmière"
    assert results[0][2].language == "en"
    assert [c.index for c in results[0]] == [0, 1, 2]


def bad_record(ctx: object) -> bytes:
    return json.dumps([GOOD[0], {"context": ctx}]).encode()


@pytest.mark.parametrize(
    ("ctx", "reason"),
    [
        ({"language": "en", "skills": ["a"]}, "job_title must be a non-empty string"),
        ({"job_title": "  ", "language": "en", "skills": ["a"]}, "job_title must be a non-empty string"),
        ({"job_title": "x" * 300, "language": "en", "skills": ["a"]}, "job_title is 300 characters, the limit is 200"),
        ({"job_title": "Chef", "language": "es", "skills": ["a"]}, "language must be one of en, fr, got 'es'"),
        ({"job_title": "Chef", "language": "fr", "skills": []}, "skills must be a list of 1-10 strings"),
        ({"job_title": "Chef", "language": "fr", "skills": ["a"] * 11}, "skills must be a list of 1-10 strings"),
        ({"job_title": "Chef", "language": "fr", "skills": "Cuisine"}, "skills must be a list of 1-10 strings"),
        ({"job_title": "Chef", "language": "fr", "skills": ["Cuisine", ""]}, "skills[1] must be a non-empty string"),
        ({"job_title": "Chef", "language": "fr", "skills": [3]}, "skills[0] must be a non-empty string"),
        ({"job_title": "Chef", "language": "fr", "skills": ["x" * 20000]}, "skills[0] is 20000 characters, the limit is 100"),
        ({"job_title": "Chef", "language": "fr", "skills": ["a"], "industry": 5}, "industry must be a non-empty string"),
        ("not an object", "'context' must be an object"),
    ],
)
def test_bad_records_are_named_with_index_and_reason(ctx: object, reason: str) -> None:
    with pytest.raises(DataError) as e:
        parse_dataset(bad_record(ctx), "s3://b/d.json")
    assert str(e.value) == f"data: s3://b/d.json: record 1: {reason}"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[{]", "not valid JSON"),
        (b'{"a": 1}\n{oops\n', "record 1 (line 2) is not valid JSON"),
        (b"\xff\xfe[]", "not UTF-8"),
        (b"[]", "the dataset has no records"),
        (b"[1]", "record 0: expected an object, got int"),
    ],
)
def test_bad_files(raw: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_dataset(raw, "f.json")


def test_max_records() -> None:
    with pytest.raises(DataError, match="more than data.max_records=2"):
        parse_dataset(json.dumps(GOOD).encode(), "f", max_records=2)


def test_duplicates_are_found_not_fatal() -> None:
    dup = {"context": {"job_title": "data  scientist", "language": "en", "skills": ["sql", "Statistics", "PYTHON"]}}
    ds = parse_dataset(json.dumps([*GOOD, dup]).encode(), "f")
    assert ds.duplicates == [(0, 3)]


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path}/nope.json: no such file"):
        load_dataset_file(tmp_path / "nope.json")


def contexts(n_en: int, n_fr: int) -> list[Context]:
    return [Context(f"job {i}", "en" if i < n_en else "fr", ("a",), None, i) for i in range(n_en + n_fr)]


def test_split_sizes_stratified_and_deterministic() -> None:
    cs = contexts(300, 234)
    a = split_dataset(cs, 0.1, 42)
    b = split_dataset(list(reversed(cs)), 0.1, 42)  # input order does not matter
    assert (len(a.train), len(a.validation)) == (481, 53)
    assert a == b
    fr = sum(c.language == "fr" for c in a.validation)
    assert fr in (23, 24)  # 234 x 0.1 = 23.4
    assert {c.index for c in a.train}.isdisjoint(c.index for c in a.validation)
    assert split_dataset(cs, 0.1, 43).validation != a.validation


def test_bundled_dataset_splits_481_53() -> None:
    ds = load_dataset_file(BUNDLED_PATH)
    split = split_dataset(ds.contexts, 0.1, 42)
    assert (len(ds.contexts), len(split.train), len(split.validation)) == (534, 481, 53)
    assert ds.duplicates == []


async def test_load_from_file_uri_and_plain_path(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(GOOD))
    a = await load_dataset(str(path))
    b = await load_dataset(f"file://{path}")
    assert a.contexts == b.contexts and len(a.contexts) == 3


async def test_load_from_s3(s3_env) -> None:
    from jobrl_async.storage import open_store

    async with open_store(s3_env.uri("datasets")) as store:
        await store.write_bytes("job_offer_dataset.json", json.dumps(GOOD).encode())
    ds = await load_dataset(s3_env.uri("datasets/job_offer_dataset.json"))
    assert [c.job_title for c in ds.contexts] == ["Data Scientist", "Infirmière", "Welder"]
    with pytest.raises(Exception) as e:
        await load_dataset(s3_env.uri("datasets/missing.json"))
    assert "datasets/missing.json" in str(e.value)
