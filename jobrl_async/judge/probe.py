"""The sample question: what `judge check`, the preflight and the judge's breaker probes ask.

One criterion of a small, valid offer: the smallest call that proves the LLM judge answers.
The stage (`check`, the offer-level probe) and the pool (each endpoint's probe) both ask it.
"""

from __future__ import annotations

from ..flow.records import Context
from .prompts import build_messages

SAMPLE_CONTEXT = Context("Data Scientist", "en", ("Python", "SQL", "Statistics"), "Technology")
PROBE_CRITERION = "skill_relevance"


def example_offer(context: Context) -> str:
    """A well-formed offer for `context` (five required skills, three nice-to-have)."""
    extra = ["Communication", "Teamwork", "Problem solving", "Git", "Documentation", "Agile", "English", "Mentoring"]
    required = [*context.skills, *[s for s in extra if s not in context.skills]][:5]
    nice = [s for s in extra if s not in required][:3]
    fr = context.language == "fr"
    verbs = (["Concevoir", "Livrer", "Documenter", "Améliorer", "Collaborer avec"] if fr
             else ["Design", "Deliver", "Document", "Improve", "Collaborate with"])
    objects = (["les solutions", "les projets", "le travail", "les processus", "les équipes"] if fr
               else ["solutions", "projects", "the work", "processes", "the teams"])
    overview = (f"Nous recrutons un ou une {context.job_title} pour rejoindre notre équipe." if fr
                else f"We are hiring a {context.job_title} to join our team.")
    lines = ["<job_offer>", f"  <title>{context.job_title}</title>", f"  <overview>{overview}</overview>",
             "  <responsibilities>"]
    lines += [f"    <item>{v} {o}</item>" for v, o in zip(verbs, objects)]
    lines += ["  </responsibilities>", "  <required_skills>"]
    lines += [f"    <skill>{s}</skill>" for s in required]
    lines += ["  </required_skills>", "  <nice_to_have>"]
    lines += [f"    <skill>{s}</skill>" for s in nice]
    lines += ["  </nice_to_have>", "</job_offer>"]
    return "\n".join(lines)


def sample_messages() -> list[dict[str, str]]:
    """The probe's and `judge check`'s question: one criterion of a small valid offer."""
    return build_messages(PROBE_CRITERION, SAMPLE_CONTEXT, example_offer(SAMPLE_CONTEXT))
