"""Processes (harness.processes, the local launcher): CPUs this process may use, and no orphans.

Each job leads its own process group; when the job ends its leftovers are killed, Ctrl-C of the
launcher stops every job's whole group, and a launcher killed outright takes its jobs with it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.processes import spawn, stop_group, sweep_group, usable_cpus


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers; read its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_for(path: Path, n: int, timeout: float = 30) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file():
            pids = [int(x) for x in path.read_text().split()]
            if len(pids) >= n:
                return pids
        time.sleep(0.05)
    raise AssertionError(f"{path} did not list {n} pids")


def gone(pids, timeout: float = 15) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


# A job that starts a grandchild (like an augmentation worker) and records both pids.
JOB = textwrap.dedent("""
    import subprocess, sys, time, os
    child = subprocess.Popen(["sleep", "300"])
    open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
    if sys.argv[2] == "exit":
        sys.exit(0)          # leaves its grandchild behind
    time.sleep(300)
""")


def test_usable_cpus_honours_slurm_and_affinity(monkeypatch):
    n = usable_cpus()
    assert 1 <= n <= (os.cpu_count() or 1)
    assert n <= len(os.sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert usable_cpus() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "not a number")
    assert usable_cpus() == n


def test_stop_group_ends_the_job_and_what_it_started(tmp_path):
    pids_file = tmp_path / "pids"
    proc = spawn([sys.executable, "-c", JOB, str(pids_file), "stay"])
    pids = wait_for(pids_file, 2)
    assert os.getpgid(proc.pid) == proc.pid != os.getpgrp()     # its own group
    stop_group(proc, grace_s=5)
    assert gone(pids)


def test_leftovers_of_an_ended_job_are_swept(tmp_path):
    pids_file = tmp_path / "pids"
    proc = spawn([sys.executable, "-c", JOB, str(pids_file), "exit"])
    pids = wait_for(pids_file, 2)
    proc.wait()
    assert alive(pids[1])                 # the orphan is still there ...
    sweep_group(proc.pid)
    assert gone(pids[1:])                 # ... until the group is swept


def test_a_killed_launcher_takes_its_jobs_with_it(tmp_path):
    pids_file = tmp_path / "pids"
    launcher = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from harness.processes import spawn
        spawn([sys.executable, "-c", {JOB!r}, {str(pids_file)!r}, "stay"])
        time.sleep(300)
    """)])
    pids = wait_for(pids_file, 2)
    launcher.kill()                       # SIGKILL: no cleanup code of the launcher runs
    launcher.wait()
    assert gone(pids[:1])                 # the job got SIGTERM from the kernel


def test_ctrl_c_of_the_local_launcher_stops_every_job_group(tmp_path):
    """run_jobs with stand-in jobs that each start a grandchild; SIGINT to the launcher."""
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import harness.jobs.local as local
        from harness.jobs.plan import plan_study
        from harness.processes import spawn

        jobs = plan_study("ablations", "smoke", Path({str(tmp_path / 'work')!r}))
        local.job_status = lambda job: "pending"
        n = [0]
        def launch(job, env):
            n[0] += 1
            out = open(Path({str(tmp_path)!r}) / f"log{{n[0]}}", "w")
            return spawn([sys.executable, "-c", {JOB!r}, str(Path({str(pids_dir)!r}) / str(n[0])),
                          "stay"], stdout=out), out
        local._launch = launch
        local.run_jobs(jobs, parallel=2, progress=False, poll=0.05)
    """)
    launcher = subprocess.Popen([sys.executable, "-c", script])
    pids = wait_for(pids_dir / "1", 2) + wait_for(pids_dir / "2", 2)
    assert all(alive(p) for p in pids)
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=60) != 0
    assert gone(pids), [p for p in pids if alive(p)]


@pytest.mark.parametrize("wait", [False, True])
def test_a_job_lock_is_held_by_one_process_and_freed_by_its_death(tmp_path, wait):
    from harness.jobs.locks import JobLock, is_locked

    path = tmp_path / "locks" / "train_x.lock"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys; from harness.jobs.locks import JobLock; "
                               f"JobLock({str(path)!r}).acquire(); print('held', flush=True); "
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    assert is_locked(path)
    mine = JobLock(path)
    if not wait:
        assert mine.acquire(wait=False) is False
        holder.kill()
        holder.wait()
        assert not is_locked(path) and mine.acquire(wait=False)
    else:
        told = []
        killer = subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {holder.pid}"])
        assert mine.acquire(wait=True, poll_s=0.1, on_wait=lambda: told.append(1))
        killer.wait()
        holder.wait()
        assert told == [1]
    assert not is_locked(path)             # held by this process: not held by another
    mine.release()


def test_a_fork_pool_of_a_job_process_terminates(tmp_path):
    """Forked children of a job get SIGTERM's default back, so ``Pool.terminate`` ends them
    (a worker that raised Terminated instead could go on ignoring SIGTERM and hang the job)."""
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, signal, time
        from harness.processes import raise_on_sigterm

        def handler_in_child(_):
            return signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        if __name__ == "__main__":
            raise_on_sigterm()
            ctx = multiprocessing.get_context("fork")
            t0 = time.monotonic()
            for _ in range(5):
                with ctx.Pool(3) as pool:
                    assert all(pool.map(handler_in_child, range(3)))
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
            print("ok", round(time.monotonic() - t0, 1))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-2000:]
