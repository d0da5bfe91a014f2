"""Pure checks of a job offer written by the policy (DESIGN.md, "The job offer").

The offer is untrusted text: it is size-bounded, parsed with defusedxml (no DTD, no entity
expansion, no external resources) and never executed or interpreted beyond the schema:

    <job_offer>
      <title/> <overview/>
      <responsibilities> <item/> x 5-7 </responsibilities>
      <required_skills> <skill/> x 5 </required_skills>      every provided skill + new ones
      <nice_to_have> <skill/> x 3 </nice_to_have>
    </job_offer>

Skills match case-, accent- and whitespace-insensitively (`normalise_skill`), and a listed
skill may elaborate a provided one ("Advanced SQL" includes "SQL"), see `skills_match`.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from .records import Context

MAX_OFFER_CHARS = 64 * 1024  # an offer is ~2 KB; anything this long is degenerate output
RESPONSIBILITIES_RANGE = (5, 7)
REQUIRED_SKILLS_COUNT = 5
NICE_TO_HAVE_COUNT = 3
ELEMENTS = ("title", "overview", "responsibilities", "required_skills", "nice_to_have")

# The structural checks behind `xml_format`, in the order they are reported.
CHECKS = (
    "well_formed",
    "title",
    "overview",
    "responsibilities",
    "required_skills",
    "nice_to_have",
    "layout",  # schema order, no unknown elements, no loose text
)

# Languages the identifier may answer: ours, plus the neighbours a policy drifts into, so a
# Spanish offer is called Spanish rather than forced into "en" or "fr".
DETECTABLE_LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl")

# Searched in two linear steps (first opening tag, then the first closing tag after it): one
# lazy `<job_offer>.*?</job_offer>` pattern is quadratic on text full of unclosed openers.
_OPEN = re.compile(r"<job_offer\b[^<>]{0,200}>")
_CLOSE = re.compile(r"</job_offer\s*>")
_DECLARATION = re.compile(r"<!(DOCTYPE|ENTITY)", re.IGNORECASE)
# Around the element, an XML declaration and a markdown code fence are conventions, not noise.
_TOLERATED_AROUND = re.compile(r"<\?xml[^>]*\?>|```[a-z]*", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]{0,300}>")
# Stripped at both ends of a skill; "+" and "#" are kept so that C, C++ and C# stay apart.
_EDGE_PUNCTUATION = " \t\n.,;:!?'\"`«»“”‘’()[]{}*•·-–—/\\|"
_HYPHENS = re.compile(r"[-‐‑–—_]+")


@dataclass(frozen=True, slots=True)
class ParsedOffer:
    """What the parser found in an offer, and why it falls short of the schema (`errors`)."""

    ok: bool
    errors: tuple[str, ...]
    title: str = ""
    overview: str = ""
    responsibilities: tuple[str, ...] = ()
    required_skills: tuple[str, ...] = ()
    nice_to_have: tuple[str, ...] = ()
    text: str = ""  # all visible text, for language identification
    passed: tuple[str, ...] = ()  # the names from CHECKS that passed

    @property
    def skills(self) -> tuple[str, ...]:
        return self.required_skills + self.nice_to_have

    @property
    def prose(self) -> tuple[str, ...]:
        """The sentences that carry the offer's language (titles and skills often don't)."""
        return tuple(s for s in (self.overview, *self.responsibilities) if s)


# --- skill matching --------------------------------------------------------------------


def fold(text: str) -> str:
    """`text` without accents (NFKD, combining marks dropped) and invisible format characters
    (zero-width spaces and joiners, soft hyphens, bidi controls: a "Py\u200bthon" is "python", an
    "Ig\u200bnore previous instructions" is still an instruction), casefolded, spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c) and unicodedata.category(c) != "Cf")
    return " ".join(bare.casefold().split())


def normalise_skill(s: str) -> str:
    """Case-, accent- and whitespace-insensitive form: "  Écoute  Active." -> "ecoute active"."""
    return fold(s).strip(_EDGE_PUNCTUATION)


def skill_tokens(s: str) -> tuple[str, ...]:
    """Words of a normalised skill, hyphens as spaces, plural "s"/"x" folded (en and fr)."""
    words = _HYPHENS.sub(" ", normalise_skill(s)).split()
    tokens = (w.strip(_EDGE_PUNCTUATION) for w in words)
    return tuple(_singular(t) for t in tokens if t)


