"""The policy: the model that writes offers, shared by the generator and the learner.

    model.py        the causal LM with its LoRA adapter and tokenizer; loading, saving adapters
    device.py       where it runs: torch threads, and the lock generation and learning share
    prompts.py      the prompt it answers: an instruction in the context's language
    logprobs.py     its teacher-forced log-probs of given completions, in the generator's layout
    tiny.py         the embedded tiny model's recipe (a small Gemma 3, built offline)
    tiny_assets.py  the tiny model's build and shipped files, verified on load
"""
