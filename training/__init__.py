"""Training: dataset validation, the Ray Train LoRA recipe, evaluation, job runners.

Entry points for the Jobs API and the CLI:

- validate a file: ``datasets.validate_dataset(data, task, ...)`` -> ``ValidationReport``
  (``issues`` with line numbers, ``stats`` with hash/counts, ``raise_for_issues()``); token limits
  with ``tokenize.conversation_token_counter(tokenizer)``;
- run a job: ``config.TrainConfig(...)`` then ``recipe.run_training(config)`` in-process, or
  ``runners.local.recipe_entrypoint(config_path)`` through a ``JobRunner``;
- follow it: ``progress.follow(progress_file)`` / ``progress.read_events``;
- compare models on a split: ``scoring.load_model``, ``scoring.evaluate_classifier``,
  ``scoring.evaluate_chat``; metrics in ``evaluation``.

No work happens at import time.
"""
