"""Stand-ins for the services jobrl-async talks to, for tests and `bench` commands: one per service.

    fake_judge.py  FakeChatServer: a Chat Completions server (the LLM judge), both URL shapes
    fake_vllm.py   FakeVLLM: a vLLM completion server with LoRA hot-load (`python -m` serves it)
    server.py      what they share: served from their own thread and loop, scripted faults,
                   OpenAI-shaped replies

Real HTTP on loopback, real status codes and headers: the clients under test cannot tell them
from the real thing. Nothing in the product imports this package but the benchmarks.
"""
