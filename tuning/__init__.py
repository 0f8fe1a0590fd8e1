"""``fastcam tune``: Optuna search over the mutable hyperparameters (installed as fastcam.tuning).

- ``fields``: what a space may name, derived from the config schema; a trial's values -> Config.
- ``space``: the search space file (``space.yaml``), vetted by the guard, scaled to the run.
- ``params``: sampling a trial's parameters and applying them to a guard-checked Config.
- ``objective``: one trial = one in-process ``train()`` run, pruned through the trainer's callback.
- ``heartbeat``: dead workers' trials are failed and retried.
- ``study``: storage (journal file or database), joining a study by name, the worker loop.
- ``report``: best.yaml, trials.csv, the printed summary, plots.
- ``cli``: the ``fastcam tune`` command.
"""
