"""The bundled dataset, read straight from its JSON file: shape, spread, language and build."""

from __future__ import annotations

import importlib.util
import json
import re
import unicodedata
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from py3langid.langid import MODEL_FILE, LanguageIdentifier

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "jobrl_async" / "assets" / "job_offer_dataset.json"
BUILDER = ROOT / "scripts" / "build_dataset.py"

SEED_SHARES = {"Tech": 30.0, "Healthcare": 15.0, "Finance": 15.0, "Manufacturing": 10.0}
SHARE_TOLERANCE = 1.5  # percentage points
# Function words and letters English skill names do not use.
FRENCH_MARKER = re.compile(r"(?i)\b(?:de|des|du|la|le|les|en|et|au|aux|d'|l')\b|[àâçéèêëîïôûùœ]")


def normalise(text: str) -> str:
    """Case-, accent- and space-blind; written here again so the test does not trust the builder."""
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).casefold().split())


def has_accent(text: str) -> bool:
    return any(unicodedata.combining(c) for c in unicodedata.normalize("NFD", text))


def percent(part: int, whole: int) -> float:
    return 100.0 * part / whole


@pytest.fixture(scope="module")
def records() -> list:
    return json.loads(DATASET.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def contexts(records: list) -> list[dict]:
    return [record["context"] for record in records]


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dataset", BUILDER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_has_the_seed_size(records: list) -> None:
    assert isinstance(records, list)
    assert len(records) == 534


def test_every_record_is_a_valid_context(records: list) -> None:
    for index, record in enumerate(records):
        assert set(record) == {"context"}, index
        context = record["context"]
        assert set(context) == {"job_title", "language", "skills", "industry"}, index
        assert isinstance(context["job_title"], str) and context["job_title"].strip(), index
        assert context["job_title"] == context["job_title"].strip(), index
        assert context["language"] in ("en", "fr"), index
        assert isinstance(context["industry"], str) and context["industry"].strip(), index
        skills = context["skills"]
        assert isinstance(skills, list) and 3 <= len(skills) <= 5, index
        assert all(isinstance(s, str) and s.strip() == s and s for s in skills), index
        assert len({normalise(s) for s in skills}) == len(skills), (index, skills)


def test_industry_shares_follow_the_seed(contexts: list[dict]) -> None:
    counts = Counter(c["industry"] for c in contexts)
    for industry, share in SEED_SHARES.items():
        measured = percent(counts[industry], len(contexts))
        assert abs(measured - share) <= SHARE_TOLERANCE, (industry, measured)


def test_the_other_thirty_percent_is_spread_over_real_industries(contexts: list[dict]) -> None:
    counts = Counter(c["industry"] for c in contexts)
    others = {name: n for name, n in counts.items() if name not in SEED_SHARES}
    assert len(others) >= 8
    assert all(1.0 <= percent(n, len(contexts)) <= 6.0 for n in others.values()), others
    # Canonical English labels, the same whatever the record's language.
    assert all(name.isascii() for name in counts), sorted(counts)
    languages = {(c["industry"], c["language"]) for c in contexts}
    assert all((name, lang) in languages for name in counts for lang in ("en", "fr"))


def test_both_languages_are_well_represented(contexts: list[dict]) -> None:
    counts = Counter(c["language"] for c in contexts)
    assert percent(counts["en"], len(contexts)) >= 35.0
    assert percent(counts["fr"], len(contexts)) >= 35.0


def test_three_four_and_five_skills_are_all_common(contexts: list[dict]) -> None:
    counts = Counter(len(c["skills"]) for c in contexts)
    assert set(counts) == {3, 4, 5}
    assert all(percent(n, len(contexts)) >= 25.0 for n in counts.values()), counts


def test_no_two_records_are_the_same(contexts: list[dict]) -> None:
    keys = Counter(
        (c["language"], normalise(c["job_title"]), tuple(sorted(normalise(s) for s in c["skills"])))
        for c in contexts
    )
    assert [key for key, n in keys.items() if n > 1] == []


def test_titles_are_varied_and_repeats_moderate(contexts: list[dict]) -> None:
    per_title = Counter((c["language"], c["job_title"]) for c in contexts)
    assert max(per_title.values()) <= 6, per_title.most_common(3)
    for language in ("en", "fr"):
        assert sum(1 for lang, _ in per_title if lang == language) >= 100
        for industry in ("Tech", "Healthcare", "Finance"):
            titles = {
                c["job_title"]
                for c in contexts
                if c["language"] == language and c["industry"] == industry
            }
            assert len(titles) >= 20, (language, industry, len(titles))


def test_a_title_draws_from_one_pool_in_one_industry(contexts: list[dict]) -> None:
    """Skills seen with a title come from one authored pool: a knowledge base can trust them."""
    skills: dict[tuple[str, str], set[str]] = {}
    industries: dict[tuple[str, str], set[str]] = {}
    for c in contexts:
        key = (c["language"], c["job_title"])
        skills.setdefault(key, set()).update(c["skills"])
        industries.setdefault(key, set()).add(c["industry"])
    assert all(len(pool) <= 15 for pool in skills.values())
    assert all(len(names) == 1 for names in industries.values())


def test_each_record_reads_in_its_language(contexts: list[dict]) -> None:
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)  # our own copy: no global state
    identifier.set_languages(["en", "fr"])
    for language in ("en", "fr"):
        texts = [
            ". ".join([c["job_title"], *c["skills"]]) for c in contexts if c["language"] == language
        ]
        agree = sum(identifier.classify(text)[0] == language for text in texts)
        # A few tool-only records ("Python, SQL, Jira") are ambiguous; a mislabelled file is not.
        assert percent(agree, len(texts)) >= 97.0, (language, agree, len(texts))


