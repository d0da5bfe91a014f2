"""Remote generation: after each optimizer step the new adapter is published to the servers.

The adapter is saved where the servers read it, then hot-loaded there (`policy-v{version}`),
before the staleness gate lets the next step be sampled, every `generator.sync_every_steps`
steps; a resumed run publishes its adapter before the first step, whatever its version (else the
servers would sample from the base model until the next multiple). In-process generation shares
the learner's weights: nothing to publish.
"""

from __future__ import annotations

from ..policy.model import save_adapter
from ..remote import adapter_folder, prune_old_adapters
from .assemble import Parts


async def publish_weights(parts: Parts, at_start: bool = False) -> None:
    root, version = parts.adapter_root, parts.policy.version
    if root is None or version == 0:  # version 0: the servers' base model is the policy
        return
    if not at_start and version % parts.cfg.generator.sync_every_steps:
        return
    folder = adapter_folder(root, version)
    await parts.device.run(save_adapter, parts.policy, folder)
    await parts.generator.load_weights(version, str(folder))
    await prune_old_adapters(root)
