"""Simulation science: simulator adapters behind :mod:`sims.types`, the scripted expert, demo recording.

Importing ``sims`` has no side effects and imports no simulator; heavy packages load lazily.

- :func:`sims.factory.make_env` -- adapter by suite name (``libero_*``, ``robocasa_*``);
- :class:`sims.libero_env.LiberoEnv`, :class:`sims.robocasa_env.RoboCasaEnv`;
- :class:`sims.expert.ScriptedExpert` -- privileged-state expert (a batched ``Policy``);
- :func:`sims.demos.record_episode` -> :class:`sims.demos.EpisodeRecording`.

Never imports Prefect, Ray or MLflow.
"""
