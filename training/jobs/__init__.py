"""Fine-tuning jobs: lifecycle, store operations, the background job manager, publishing.

The HTTP routes (``services/api/jobs.py``) and the CLI (``services/cli/jobs.py``) are thin layers
over :mod:`training.jobs.store` (create, list, cancel) and :class:`training.jobs.manager.JobManager`
(runs queued jobs through a :class:`training.runners.base.JobRunner`). A finished run is
published by :mod:`training.jobs.publish`: gate against the champion (:mod:`training.gate`),
register PENDING, parity check on the engine (:mod:`training.jobs.parity`), READY or FAILED.
"""
