"""The embedded `tiny` model: a small Gemma 3, built offline from the bundled data; the recipe.

No model can be downloaded in a dry run, and a random model writes noise (every group gets the
same reward and nothing is learned). So the package ships a small model built by this recipe
(`tiny_assets.build_tiny`, run by `jobrl-async tiny build`; the files under assets/tiny):

1. a byte-level BPE tokenizer trained with `tokenizers` on the bundled training split (prompts
   and template offers in both languages, plus the phrase banks below), with Gemma's special
   tokens at Gemma's ids (<pad> 0, <eos> 1, <bos> 2, <unk> 3), <start_of_turn>/<end_of_turn>,
   the offer's XML tags as single tokens and Gemma's chat template;
2. a `Gemma3ForCausalLM` with small dimensions and Gemma's attention pattern (three sliding-
   window layers, then one full-attention layer);
3. a short supervised warm start on template offers for the training contexts, deliberately
   imperfect (see `Flaws`): the model writes recognisable but flawed XML offers, so rewards
   differ within a group and RL has something to improve.

The build is deterministic (fixed seeds, deterministic torch, always on CPU: byte-identical files
when rebuilt on the same machine) and takes 2-4 minutes on 2 cores, which is why its output
ships instead of being built on the user's machine. The shipped folder is loaded like any local
model folder (`model.load_policy`).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from ..flow.records import Context, Language
from .prompts import instruction, prompt_ids

TINY_VERSION = 2
RANDOM_270M = "gemma-3-270m-random"  # bench-only: the real architecture, random weights

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
PAD, EOS, BOS, UNK, START_OF_TURN, END_OF_TURN = SPECIAL_TOKENS
_ELEMENTS = (
    "job_offer", "title", "overview", "responsibilities", "item", "required_skills", "skill", "nice_to_have",
)
XML_TAGS = tuple(tag for name in _ELEMENTS for tag in (f"<{name}>", f"</{name}>"))
_TAG_RE = re.compile("|".join(re.escape(t) for t in XML_TAGS))

# Gemma 3's chat template: no system role (a system message is folded into the first user turn),
# the assistant's role is called "model", and the template itself emits BOS.
GEMMA_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- set role = "model" if message['role'] == 'assistant' else message['role'] -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"""


@dataclass(frozen=True)
class TinySpec:
    """Everything the build depends on besides the data; part of the cache key."""

    vocab_size: int = 4096  # asked of the BPE trainer; the model's is the real size, rounded to 64
    hidden_size: int = 128
    intermediate_size: int = 384
    layers: int = 4  # 3 sliding + 1 full, Gemma's pattern (5 + 1) shortened
    heads: int = 4
    kv_heads: int = 1  # like gemma-3-270m
    head_dim: int = 32
    sliding_window: int = 256  # shorter than prompt + offer (~300-350 tokens): the pattern matters
    max_positions: int = 2048
    train_steps: int = 480  # ~8 offers per training context; ~2 minutes on 2 cores
    batch_size: int = 8
    learning_rate: float = 8e-3
    seed: int = 0


DEFAULT_SPEC = TinySpec()

# ---------------------------------------------------------------- template offers (pure)

_OVERVIEWS: dict[Language, tuple[str, ...]] = {
    "en": (
        "We are looking for a {title} to join our {team}.",
        "We are looking for a {title} to join our {team}. You will work on ambitious projects.",
        "Join us as a {title} and help our {team} grow.",
        "As a {title}, you will play a key role in our {team}.",
    ),
    "fr": (
        "Nous recherchons un(e) {title} pour rejoindre notre {team}.",
        "Nous recherchons un(e) {title} pour rejoindre notre {team}. Vous travaillerez sur des projets ambitieux.",
        "Rejoignez-nous en tant que {title} et aidez notre {team} à grandir.",
        "En tant que {title}, vous jouerez un rôle clé dans notre {team}.",
    ),
}
_TEAM: dict[Language, tuple[str, str]] = {"en": ("team", "{industry} team"), "fr": ("équipe", "équipe {industry}")}
_RESPONSIBILITIES: dict[Language, tuple[str, ...]] = {
    "en": (
        "Design and deliver solutions using {skill}",
        "Collaborate with cross-functional teams to meet business goals",
        "Analyse requirements and translate them into clear plans",
        "Maintain high quality standards across all projects",
        "Mentor junior colleagues and share best practices",
        "Monitor performance and report on key indicators",
        "Improve existing processes with {skill}",
        "Coordinate with stakeholders to set priorities",
        "Document procedures and keep records up to date",
        "Ensure compliance with industry regulations",
        "Identify risks and propose corrective actions",
        "Support clients and answer their questions",
        "Plan and organise the daily work of the team",
        "Contribute to the continuous improvement of our services",
    ),
    "fr": (
        "Concevoir et livrer des solutions avec {skill}",
        "Collaborer avec des équipes pluridisciplinaires pour atteindre les objectifs",
        "Analyser les besoins et les traduire en plans clairs",
        "Garantir un haut niveau de qualité sur tous les projets",
        "Accompagner les collègues juniors et partager les bonnes pratiques",
        "Suivre les performances et présenter les indicateurs clés",
        "Améliorer les processus existants grâce à {skill}",
        "Coordonner les échanges avec les parties prenantes",
        "Rédiger la documentation et tenir les dossiers à jour",
        "Veiller au respect des réglementations du secteur",
        "Identifier les risques et proposer des actions correctives",
        "Assister les clients et répondre à leurs questions",
        "Planifier et organiser le travail quotidien de l'équipe",
        "Contribuer à l'amélioration continue de nos services",
    ),
}
GENERIC_SKILLS: dict[Language, tuple[str, ...]] = {
    "en": ("Communication", "Teamwork", "Problem solving", "Project management", "Time management",
           "Attention to detail", "Leadership", "Adaptability", "Critical thinking", "Organisation"),
    "fr": ("Communication", "Travail en équipe", "Résolution de problèmes", "Gestion de projet",
           "Gestion du temps", "Rigueur", "Leadership", "Adaptabilité", "Esprit critique", "Organisation"),
}
SECTIONS = ("overview", "responsibilities", "required_skills", "nice_to_have")


