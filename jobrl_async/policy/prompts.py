"""The prompt the policy answers: an instruction in the context's language, with the offer's XML.

Gemma has no system role (its chat template folds a system message into the first user turn),
so the whole instruction is the first user turn, rendered with the tokenizer's chat template
and the generation prompt (`<start_of_turn>model\\n`). The template already emits BOS: token ids
come from `prompt_ids`, which tokenises the rendered text with `add_special_tokens=False`.
"""

from __future__ import annotations

from typing import Any

from ..flow.records import Context, Language

# The schema of DESIGN.md, "The job offer"; the placeholder texts are in the prompt's language.
_XML = """<job_offer>
  <title>{title_hint}</title>
  <overview>{overview_hint}</overview>
  <responsibilities>
    <item>{item_hint}</item>
  </responsibilities>
  <required_skills>
    <skill>{required_hint}</skill>
  </required_skills>
  <nice_to_have>
    <skill>{nice_hint}</skill>
  </nice_to_have>
</job_offer>"""

_WORDS: dict[Language, dict[str, str]] = {
    "en": {
        "ask": "Write a job offer in English for the position below.",
        "title": "Job title",
        "industry": "Industry",
        "skills": "Skills to include",
        "format": "Reply with this XML and nothing else:",
        "title_hint": "the job title",
        "overview_hint": "One or two sentences.",
        "item_hint": "A responsibility starting with an action verb (5 to 7 items)",
        "required_hint": "Exactly 5 skills: every skill listed below, plus new relevant ones",
        "nice_hint": "Exactly 3 skills",
    },
    "fr": {
        "ask": "Rédige une offre d'emploi en français pour le poste ci-dessous.",
        "title": "Intitulé du poste",
        "industry": "Secteur",
        "skills": "Compétences à inclure",
        "format": "Réponds uniquement avec ce XML :",
        "title_hint": "l'intitulé du poste",
        "overview_hint": "Une ou deux phrases.",
        "item_hint": "Une mission commençant par un verbe d'action (5 à 7 éléments)",
        "required_hint": "Exactement 5 compétences : toutes celles listées ci-dessous, plus de nouvelles pertinentes",
        "nice_hint": "Exactement 3 compétences",
    },
}
# French typography puts a space before a colon.
_COLON: dict[Language, str] = {"en": ":", "fr": " :"}


def instruction(context: Context) -> str:
    """The user turn for `context`, in its language.

    The context comes last, nearest to the answer: a small model copies the title and skills
    more reliably from there (and nothing is lost for a large one).
    """
    w, colon = _WORDS[context.language], _COLON[context.language]
    xml = _XML.format(**{k: v for k, v in w.items() if k.endswith("_hint")})
    lines = [w["ask"], w["format"], xml, "", f"{w['title']}{colon} {context.job_title}"]
    if context.industry:
        lines.append(f"{w['industry']}{colon} {context.industry}")
    lines.append(f"{w['skills']}{colon} {', '.join(context.skills)}")
    return "\n".join(lines)


def build_prompt(context: Context) -> list[dict[str, str]]:
    """The chat messages for `context`: one user turn (Gemma has no system role)."""
    return [{"role": "user", "content": instruction(context)}]


def render_prompt(tokenizer: Any, context: Context) -> str:
    """The prompt as text, through the tokenizer's chat template, ready for the model's turn."""
    return tokenizer.apply_chat_template(build_prompt(context), tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer: Any, context: Context) -> list[int]:
    """Token ids of the rendered prompt; BOS comes from the template, so none is added again."""
    return tokenizer(render_prompt(tokenizer, context), add_special_tokens=False)["input_ids"]
