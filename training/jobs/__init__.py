"""Fine-tuning jobs: lifecycle, store operations, the background job manager, publishing.

The HTTP routes (``services/api/jobs.py``) and the CLI (``services/cli/jobs.py``) are thin layers
over :mod:`training.jobs.store` (create, list, cancel) and :class:`training.jobs.manager.JobManager`
(runs queued jobs through a :class:`training.runners.base.JobRunner`).
"""
