"""verl plugin (entry point group ``verl.plugins``, loaded by ``import verl``): the dense manager as ``mralign_dense``.

Registered here rather than in dense.py, so that loading dense.py by path (``reward_manager.source=importlib``)
never registers a second class under the same name, which verl's registry refuses.
"""

from verl.experimental.reward_loop.reward_manager import register

from mralign_plugin.adapters.verl.dense import MRAlignDenseRewardManager

register("mralign_dense")(MRAlignDenseRewardManager)