@dataclass(frozen=True)
class Flaws:
    """How a template offer departs from the schema (all defaults: a correct offer)."""

    items: int = 6  # responsibilities (5-7 is correct)
    required: int = 5  # required skills (exactly 5 is correct)
    nice: int = 3  # nice-to-have skills (exactly 3 is correct)
    drop_skill: bool = False  # leave one provided skill out
    wrong_language: bool = False  # write the prose in the other language
    missing_section: str | None = None  # one of SECTIONS left out

    @property
    def correct(self) -> bool:
        return self == Flaws(items=self.items) and 5 <= self.items <= 7


def sample_flaws(rng: random.Random, rate: float = 0.15) -> Flaws:
    """Each flaw independently with probability `rate`: about half the offers are correct."""

    def off(correct: int, wrong: tuple[int, ...]) -> int:
        return rng.choice(wrong) if rng.random() < rate else correct

    return Flaws(
        items=off(rng.randint(5, 7), (3, 4, 8)),
        required=off(5, (3, 4, 6)),
        nice=off(3, (1, 2, 4)),
        drop_skill=rng.random() < rate,
        wrong_language=rng.random() < rate,
        missing_section=rng.choice(SECTIONS) if rng.random() < rate / 2 else None,
    )


def template_offer(context: Context, rng: random.Random, flaws: Flaws, pool: Sequence[str]) -> str:
    """An XML offer for `context` with the given flaws; new skills come from `pool`."""
    language: Language = context.language
    if flaws.wrong_language:
        language = "fr" if language == "en" else "en"
    provided = list(dict.fromkeys(context.skills))
    if flaws.drop_skill and len(provided) > 1:
        provided.pop(rng.randrange(len(provided)))
    extra = [s for s in dict.fromkeys(pool) if s.casefold() not in {p.casefold() for p in context.skills}]
    rng.shuffle(extra)
    required = (provided + extra)[: flaws.required]
    nice = [s for s in extra if s not in required][: flaws.nice]

    team, industry_team = _TEAM[language]
    overview = rng.choice(_OVERVIEWS[language]).format(
        title=context.job_title, team=industry_team.format(industry=context.industry) if context.industry else team
    )
    phrases = rng.sample(_RESPONSIBILITIES[language], k=min(flaws.items, len(_RESPONSIBILITIES[language])))
    items = [p.format(skill=rng.choice(context.skills)) for p in phrases]

    sections = {
        "overview": [f"  <overview>{escape(overview)}</overview>"],
        "responsibilities": _block("responsibilities", "item", items),
        "required_skills": _block("required_skills", "skill", required),
        "nice_to_have": _block("nice_to_have", "skill", nice),
    }
    lines = ["<job_offer>", f"  <title>{escape(context.job_title)}</title>"]
    for name in SECTIONS:
        if name != flaws.missing_section:
            lines += sections[name]
    return "\n".join(lines + ["</job_offer>"])


def _block(name: str, child: str, texts: Sequence[str]) -> list[str]:
    return [f"  <{name}>", *(f"    <{child}>{escape(t)}</{child}>" for t in texts), f"  </{name}>"]


Pools = dict[tuple[str, str | None], list[str]]  # (language, industry) -> candidate new skills


def skill_pools(contexts: Sequence[Context]) -> Pools:
    """Candidate new skills per (language, industry): the skills other contexts there list."""
    pools: Pools = {}
    for c in contexts:
        pools.setdefault((c.language, c.industry), []).extend(c.skills)
    return {key: sorted(set(skills)) for key, skills in pools.items()}


def pool_for(context: Context, pools: Pools) -> list[str]:
    """The context's pool, topped up with generic skills so that every offer can reach its counts."""
    return [*pools.get((context.language, context.industry), []), *GENERIC_SKILLS[context.language]]


