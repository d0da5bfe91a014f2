"""Prompts: the instruction in the context's language, rendered the way Gemma expects."""

from __future__ import annotations

import pytest

from jobrl_async.flow.records import Context
from jobrl_async.policy.prompts import build_prompt, instruction, prompt_ids, render_prompt

EN = Context("Data Scientist", "en", ("Python", "SQL", "Statistics"), "Tech")
FR = Context("Développeur(se) Web", "fr", ("PHP", "Symfony", "Git"), "Tech")
SCHEMA = ["<job_offer>", "<title>", "<overview>", "<responsibilities>", "<item>", "</responsibilities>",
          "<required_skills>", "<skill>", "</required_skills>", "<nice_to_have>", "</nice_to_have>", "</job_offer>"]


def _in_order(text: str, parts: list[str]) -> bool:
    at = 0
    for part in parts:
        at = text.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


def test_english_instruction_names_the_context_and_the_schema() -> None:
    text = instruction(EN)
    assert text.startswith("Write a job offer in English")
    assert "Job title: Data Scientist" in text
    assert "Industry: Tech" in text
    assert "Skills to include: Python, SQL, Statistics" in text
    assert _in_order(text, SCHEMA)
    assert "5 to 7" in text and "Exactly 5" in text and "Exactly 3" in text


def test_french_instruction_is_in_french() -> None:
    text = instruction(FR)
    assert text.startswith("Rédige une offre d'emploi en français")
    assert "Intitulé du poste : Développeur(se) Web" in text
    assert "Compétences à inclure : PHP, Symfony, Git" in text
    assert "Secteur : Tech" in text
    assert _in_order(text, SCHEMA)
    assert "Job title" not in text and "Skills to include" not in text


def test_context_without_industry_has_no_industry_line() -> None:
    text = instruction(Context("Welder", "en", ("Grinding", "MIG welding", "Safety")))
    assert "Industry" not in text
    assert "Skills to include: Grinding, MIG welding, Safety" in text


def test_one_user_turn_because_gemma_has_no_system_role() -> None:
    messages = build_prompt(FR)
    assert messages == [{"role": "user", "content": instruction(FR)}]


@pytest.mark.parametrize("context", [EN, FR], ids=["en", "fr"])
def test_rendered_with_gemma_chat_template(tiny_policy, context: Context) -> None:
    tokenizer = tiny_policy.tokenizer
    text = render_prompt(tokenizer, context)
    assert text == f"<bos><start_of_turn>user\n{instruction(context)}<end_of_turn>\n<start_of_turn>model\n"
    ids = prompt_ids(tokenizer, context)
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id  # no double BOS
    assert tokenizer.decode(ids) == text
    # the schema's tags are single tokens in the tiny tokenizer
    assert tokenizer.convert_tokens_to_ids("</job_offer>") in ids
