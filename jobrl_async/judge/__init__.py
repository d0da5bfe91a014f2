"""The judge: five criteria per offer, by an LLM, a local stub, or both (hybrid).

Pure parts: `prompts` (what the LLM is asked, with the offer delimited as data), `parse`
(what it answered), `skills` (a skill knowledge base from the bundled dataset) and `stub`
(deterministic verdicts computed locally). I/O parts (client, limiter, stage) sit beside them.
"""
