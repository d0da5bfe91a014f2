"""The learner stage: GRPO on the LoRA weights, and how far generation may run ahead of it.

    learner.py    the stage: a batch of groups -> optimizer steps on the device -> a new version
    grpo.py       pure maths: group advantages, the clipped importance-weighted loss, the LR schedule
    staleness.py  the staleness gate (`training.max_policy_lag`)
"""
