"""A skill knowledge base for the stub judge: which skills go with which job title and industry.

Built from contexts (the bundled dataset by default): for each normalised title and each
industry, how many contexts listed each skill. The stub judge asks it two questions:

- `relevant(skill, context)`: was the skill seen with that title or, failing that, with that
  industry? When the book knows too little about both (fewer than MIN_CONTEXTS contexts), any
  skill seen anywhere in the dataset counts, so an unfamiliar title is not punished for it.
- `expected(context)`: the skills most often seen with that title (else that industry, else
  overall) in the context's language, at least twice, that the context did not provide: what
  a complete offer would add.

It is a stand-in that knows only the dataset, not a model of the job market.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..errors import DataError
from ..flow.offer import fold, skill_tokens, tokens_match
from ..flow.records import LANGUAGES, Context

BUNDLED_DATASET = Path(__file__).resolve().parent.parent / "assets" / "job_offer_dataset.json"
MIN_CONTEXTS = 2  # a title or industry seen fewer times tells nothing beyond its own context
MIN_SEEN = 2  # a skill is "commonly seen" from this many contexts on
EXPECTED_MAX = 3

# What changes the seniority or the gender marking of a title, not the job: "Senior",
# "(H/F)", and French feminine endings in brackets: "Ingénieur(e)", "Auditeur(trice)".
_TITLE_NOISE = re.compile(
    r"\b(senior|junior|sr|jr|confirme|confirmee|experimente|experimentee|debutant|debutante)\b"
    r"|\(?\b[hfm]\s*/\s*[hfm]\b\)?"
    r"|(?<=\w)\((e|ne|se|sse|ere|euse|rice|trice)\)"
)

Key = tuple[str, ...]


def title_key(title: str) -> Key:
    return skill_tokens(_TITLE_NOISE.sub(" ", fold(title)))


def industry_key(industry: str | None) -> Key:
    return skill_tokens(industry or "")


@dataclass
class _Tally:
    """Skills seen in a group of contexts, counted once per context."""

    contexts: int = 0
    skills: Counter[Key] = field(default_factory=Counter)

    def add(self, keys: set[Key]) -> None:
        self.contexts += 1
        self.skills.update(keys)


@dataclass
class SkillBook:
    """Skills seen with each title and each industry, per language (see the module docstring).

    Relevance looks across languages (a skill is relevant whatever language listed it);
    expectations stay within the context's language, since an offer cannot be expected to
    list "Apprentissage automatique" when it is written in English.
    """

    titles: dict[tuple[str, Key], _Tally] = field(default_factory=dict)
    industries: dict[tuple[str, Key], _Tally] = field(default_factory=dict)
    overall: dict[str, _Tally] = field(default_factory=dict)
    spellings: dict[Key, Counter[str]] = field(default_factory=dict)

    @classmethod
    def from_contexts(cls, contexts: Iterable[Context]) -> SkillBook:
        book = cls()
        for context in contexts:
            book.add(context)
        return book

    @classmethod
    def bundled(cls) -> SkillBook:
        """The book of the bundled dataset, built once per process."""
        return _bundled_book(BUNDLED_DATASET)

    def add(self, context: Context) -> None:
        keys = set()
        for skill in context.skills:
            key = skill_tokens(skill)
            if key:
                keys.add(key)
                self.spellings.setdefault(key, Counter())[skill.strip()] += 1
        language = context.language
        self.titles.setdefault((language, title_key(context.job_title)), _Tally()).add(keys)
        if context.industry:
            self.industries.setdefault((language, industry_key(context.industry)), _Tally()).add(keys)
        self.overall.setdefault(language, _Tally()).add(keys)

    def _tallies(self, context: Context, languages: Iterable[str]) -> list[_Tally]:
        """Title tallies, then industry tallies, in `languages`, where the book has seen them."""
        title, industry = title_key(context.job_title), industry_key(context.industry)
        found = [self.titles.get((language, title)) for language in languages]
        if context.industry:
            found += [self.industries.get((language, industry)) for language in languages]
        return [t for t in found if t is not None]

    def relevant(self, skill: str, context: Context) -> bool:
        """Whether `skill` goes with the context's title or industry, as far as the book knows."""
        tallies = self._tallies(context, LANGUAGES)
        if sum(t.contexts for t in tallies) < MIN_CONTEXTS:
            tallies = list(self.overall.values())
        return any(_seen(skill, tally) for tally in tallies)

    def expected(self, context: Context) -> list[str]:
        """Up to EXPECTED_MAX skills commonly seen with this title/industry, not provided."""
        provided = [skill_tokens(s) for s in context.skills]
        overall = self.overall.get(context.language, _Tally())
        for tally in [*self._tallies(context, [context.language]), overall]:
            by_count = sorted(tally.skills.items(), key=lambda kv: (-kv[1], kv[0]))
            common = [
                key
                for key, seen in by_count
                if seen >= MIN_SEEN and not any(tokens_match(key, p) for p in provided)
            ]
            if common:
                return [self.spelling(key) for key in common[:EXPECTED_MAX]]
        return []

    def spelling(self, key: Key) -> str:
        """The most common way the dataset writes a skill (first seen on ties)."""
        return self.spellings[key].most_common(1)[0][0]


def _seen(skill: str, tally: _Tally) -> bool:
    key = skill_tokens(skill)
    return key in tally.skills or any(tokens_match(key, known) for known in tally.skills)


@cache
def _bundled_book(path: Path) -> SkillBook:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"bundled dataset {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"bundled dataset {path}: {exc}") from None
    if not isinstance(records, list):
        raise DataError(f"bundled dataset {path}: expected a JSON array of records")
    return SkillBook.from_contexts(_context(record, index, path) for index, record in enumerate(records))


def _context(record: object, index: int, path: Path) -> Context:
    raw = record.get("context", record) if isinstance(record, dict) else None
    try:
        return Context(
            job_title=str(raw["job_title"]),
            language=raw["language"],
            skills=tuple(str(s) for s in raw["skills"]),
            industry=raw.get("industry"),
            index=index,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"bundled dataset {path}, record {index}: {exc!r}") from None
