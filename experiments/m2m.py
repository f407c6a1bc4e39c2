r"""M2M (Zhang et al., WSDM 2022): one shared table set; a meta unit generates each scene's weights.

  make experiment NAME=m2m

MMoE's experts, then per task the meta attention over the experts and a residual meta tower,
whose weights a shared meta unit generates from the scene's representation
(mtms_jax/models/m2m.py), at the reference sizes of experiments/common.JOINT_MODELS; one
joint phase (tables and network together), loss ctr+cvr+ctcvr, on the synthetic data's two
scenes. Expect test AUCs within about 0.01 of the other joint models (README, Models).
"""

from experiments import common


def get_config(arg=None):
  return common.joint_config("m2m", arg)
