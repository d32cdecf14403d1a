"""Jobs: the grid of a study as a dependency graph, run locally or on SLURM.

:mod:`harness.jobs.plan` holds the API every backend uses (``Job``, ``plan_study``,
``select_jobs``, ``execute``, ``job_status``); :mod:`harness.jobs.files` where a job's lock and
log are and what a run's files say; :mod:`harness.jobs.locks` the OS lock that lets one process
run a job at a time. :mod:`harness.jobs.local` runs a plan on this machine, one process group per
job (:mod:`harness.jobs.worker`); :mod:`harness.jobs.slurm` submits it to SLURM. Which runs a
study expects, and what identifies a run, is declared below both the jobs and the reports, in
:mod:`harness.studies.runs`.
"""
