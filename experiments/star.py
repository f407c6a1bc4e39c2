r"""STAR (Sheng et al., CIKM 2021): one shared table set, the scene shaping the network.

  make experiment NAME=star

Partitioned normalization, the star topology FCN (each scene's weights = shared x its own)
and the auxiliary network on the scene indicator (mtms_jax/models/star.py), at the
reference sizes of experiments/common.JOINT_MODELS, with a CTR and a CVR star tower; one
joint phase (tables and network together), loss ctr+cvr+ctcvr, on the synthetic data's two
scenes. Expect test AUCs within about 0.01 of the other joint models (README, Models).
"""

from experiments import common


def get_config(arg=None):
  return common.joint_config("star", arg)
