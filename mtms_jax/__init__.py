"""mtms_jax: multi-task, multi-scene unified ranking (Tan et al., Baidu) in JAX/Flax.

The package follows the data: schema -> data -> embedding -> models -> losses -> optim ->
train_state -> train -> metrics; experiments live in `experiments/`.
"""
