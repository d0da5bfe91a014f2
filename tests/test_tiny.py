"""The embedded tiny model: template offers (pure), tokenizer, the deterministic build, the shipped files, warm start."""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
from pathlib import Path

import orjson
import pytest

from jobrl_async.errors import ModelError
from jobrl_async.flow.offer import detect_language, parse_offer, provided_skills_included
from jobrl_async.flow.records import CRITERIA, Context
from jobrl_async.policy import tiny, tiny_assets
from jobrl_async.policy.tiny import Flaws, sample_flaws, template_offer

from .support.model import folder_bytes, reduced_spec

EN = Context("Data Scientist", "en", ("Python", "SQL", "Statistics"), "Tech")
FR = Context("Comptable", "fr", ("Fiscalité", "Paie", "Excel", "Comptabilité générale"), "Finance")
POOL = ["Machine Learning", "Pandas", "Git", "Docker", "Tableau", "Communication", "Leadership"]

# A small, fixed set of contexts for builds that test the build itself (not the model's quality).
SMALL = [
    Context(f"{title} {i}", lang, skills, industry, i)
    for i, (title, lang, skills, industry) in enumerate(
        [
            ("Software Engineer", "en", ("Python", "Git", "Docker"), "Tech"),
            ("Infirmier", "fr", ("Soins", "Hygiène", "Premiers secours"), "Santé"),
            ("Accountant", "en", ("Excel", "Tax", "IFRS", "Bookkeeping"), "Finance"),
            ("Chef de projet", "fr", ("Planification", "Lean", "Qualité"), "Industrie"),
        ]
        * 4
    )
]


# ---------------------------------------------------------------- template offers (pure)


@pytest.mark.parametrize("context", [EN, FR], ids=["en", "fr"])
def test_a_correct_template_offer_passes_every_exact_check(context: Context) -> None:
    offer = template_offer(context, random.Random(0), Flaws(), POOL)
    parsed = parse_offer(offer)
    assert parsed.ok, parsed.errors
    assert parsed.title == context.job_title
    included, missing = provided_skills_included(context, parsed)
    assert missing == [] and len(parsed.required_skills) == 5 and len(parsed.nice_to_have) == 3
    assert detect_language(" ".join(parsed.prose))[0] == context.language


def test_each_flaw_shows_in_the_offer() -> None:
    rng = random.Random(1)
    dropped = parse_offer(template_offer(EN, rng, Flaws(drop_skill=True), POOL))
    assert len(provided_skills_included(EN, dropped)[1]) == 1
    wrong = parse_offer(template_offer(EN, rng, Flaws(wrong_language=True), POOL))
    assert detect_language(" ".join(wrong.prose))[0] == "fr"
    missing = parse_offer(template_offer(FR, rng, Flaws(missing_section="nice_to_have"), POOL))
    assert "missing <nice_to_have>" in missing.errors
    counts = parse_offer(template_offer(FR, rng, Flaws(items=3, required=4, nice=2), POOL))
    assert {"3 responsibilities items, expected 5-7", "4 required_skills items, expected 5",
            "2 nice_to_have items, expected 3"} <= set(counts.errors)


def test_about_half_the_sampled_offers_are_correct() -> None:
    rng = random.Random(7)
    flaws = [sample_flaws(rng) for _ in range(2000)]
    share = sum(f.correct for f in flaws) / len(flaws)
    assert 0.35 < share < 0.65
    assert any(f.wrong_language for f in flaws) and any(f.missing_section for f in flaws)


def test_template_offers_escape_xml_and_stay_parseable() -> None:
    context = Context("R&D <Lead>", "en", ("C++", "Q&A", "Git"), "Tech")
    parsed = parse_offer(template_offer(context, random.Random(3), Flaws(), ["A&B", "Rust", *POOL]))
    assert parsed.ok, parsed.errors
    assert parsed.title == "R&D <Lead>"


def test_template_offer_is_a_pure_function_of_its_inputs() -> None:
    a = template_offer(FR, random.Random(5), Flaws(items=7), POOL)
    b = template_offer(FR, random.Random(5), Flaws(items=7), POOL)
    assert a == b


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_has_gemma_ids_single_tag_tokens_and_round_trips(tiny_policy) -> None:
    tok = tiny_policy.tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    for tag in tiny.XML_TAGS + ("<start_of_turn>", "<end_of_turn>"):
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1, tag
    for context in (EN, FR):
        offer = template_offer(context, random.Random(2), Flaws(), POOL)
        ids = tok(offer, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == offer  # tags survive skip_special_tokens
    assert tok(offer)["input_ids"][0] == tok.bos_token_id  # plain encoding adds BOS, like Gemma's


def test_tokenizer_vocabulary_is_near_its_target_size(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(tok) > 0.75 * tiny.DEFAULT_SPEC.vocab_size


# ---------------------------------------------------------------- architecture


def test_tiny_model_has_gemma3_attention_pattern(tiny_policy) -> None:
    config = tiny_policy.model.get_base_model().config
    assert config.model_type == "gemma3_text"
    assert config.layer_types == ["sliding_attention"] * 3 + ["full_attention"]
    assert config.sliding_window == tiny.DEFAULT_SPEC.sliding_window
    assert config.vocab_size % 64 == 0 and config.vocab_size >= len(tiny_policy.tokenizer)


def test_gemma3_270m_config_matches_the_model_card() -> None:
    c = tiny.gemma3_270m_config()
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (262_144, 640, 18, 2048)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.sliding_window) == (4, 1, 256, 512)
    assert c.layer_types.count("full_attention") == 3 and c.layer_types[5] == "full_attention"
    assert c.rope_parameters["full_attention"]["rope_theta"] == 1_000_000.0
    assert c.rope_parameters["sliding_attention"]["rope_theta"] == 10_000.0
    assert c.max_position_embeddings == 32_768


# ---------------------------------------------------------------- build, ship, verify


@pytest.mark.slow
def test_build_is_deterministic_to_the_byte(tmp_path: Path) -> None:
    # The reduced spec runs the same code path (tokenizer, model, warm start, files) in seconds.
    spec = reduced_spec()
    a = tiny_assets.build_tiny(tmp_path / "a", SMALL, spec)
    b = tiny_assets.build_tiny(tmp_path / "b", SMALL, spec)
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "b")  # the manifest too: no clock in it
    assert a["content_sha256"] == tiny_assets.content_digest(tiny_assets.file_digests(tmp_path / "a"))
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(a["files"])
    other = tiny_assets.build_tiny(tmp_path / "c", SMALL, reduced_spec(tiny.TinySpec(seed=1)))
    assert other["loss_last"] > 0 and other["content_sha256"] != b["content_sha256"]


