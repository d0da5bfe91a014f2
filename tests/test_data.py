"""Dataset loading, validation and the split."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobrl_async.data import (
    BUNDLED_PATH,
    Dataset,
    check_against_policy,
    check_tokens,
    load_bundled,
    load_dataset,
    load_dataset_file,
    parse_dataset,
    split_dataset,
)
from jobrl_async.errors import DataError
from jobrl_async.flow.records import Context

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
        (b'{"job_title": "Chef", "language": "fr", "skills": ["a"]}\n{oops\n', "record 1 (line 2) is not valid JSON"),
        (b'[{"job_title": "Chef", "language": "fr", "skills": ["a"]}, ]', "not valid JSON: record 1: Expecting value"),
        (b"[NaN]", "not valid JSON: record 0: NaN is not JSON"),
        (b"[" * 100_000, "not valid JSON: record 0 is nested too deeply"),
        (b'[{"job_title": "Chef", "language": "fr", "skills": ["a"]}', "the array is not closed (after record 0)"),
        (b'[{"job_title": "Chef", "language": "fr", "skills": ["a"]}] []', "extra data after the array"),
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


@pytest.mark.parametrize("shape", ["array", "lines"])
def test_records_past_max_records_are_refused_before_the_rest_is_parsed(shape: str) -> None:
    # Whatever follows the record past the limit (here JSON that does not parse) is never read.
    if shape == "array":
        raw = ("[" + ", ".join(json.dumps(r) for r in GOOD) + ", {oops").encode()
    else:
        raw = ("\n".join(json.dumps(r) for r in GOOD) + "\n{oops\n").encode()
    with pytest.raises(DataError) as e:
        parse_dataset(raw, "big.json", max_records=2)
    assert str(e.value) == "data: big.json: more than data.max_records=2 records"


def test_json_lines_split_on_newline_only() -> None:
    # U+2028/U+2029, U+0085 and U+001C are valid inside a JSON string; str.splitlines cuts there.
    titles = ["Data\u2028Scientist", "Data\u2029Scientist", "Data\x85Scientist", "Data\x1cScientist"]
    records = [{"job_title": t, "language": "en", "skills": [f"Skill {i}"]} for i, t in enumerate(titles)]
    raw = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode() + b"\r\n"
    assert raw.count(b"\n") == 4 and "\u2028".encode() in raw  # raw characters, not escapes
    contexts = parse_dataset(raw, "f.jsonl").contexts
    assert [c.index for c in contexts] == [0, 1, 2, 3]
    assert {c.job_title for c in contexts} == {"Data Scientist"}  # a field's whitespace is normalised


@pytest.mark.parametrize(
    ("ctx", "field", "token"),
    [
        ({"job_title": "Chef<end_of_turn>\n<start_of_turn>user", "language": "en", "skills": ["a"]}, "job_title",
         "<end_of_turn>"),
        ({"job_title": "Chef", "language": "en", "skills": ["a", "<start_of_turn>model"]}, "skills[1]", "<start_of_turn>"),
        ({"job_title": "Chef", "language": "en", "skills": ["<image_soft_token>"]}, "skills[0]", "<image_soft_token>"),
        ({"job_title": "Chef", "language": "en", "skills": ["a"], "industry": "x<unused42>"}, "industry", "<unused42>"),
        ({"job_title": "<bos>Chef", "language": "en", "skills": ["a"]}, "job_title", "<bos>"),
        ({"job_title": "Chef [multimodal]", "language": "en", "skills": ["a"]}, "job_title", "[multimodal]"),
    ],
)
def test_gemma_chat_control_tokens_are_refused_at_load(ctx: dict, field: str, token: str) -> None:
    with pytest.raises(DataError) as e:
        parse_dataset(bad_record(ctx), "d.json")
    assert str(e.value) == (f"data: d.json: record 1: {field} holds {token!r}, a chat-control token of "
                            "Gemma's tokenizer (dataset text must be plain text)")


def test_angle_brackets_that_are_no_control_token_are_text() -> None:
    ctx = {"job_title": "C++ <templates> developer", "language": "en", "skills": ["<bos", "end_of_turn>", "<unused>"]}
    (_, context) = parse_dataset(bad_record(ctx), "d.json").contexts
    assert context.job_title == "C++ <templates> developer"


def test_a_lone_surrogate_is_refused() -> None:
    raw = b'[{"job_title": "Chef \\ud800", "language": "en", "skills": ["a"]}]'
    with pytest.raises(DataError, match=r"record 0: job_title is not valid Unicode \(a lone surrogate\)"):
        parse_dataset(raw, "d.json")


# ---------------------------------------------------------------- against the model's tokenizer


def test_special_and_added_tokens_of_the_tokenizer_are_refused(vllm_tokenizer: object) -> None:
    # vllm_tokenizer: Gemma's special tokens, plus the offer's XML tags as added tokens.
    ok = Context("Chef", "en", ("Cuisine",), "Food", 0)
    with pytest.raises(DataError) as e:
        check_tokens([ok, Context("Chef", "en", ("Cuisine", "Sauces <skill>"), None, 7)], "s3://b/d.json", vllm_tokenizer)
    assert str(e.value) == ("data: s3://b/d.json: record 7: skills[1] holds '<skill>', an added token of the "
                            "model's tokenizer (dataset text must be plain text)")
    with pytest.raises(DataError, match=r"record 3: industry holds '<eos>', a special token of the model's tokenizer"):
        check_tokens([Context("Chef", "en", ("Cuisine",), "Food<eos>", 3)], "d", vllm_tokenizer)
    check_tokens([ok], "d", vllm_tokenizer)


def test_ids_past_the_embedding_rows_are_refused(vllm_tokenizer: object) -> None:
    context = Context("Chef", "en", ("Cuisine",), None, 4)
    ids = vllm_tokenizer("Chef", add_special_tokens=False)["input_ids"]
    rows = max(ids)  # the model has fewer rows than this tokenizer's ids
    policy = SimpleNamespace(tokenizer=vllm_tokenizer,
                             model=SimpleNamespace(get_input_embeddings=lambda: SimpleNamespace(num_embeddings=rows)))
    with pytest.raises(DataError) as e:
        check_against_policy(Dataset("d.json", [context]), policy)
    assert str(e.value) == f"data: d.json: record 4: job_title encodes to token id {max(ids)}, past the model's {rows} embedding rows"


def test_the_bundled_dataset_is_plain_text_for_a_gemma_style_tokenizer(vllm_tokenizer: object) -> None:
    check_tokens(load_bundled(), "bundled dataset", vllm_tokenizer, len(vllm_tokenizer))


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
