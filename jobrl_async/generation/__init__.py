"""The generator stage in process: contexts in, sampled offers with their log-probs out.

    generator.py      the stage: requests -> micro-batches on the device -> Trajectories
    decode.py         the lean decode path: prefill once, one model step per token
    sampling.py       a token per row from the scores, with the log-prob the learner needs
    shared_prefix.py  attention over a group's shared prompt, kept once
    buffers.py        growing key/value buffers, written in place

Remote generation (vLLM servers) is `remote/`, behind the same `Generator` protocol.
"""
