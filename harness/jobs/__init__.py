"""Jobs: the grid of a study as a dependency graph, run locally or on SLURM.

:mod:`harness.jobs.plan` holds the API every backend uses (``Job``, ``plan_study``,
``expected_runs``, ``execute``, ``job_status``); :mod:`harness.jobs.local` runs a plan on this
machine, one subprocess per job (:mod:`harness.jobs.worker`).
"""
