r"""PEPNet (Chang et al., KDD 2023): one shared table set; gates personalise it by scene and task.

  make experiment NAME=pepnet

EPNet (a gate on the embeddings from the scene's embedding) and PPNet (gates on each task
tower's layers from the sparse fields, gate inputs' gradients stopped), mtms_jax/models/
pepnet.py, at the reference sizes of experiments/common.JOINT_MODELS, with a CTR and a CVR
tower; one joint phase (tables and network together), loss ctr+cvr+ctcvr, on the synthetic
data's two scenes. Expect test AUCs within about 0.01 of the other joint models (README,
Models).
"""

from experiments import common


def get_config(arg=None):
  return common.joint_config("pepnet", arg)
