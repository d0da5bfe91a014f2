"""jobrl-async: asynchronous RL fine-tuning of a small LLM that writes job offers.

A trajectory's way, one room each (pipeline/stages.py wires them, commands/ and cli.py on top):

    producer.py ──▶ generation/ (or remote/: vLLM) ──▶ judge/ ──▶ collector.py ──▶ learning/ ──▶ checkpoints/

What the stages share, below them: flow/ (the records between stages, the offer's checks, the
reward), policy/ (the model, its device, prompts and log-probs), ops/ (logging, metrics, progress,
W&B), data.py (the dataset), config.py, storage/, errors.py, aio.py, retry.py and breaker.py.
A stage imports those and no other stage (remote/ aside: it implements the generator's
protocol); report/ reads a run's log, testing/ holds the fakes of the services (tests/test_house.py).
"""

__version__ = "0.1.0"
