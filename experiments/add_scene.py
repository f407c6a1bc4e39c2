r"""A scene added to a trained MTMS model (the paper: "new tasks or scenes could be added
easily"): one command trains a run on scene0 alone (the trained model whose schema lacks
scene1), then warm-starts from it with scene1 added.

  make experiment NAME=add_scene
  make experiment NAME=add_scene RUN=mine ARGS="--config.add_scene.base=checkpoints/quickstart/scene0"
      # from a run of your own on fewer scenes, e.g. make experiment NAME=quickstart
      # RUN=scene0 ARGS="--config.data.scenes='(0,)'"

In `<workdir>/added` the old scene's tables and towers are copied by scene name into the
two-scene model (scene1's components start fresh), the embedding phase trains with scene0's
components frozen (`frozen_scenes` of the embedding phase: bitwise unchanged, so the new scene
cannot disturb what the old one learnt), and the ranking network, fresh, is fine-tuned on
both scenes. Expect scene0's test AUCs close to the base run's (`base/test/scene0/...` in
results.json) and scene1's close to the quickstart's.
"""

import ml_collections

from experiments import common


def get_config(arg=None):
  config = common.base_config(arg)
  config.add_scene = ml_collections.ConfigDict({
      "base": "",                # a trained run lacking scenes; '' trains one in <workdir>/base
      "base_scenes": (0,),       # the scenes (indices) of that base run
  })
  return config