@pytest.mark.slow
def test_shipped_tiny_model_is_what_the_builder_makes() -> None:
    # Replays the recipe's first steps (seconds) against the shipped manifest: a change to the
    # tokenizer, the prompts, the data, the architecture or the warm start shows here. After
    # changing the builder: `jobrl-async tiny build`, then commit jobrl_async/assets/tiny/.
    assert tiny_assets.drift() == []
    manifest = tiny_assets.read_manifest(tiny_assets.SHIPPED_DIR)
    assert manifest["content_sha256"] == tiny_assets.content_digest(tiny_assets.file_digests(tiny_assets.SHIPPED_DIR))


@pytest.mark.slow
def test_the_drift_check_sees_a_changed_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "tiny"
    tiny_assets.build_tiny(folder, SMALL, reduced_spec(train_steps=tiny_assets.CHECK_STEPS))
    monkeypatch.setattr(tiny_assets, "training_contexts", lambda: SMALL)
    monkeypatch.setattr(tiny_assets, "DEFAULT_SPEC", reduced_spec(train_steps=tiny_assets.CHECK_STEPS))
    assert tiny_assets.drift(folder) == []
    manifest = tiny_assets.read_manifest(folder)
    manifest["check"]["losses"][-1] *= 1.001  # as if the warm start had changed
    manifest["spec"]["learning_rate"] *= 2  # as if the spec had changed
    (folder / tiny_assets.MANIFEST).write_bytes(orjson.dumps(manifest))
    problems = tiny_assets.drift(folder)
    assert [p.split(":")[0] for p in problems] == ["spec", "warm-start losses of the first 8 steps"], problems


def test_loading_checks_the_shipped_files(tmp_path: Path) -> None:
    shutil.copytree(tiny_assets.SHIPPED_DIR, tmp_path / "tiny")
    assert tiny_assets.shipped_tiny_dir(tmp_path / "tiny") == tmp_path / "tiny"
    weights = tmp_path / "tiny" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.safetensors is altered"):
        tiny_assets.shipped_tiny_dir(tmp_path / "tiny")
    weights.unlink()
    with pytest.raises(ModelError, match=r"model\.safetensors is missing"):
        tiny_assets.shipped_tiny_dir(tmp_path / "tiny")
    (tmp_path / "tiny" / tiny_assets.MANIFEST).unlink()
    with pytest.raises(ModelError, match=r"jobrl_tiny\.json is missing"):
        tiny_assets.shipped_tiny_dir(tmp_path / "tiny")


def test_the_shipped_model_stays_small() -> None:
    sizes = {p.name: p.stat().st_size for p in tiny_assets.SHIPPED_DIR.iterdir()}
    assert sum(sizes.values()) < 8 * 2**20, sizes


# ---------------------------------------------------------------- warm start


async def test_warm_started_model_writes_recognisable_but_imperfect_offers(tiny_policy, tiny_config) -> None:
    from jobrl_async.data import load_bundled, split_dataset
    from jobrl_async.policy.device import Device
    from jobrl_async.generation.generator import LocalGenerator, SampleRequest
    from jobrl_async.judge.skills import SkillBook
    from jobrl_async.judge.stub import stub_verdict
    from jobrl_async.flow.rewards import reward

    split = split_dataset(load_bundled(), 0.1, 42)
    tiny_config.generation.max_new_tokens = 320
    tiny_config.generation.batch_size = 24
    generator = LocalGenerator(tiny_policy, Device("cpu"), tiny_config.generation)
    requests = [SampleRequest(c, "train", 0, i, 4) for i, c in enumerate(split.train[:6])]
    trajectories = await generator.generate(requests)

    parsed = [parse_offer(t.completion_text) for t in trajectories]
    closed = [t for t in trajectories if t.completion_text.rstrip().endswith("</job_offer>")]
    assert len(closed) >= 0.75 * len(trajectories)  # recognisable: the model writes whole offers
    titled = [p for p in parsed if p.title]
    assert len(titled) >= 0.5 * len(trajectories)
    assert not all(p.ok for p in parsed)  # ...but not perfect ones
    book = SkillBook.from_contexts(split.train)
    rewards = [reward({k: stub_verdict(k, t.context, t.completion_text, book) for k in CRITERIA}) for t in trajectories]
    groups = [rewards[i : i + 4] for i in range(0, len(rewards), 4)]
    assert sum(max(g) > min(g) for g in groups) >= len(groups) // 2  # GRPO has a signal
    assert statistics.pstdev(rewards) > 0.3
    await asyncio.sleep(0)


def test_tiny_build_refuses_an_existing_out_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from jobrl_async import cli

    assert cli.main(["tiny", "build", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {tmp_path} already exists" in err