# ---------------------------------------------------------------- tokenizer


def tokenizer_corpus(contexts: Sequence[Context], seed: int) -> list[str]:
    """Prompts and offers for the training contexts, plus the phrase banks, split at XML tags.

    The tags become single added tokens, and the tokenizer encodes the text between them
    separately, so BPE learns from exactly those pieces ("\n    " is one). Every phrase bank is
    included in full so that the vocabulary covers both languages even for a small dataset.
    """
    rng = random.Random(seed)
    pools = skill_pools(contexts)
    texts: list[str] = []
    for c in contexts:
        texts.append(instruction(c))
        for _ in range(2):
            texts.append(template_offer(c, rng, sample_flaws(rng), pool_for(c, pools)))
    for language in ("en", "fr"):
        texts += [*_OVERVIEWS[language], *_RESPONSIBILITIES[language], *GENERIC_SKILLS[language]]
    return [piece for t in texts for piece in _TAG_RE.split(t) if piece]


def train_tokenizer(corpus: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE with Gemma's special tokens and chat template, as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens(list(XML_TAGS))
    # Like Gemma's tokenizer, plain encoding adds BOS; prompts avoid it (the template emits BOS).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=[START_OF_TURN, END_OF_TURN],
        padding_side="left",
        model_max_length=DEFAULT_SPEC.max_positions,
        chat_template=GEMMA_CHAT_TEMPLATE,
    )


# ---------------------------------------------------------------- model


def tiny_config(spec: TinySpec, vocab_size: int, end_of_turn_id: int) -> Any:
    from transformers import Gemma3TextConfig

    pattern = ["sliding_attention"] * 3 + ["full_attention"]
    return Gemma3TextConfig(
        vocab_size=_round_up(vocab_size, 64),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        query_pre_attn_scalar=spec.head_dim,
        sliding_window=spec.sliding_window,
        layer_types=[pattern[i % 4] for i in range(spec.layers)],
        max_position_embeddings=spec.max_positions,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
        },
        pad_token_id=0,
        eos_token_id=[1, end_of_turn_id],
        bos_token_id=2,
        tie_word_embeddings=True,
    )


def gemma3_270m_config(vocab_size: int = 262_144) -> Any:
    """google/gemma-3-270m's architecture (from its model card and config), for benchmarks."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=512,
        layer_types=[("full_attention" if (i + 1) % 6 == 0 else "sliding_attention") for i in range(18)],
        max_position_embeddings=32_768,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
        },
        pad_token_id=0,
        eos_token_id=[1, 106],
        bos_token_id=2,
        tie_word_embeddings=True,
    )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def warm_start(
    model: Any, tokenizer: Any, contexts: Sequence[Context], spec: TinySpec, stop_after: int | None = None
) -> list[float]:
    """Supervised steps on (prompt, template offer) pairs; the loss covers the offer only.

    `stop_after` ends the run early, on the same schedule (the drift check replays the first steps).
    """
    import torch

    rng = random.Random(spec.seed)
    pools = skill_pools(contexts)
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, spec.train_steps // 10)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine down to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, spec.train_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    losses = []
    for _ in range(spec.train_steps if stop_after is None else min(stop_after, spec.train_steps)):
        batch = [rng.choice(contexts) for _ in range(spec.batch_size)]
        examples = [_example(tokenizer, c, rng, pools, end_of_turn) for c in batch]
        input_ids, attention_mask, labels = _sft_batch(examples)
        loss = _completion_loss(model, input_ids, attention_mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def _completion_loss(model: Any, input_ids: Any, attention_mask: Any, labels: Any) -> Any:
    """Next-token cross-entropy on the offer tokens, with the LM head applied only there.

    The same loss as `model(..., labels=labels).loss`, about 25% faster per step here: half
    the tokens are prompt, and the head (vocab x hidden) is a large share of this small model.
    """
    import torch

    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = model.lm_head(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def _example(
    tokenizer: Any, context: Context, rng: random.Random, pools: Pools, end_of_turn: int
) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids): a template offer with sampled flaws, closed by <end_of_turn>."""
    flaws = sample_flaws(rng)
    offer = template_offer(context, rng, flaws, pool_for(context, pools))
    return prompt_ids(tokenizer, context), tokenizer(offer, add_special_tokens=False)["input_ids"] + [end_of_turn]


def _sft_batch(examples: Sequence[tuple[list[int], list[int]]]) -> tuple[Any, Any, Any]:
    """Right-padded ids, mask and labels (-100 on the prompt and padding)."""
    import torch

    width = max(len(p) + len(c) for p, c in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (p, c) in enumerate(examples):
        n = len(p) + len(c)
        ids[row, :n] = torch.tensor(p + c)
        mask[row, :n] = 1
        labels[row, len(p) : n] = torch.tensor(c)
    return ids, mask, labels
