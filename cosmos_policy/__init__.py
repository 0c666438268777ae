"""Cosmos Policy: latent-frame injection on diffusers' CosmosTransformer3DModel (policy + world model + value).

Public entry points (import submodules explicitly; nothing heavy is imported here):

* ``configuration_cosmos_policy.get_config("tiny" | "2b", layout)``
* ``latent_layout.libero_layout()`` / ``robocasa_layout()``
* ``modeling_cosmos_policy.CosmosPolicyModel(config)``
* ``tokenizer.build_tokenizer(config.tokenizer)``; ``samples.encode_episode`` / ``compose_batch_specs`` /
  ``build_batch``; ``normalization.compute_stats``
* ``train_step.make_optimizer`` / ``train_step``
* ``checkpoint_io.save_checkpoint`` / ``load_checkpoint``
* ``policy.CosmosPolicy`` (``act(observations, instructions) -> (B, K, A)``)
"""

__version__ = "0.1.0"