def _singular(token: str) -> str:
    # Crude but symmetric (applied to both sides): "databases" ~ "database", "réseaux" ~ "réseau";
    # "ss" stays ("process", "business").
    if len(token) > 3 and (token[-1] == "x" or (token[-1] == "s" and token[-2] != "s")):
        return token[:-1]
    return token


def tokens_match(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Same tokens, or the shorter is a contiguous run of the longer ("sql" in "advanced sql")."""
    if not a or not b:
        return False
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    return any(long[i : i + len(short)] == short for i in range(len(long) - len(short) + 1))


def skills_match(a: str, b: str) -> bool:
    """Same skill, or one names the other with more words ("SQL" ~ "Advanced SQL")."""
    return tokens_match(skill_tokens(a), skill_tokens(b))


def match_skills(wanted: Sequence[str], listed: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split `wanted` into (found, not found) in `listed`, one listed skill per wanted skill.

    One-to-one, so a single stuffed entry ("Python SQL Git") cannot stand for three skills.
    """
    unused = list(listed)
    found: list[str] = []
    missing: list[str] = []
    for skill in wanted:
        hit = next((i for i, s in enumerate(unused) if skills_match(skill, s)), None)
        if hit is None:
            missing.append(skill)
        else:
            found.append(skill)
            del unused[hit]
    return found, missing


def provided_skills_included(context: Context, parsed: ParsedOffer) -> tuple[list[str], list[str]]:
    """The context's skills found in <required_skills>, and those missing (spelled as provided).

    Only <required_skills> counts: DESIGN.md puts "every provided skill + new ones" there, so a
    provided skill relegated to <nice_to_have> is missing.
    """
    return match_skills(context.skills, parsed.required_skills)


def added_skills(context: Context, parsed: ParsedOffer) -> list[str]:
    """Skills the model added (required + nice-to-have, minus the provided ones), deduplicated.

    These, and only these, are what `skill_relevance` may judge.
    """
    provided = [skill_tokens(s) for s in context.skills]
    seen: set[tuple[str, ...]] = set()
    added: list[str] = []
    for skill in parsed.skills:
        key = skill_tokens(skill)
        if any(tokens_match(key, p) for p in provided):
            continue  # a provided skill, however often it is repeated
        if key and key not in seen:
            seen.add(key)
            added.append(skill)
    return added


# --- language --------------------------------------------------------------------------


_IDENTIFIER_LOAD = threading.Lock()


def load_language_identifier() -> LanguageIdentifier:
    """The identifier, loaded once per process (~0.5 s of CPU, off the event loop when the
    judge warms up in a worker thread; a caller arriving during the load waits for it)."""
    with _IDENTIFIER_LOAD:
        return _language_identifier()


def language_identifier_loaded() -> bool:
    return _language_identifier.cache_info().currsize > 0


@cache
def _language_identifier() -> LanguageIdentifier:
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(DETECTABLE_LANGUAGES))
    return identifier


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) among DETECTABLE_LANGUAGES; ("und", 0.0) without letters."""
    text = text[:MAX_OFFER_CHARS]
    if not any(c.isalpha() for c in text):
        return "und", 0.0
    language, probability = load_language_identifier().classify(text)
    return str(language), float(probability)


# --- XML -------------------------------------------------------------------------------


def parse_offer(text: str) -> ParsedOffer:
    """Parse the first <job_offer> element of untrusted `text` and check it against the schema."""
    if len(text) > MAX_OFFER_CHARS:
        reason = f"offer is {len(text)} characters, limit {MAX_OFFER_CHARS}"
        return _failed(reason, text[:MAX_OFFER_CHARS])
    if _DECLARATION.search(text):
        return _failed("DTD or entity declarations are not allowed", text)
    opening = _OPEN.search(text)
    closing = _CLOSE.search(text, opening.end()) if opening else None
    if opening is None or closing is None:
        return _failed("no <job_offer>...</job_offer> element", text)
    try:
        root = safe_xml.fromstring(text[opening.start() : closing.end()], forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        return _failed(f"not well-formed: {exc}", text)
    outside = _TOLERATED_AROUND.sub("", text[: opening.start()] + text[closing.end() :]).strip()
    return _check(root, outside)


def _failed(reason: str, text: str) -> ParsedOffer:
    lines = (" ".join(line.split()) for line in _TAG.sub("\n", text).splitlines())
    visible = "\n".join(line for line in lines if line)
    return ParsedOffer(ok=False, errors=(reason,), text=visible)


def _check(root: Element, outside: str) -> ParsedOffer:
    errors: list[str] = []
    passed = ["well_formed"]
    fields: dict[str, str] = {}
    for name in ("title", "overview"):
        element = _single(root, name, errors)
        fields[name] = _text(element)
        if element is not None and not fields[name]:
            errors.append(f"empty <{name}>")
        if fields[name]:
            passed.append(name)

    lists: dict[str, tuple[str, ...]] = {}
    for name, child, expected in (
        ("responsibilities", "item", RESPONSIBILITIES_RANGE),
        ("required_skills", "skill", (REQUIRED_SKILLS_COUNT, REQUIRED_SKILLS_COUNT)),
        ("nice_to_have", "skill", (NICE_TO_HAVE_COUNT, NICE_TO_HAVE_COUNT)),
    ):
        element = _single(root, name, errors)
        if element is None:
            lists[name] = ()
            continue
        lists[name], problems = _items(name, element, child, expected)
        errors.extend(problems)
        if not problems:
            passed.append(name)

    stray = _layout(root, outside)
    errors.extend(stray)
    if not stray:
        passed.append("layout")

    return ParsedOffer(
        ok=not errors,
        errors=tuple(errors),
        title=fields["title"],
        overview=fields["overview"],
        responsibilities=lists["responsibilities"],
        required_skills=lists["required_skills"],
        nice_to_have=lists["nice_to_have"],
        text="\n".join(t for t in (" ".join(s.split()) for s in root.itertext()) if t),
        passed=tuple(c for c in CHECKS if c in passed),
    )


def _single(root: Element, name: str, errors: list[str]) -> Element | None:
    """The one <name> child of the root, or None with the reason added to `errors`."""
    found = root.findall(name)
    if len(found) == 1:
        return found[0]
    errors.append(f"missing <{name}>" if not found else f"{len(found)} <{name}> elements, expected 1")
    return None


def _text(element: Element | None) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def _items(
    name: str, element: Element, child: str, expected: tuple[int, int]
) -> tuple[tuple[str, ...], list[str]]:
    """The texts of `element`'s <child> entries, and what is wrong with them."""
    texts = [_text(e) for e in element.findall(child)]
    items = tuple(t for t in texts if t)
    problems: list[str] = []
    low, high = expected
    wanted = str(low) if low == high else f"{low}-{high}"
    if not low <= len(items) <= high:
        problems.append(f"{len(items)} {name} items, expected {wanted}")
    if len(items) < len(texts):
        problems.append(f"{len(texts) - len(items)} empty <{child}> in <{name}>")
    if child == "skill" and len({skill_tokens(s) for s in items}) < len(items):
        problems.append(f"duplicate skills in <{name}>")
    others = sorted({e.tag for e in element if e.tag != child})
    if others:
        problems.append(f"unexpected {', '.join(f'<{t}>' for t in others)} in <{name}>")
    return items, problems


def _layout(root: Element, outside: str) -> list[str]:
    """What breaks the schema's layout: unknown elements, wrong order, loose text."""
    problems = []
    tags = [e.tag for e in root]
    unknown = sorted({t for t in tags if t not in ELEMENTS})
    if unknown:
        problems.append(f"unexpected {', '.join(f'<{t}>' for t in unknown)} in <job_offer>")
    known = [t for t in tags if t in ELEMENTS]
    if known != sorted(known, key=ELEMENTS.index):
        problems.append(f"elements not in the order {', '.join(ELEMENTS)}")
    loose = "".join([root.text or "", *(e.tail or "" for e in root)]).strip()
    if loose:
        problems.append(f"{len(loose)} characters of loose text inside <job_offer>")
    if outside:
        problems.append(f"{len(outside)} characters of text outside <job_offer>")
    return problems
