"""Pure parts of the judges of today: what each 400 teaches (dialect.py), the reasoning allowance,
a reply's usage read as untrusted figures and its price (usage.py), the strict schemas."""

from __future__ import annotations

import math

import pytest

from jobrl_async.flow.records import CRITERIA
from jobrl_async.judge.dialect import (
    ALLOWANCE_FLOOR,
    FIRST_ALLOWANCE,
    Dialect,
    ReasoningBudget,
    Refusal,
    adapt,
    initial,
    nearest_effort,
    request_body,
)
from jobrl_async.judge.schema import criterion_format, offer_format
from jobrl_async.judge.usage import Prices, Usage, read_usage


def refusal(message: str, param: str | None = None, code: str | None = None) -> Refusal:
    """A 400's body as OpenAI and Azure send it."""
    return Refusal.of({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                 "code": code}}, "")


MAX_TOKENS = refusal("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                     "'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
TEMPERATURE = refusal("Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) "
                      "value is supported.", "temperature", "unsupported_value")
EFFORT_GPT5 = refusal("Unsupported value: 'reasoning_effort' does not support 'none' with this model. Supported "
                      "values are: 'minimal', 'low', 'medium', and 'high'.", "reasoning_effort", "unsupported_value")
EFFORT_GPT51 = refusal("Unsupported value: 'reasoning_effort' does not support 'minimal' with this model. "
                       "Supported values are: 'none', 'low', 'medium', and 'high'.", "reasoning_effort",
                       "unsupported_value")
NO_EFFORT = refusal("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                    "reasoning_effort", "unsupported_parameter")
OLD_API = refusal("Unrecognized request argument supplied: max_completion_tokens")
NO_SCHEMA = refusal("Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
                    "response_format")
NO_FORMAT = refusal("Invalid parameter: 'response_format' is not supported with this model.", "response_format")
CONTEXT = refusal("This model's maximum context length is 8192 tokens. However, your messages resulted in 9012 "
                  "tokens.", "messages", "context_length_exceeded")

CLASSIC = Dialect()
REASONING_NONE = Dialect("reasoning", "none", temperature=False)


def test_a_reasoning_model_is_learnt_from_its_400_not_from_its_name():
    assert initial("auto", "lowest", "json_schema") == CLASSIC  # whatever the deployment is called
    assert adapt(CLASSIC, MAX_TOKENS, "lowest") == REASONING_NONE
    assert adapt(CLASSIC, TEMPERATURE, "lowest") == REASONING_NONE  # either refusal may come first
    assert adapt(CLASSIC, MAX_TOKENS, "low") == Dialect("reasoning", "low", temperature=False)
    assert initial("reasoning", "high", "json_object") == Dialect("reasoning", "high", False, "json_object")


def test_the_effort_follows_the_values_the_server_lists():
    assert adapt(REASONING_NONE, EFFORT_GPT5, "lowest").effort == "minimal"  # gpt-5: no none
    wanted_minimal = Dialect("reasoning", "minimal", temperature=False)
    assert adapt(wanted_minimal, EFFORT_GPT51, "minimal").effort == "low"  # gpt-5.1: the closest above
    assert adapt(REASONING_NONE, NO_EFFORT, "lowest").effort is None  # o1-mini: no such parameter
    assert adapt(Dialect("reasoning", None, temperature=False), NO_EFFORT, "lowest") is None  # nothing left
    assert nearest_effort(["low", "medium", "high"], "lowest") == "low"
    assert nearest_effort(["minimal", "low"], "high") == "low"  # none above: the highest below
    assert nearest_effort([], "low") is None


def test_an_old_api_version_goes_back_to_the_classic_dialect():
    assert adapt(REASONING_NONE, OLD_API, "lowest") == CLASSIC


def test_structured_outputs_fall_back_to_json_mode_then_to_prose():
    assert adapt(CLASSIC, NO_SCHEMA, "lowest").response_format == "json_object"
    assert adapt(CLASSIC, NO_FORMAT, "lowest").response_format == "text"
    assert adapt(Dialect(response_format="text"), NO_FORMAT, "lowest") is None


def test_a_400_about_the_offer_is_not_about_the_dialect():
    assert adapt(CLASSIC, CONTEXT, "lowest") is None
    assert adapt(REASONING_NONE, MAX_TOKENS, "lowest") is None  # already reasoning: the 400 stands


def test_each_dialect_sends_only_what_it_takes():
    messages = [{"role": "user", "content": "hi"}]
    schema = criterion_format("xml_format")
    classic = request_body(CLASSIC, "judge", messages, 200, 0, schema)
    assert classic == {"model": "judge", "messages": messages, "max_tokens": 200, "temperature": 0,
                       "response_format": {"type": "json_schema", "json_schema": schema}}
    reasoning = request_body(Dialect("reasoning", "minimal", False, "json_object"), "judge", messages, 200, 64, schema)
    assert reasoning == {"model": "judge", "messages": messages, "max_completion_tokens": 264,
                         "reasoning_effort": "minimal", "response_format": {"type": "json_object"}}
    prose = request_body(Dialect("reasoning", None, False, "text"), "judge", messages, 200, 64, None)
    assert "response_format" not in prose and "reasoning_effort" not in prose and "temperature" not in prose


def test_the_reasoning_allowance_is_learnt_from_the_replies_within_its_bounds():
    budget = ReasoningBudget(cap=4096)
    assert budget.allowance("minimal") == FIRST_ALLOWANCE["minimal"]  # before any reply
    assert ReasoningBudget(cap=100).allowance("high") == 100  # the cap holds from the start
    for tokens in [10] * 95 + [400] * 5:  # the 95th percentile is 10
        budget.learn(tokens)
    assert budget.allowance("minimal") == ALLOWANCE_FLOOR  # 1.25 x 10 is under the floor
    for tokens in [1000] * 200:
        budget.learn(tokens)
    assert budget.allowance("low") == 1250  # 1.25 x the recent 95th percentile
    assert budget.boosted("low") == 4096  # a cut reply's retry: four times, capped
    budget.learn(-5)  # a negative figure is read as 0, never a negative budget
    assert budget.allowance("low") >= ALLOWANCE_FLOOR


def test_strict_schemas_close_every_object_and_require_every_key():
    def closed(schema: dict) -> bool:
        if schema.get("type") != "object":
            return True
        return (schema["additionalProperties"] is False and set(schema["required"]) == set(schema["properties"])
                and all(closed(p) for p in schema["properties"].values()))

    one, every = criterion_format("xml_format"), offer_format(CRITERIA)
    assert one["strict"] and every["strict"] and closed(one["schema"]) and closed(every["schema"])
    assert list(every["schema"]["properties"]) == list(CRITERIA)
    text = repr(every)
    assert not any(word in text for word in ("minLength", "pattern", "minimum", "minItems"))  # strict refuses them


# ---------------------------------------------------------------- usage


def usage(**fields) -> dict:
    base = {"prompt_tokens": 500, "completion_tokens": 120, "total_tokens": 620,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 80}}
    return {**base, **fields}


def test_sane_usage_is_read_with_its_details():
    assert read_usage(usage(), budget=1000) == Usage(500, 120, reasoning=80, cached=0)
    assert read_usage({"prompt_tokens": 5, "completion_tokens": 1}, budget=100) == Usage(5, 1)  # details absent
    assert read_usage(None, budget=100) is None


@pytest.mark.parametrize("bad", [
    {"prompt_tokens": 10**9}, {"prompt_tokens": 10**400}, {"prompt_tokens": -5}, {"prompt_tokens": True},
    {"prompt_tokens": 500.0}, {"prompt_tokens": "500"}, {"completion_tokens": math.nan},
    {"total_tokens": "abc"}, {"total_tokens": -5}, {"total_tokens": 2**65},
    {"completion_tokens_details": {"reasoning_tokens": 121}},  # more than the completion
    {"prompt_tokens_details": {"cached_tokens": 501}}, {"prompt_tokens_details": {"cached_tokens": -1}},
])
def test_absurd_usage_is_not_believed(bad: dict):
    assert read_usage(usage(**bad), budget=1000) is None


def test_dollars_follow_the_configured_prices():
    prices = Prices(input=1.25, cached_input=0.125, output=10.0)
    u = Usage(prompt=2000, completion=300, reasoning=200, cached=1024)
    assert prices.usd(u) == pytest.approx((976 * 1.25 + 1024 * 0.125 + 300 * 10.0) / 1e6)
    assert not Prices().known and Prices(output=1).known