def test_french_titles_are_written_in_french(contexts: list[dict]) -> None:
    french = {c["job_title"] for c in contexts if c["language"] == "fr"}
    english = {c["job_title"] for c in contexts if c["language"] == "en"}
    accented = [t for t in french if has_accent(t)]
    assert percent(len(accented), len(french)) >= 30.0
    for word in ("Infirmier(ère)", "Comptable", "Ingénieur(e)", "Chef(fe)", "Technicien(ne)"):
        assert any(word in title for title in french), word
    assert not any(has_accent(t) for t in english), [t for t in english if has_accent(t)]


def test_french_skills_are_written_in_french_but_keep_tool_names(contexts: list[dict]) -> None:
    def distinct_skills(language: str) -> set[str]:
        return {s for c in contexts if c["language"] == language for s in c["skills"]}

    def french_share(skills: set[str]) -> float:
        return percent(sum(bool(FRENCH_MARKER.search(s)) for s in skills), len(skills))

    french = distinct_skills("fr")
    assert french_share(french) >= 50.0  # the rest: one-word skills and tool names
    assert french_share(distinct_skills("en")) <= 2.0  # "Mise en place" is English kitchen talk
    assert {"Python", "Excel", "SAP", "Kubernetes"} <= french
    assert {"Tests unitaires", "Relation client", "Amélioration continue"} <= french


def test_the_build_is_deterministic_and_the_file_current(builder: ModuleType) -> None:
    first = builder.render(builder.build_records())
    second = builder.render(builder.build_records())
    assert first == second
    assert DATASET.read_text(encoding="utf-8") == first


def test_check_mode_flags_a_stale_file(builder: ModuleType, tmp_path: Path) -> None:
    target = tmp_path / "dataset.json"
    assert builder.main(["--check", "--output", str(target)]) == 1  # missing
    assert builder.main(["--output", str(target)]) == 0
    assert builder.main(["--check", "--output", str(target)]) == 0
    records = json.loads(target.read_text(encoding="utf-8"))
    records[0]["context"]["skills"].reverse()
    target.write_text(builder.render(records), encoding="utf-8")
    assert builder.main(["--check", "--output", str(target)]) == 1


def test_allocate_splits_exactly(builder: ModuleType) -> None:
    counts = builder.allocate(534, builder.industry_shares(list(builder.INDUSTRIES)))
    assert sum(counts.values()) == 534
    assert counts["Tech"] == 160 and counts["Healthcare"] == 80
    assert builder.allocate(7, {"a": 0.5, "b": 0.5}) == {"a": 4, "b": 3}


def test_parse_pools_reads_continuations_and_rejects_bad_tables(builder: ModuleType) -> None:
    table = """
    Comptable: Sage; Excel; TVA; Paie;
        Clôtures mensuelles; Liasse fiscale; Lettrage; Rapprochements bancaires
    """
    pools = builder.parse_pools(table, "test/fr")
    assert pools == {
        "Comptable": (
            "Sage", "Excel", "TVA", "Paie", "Clôtures mensuelles", "Liasse fiscale", "Lettrage",
            "Rapprochements bancaires",
        )
    }
    with pytest.raises(ValueError, match="listed twice"):
        builder.parse_pools(table.replace("Lettrage", "excel"), "test/fr")
    with pytest.raises(ValueError, match="7 skills"):
        builder.parse_pools(table.replace("; Lettrage", ""), "test/fr")
