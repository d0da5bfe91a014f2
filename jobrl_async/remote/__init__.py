"""Generation on OpenAI-compatible completion servers (vLLM), with LoRA adapters hot-loaded.

One `SampleRequest` (a context and its attempts) is one `POST {url}/v1/completions`. The prompt
goes as OUR token ids (the chat template rendered by our tokenizer), so the server re-tokenises
nothing; `n` is the number of attempts; the reply carries every sampled token as `token_id:N`
(`return_tokens_as_token_ids`) with its log-prob, so the learner gets exact ids and the
behaviour log-probs of the engine that sampled them.

A module per job:

    generator.py  RemoteGenerator: sampling, never dropping a request; start-up check; the probe
    reply.py      the request body and what a reply must hold (pure)
    adapters.py   adapter names and folders; load, reload and unload on the servers
    rotation.py   the round robin, servers out of rotation, the pause, the probe loop
    http.py       the aiohttp session, bounded reads, statuses as errors, retries (jobrl_async.retry)
    options.py    RemoteOptions (the `[generator]` section) and RemoteStats

What the servers must be started with (README, "scaling out"): `--enable-lora`,
`--max-lora-rank` >= lora.r, `--max-loras 2` (current and previous adapter in one batch),
`--logprobs-mode processed_logprobs` (log-probs after temperature, as the trainer computes them;
vLLM's default is the raw model's), and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`.
"""

from .adapters import adapter_folder, prune_old_adapters
from .generator import RemoteGenerator
from .http import RemoteGeneratorError
from .options import RemoteOptions

__all__ = ["RemoteGenerator", "RemoteGeneratorError", "RemoteOptions", "adapter_folder", "prune_old_adapters"]
