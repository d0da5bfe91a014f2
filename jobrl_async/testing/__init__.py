"""Stand-ins for the services jobrl-async talks to, for tests and `bench` commands: one per service.

    fake_judge.py  FakeChatServer: a Chat Completions server (the LLM judge), both URL shapes
    fake_vllm.py   FakeVLLM: a vLLM completion server with LoRA hot-load (`python -m` serves it)
    samplers.py    what the fake vLLM samples (canned offers, or the tiny model) and how it cuts
    server.py      what they share: served from their own thread and loop, scripted faults,
                   OpenAI-shaped replies

Real HTTP on loopback, real status codes and headers: the clients under test cannot tell them
from the real thing. Nothing in the product imports this package but the benchmarks.
"""
