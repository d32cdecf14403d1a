"""Cluster profiles: the site settings of the SLURM backend, read from ``clusters/<name>.toml``.

A profile says where and with what each job runs (partition, account, QOS, CPUs, memory, GPUs,
time limit, setup lines such as ``module load``), so that no site setting lives in code. Layout::

    name = "mysite"                 # optional, defaults to the file name
    slurm_conf = "/etc/slurm.conf"  # optional: SLURM_CONF for the client commands, used only when
                                    #   SLURM_CONF is unset and the file exists; ${VAR:-default} expands
    python = "/shared/venv/bin/python"   # optional: interpreter on the nodes (default: this one)
    signal_delay_s = 300            # USR2 this long before the time limit: checkpoint and requeue
    max_requeues = 10               # time-limit requeues allowed per job (preemptions are free)
    array_parallelism = 32          # most tasks of one array running at once
    setup = ["module load cuda/12.4"]    # shell lines run in each job before the work
    [env]                           # exported in each job
    nnUNet_n_proc_DA = "8"
    [defaults]                      # resources of every job ...
    partition = "gpu"; account = "proj"; qos = "normal"; cpus = 8; mem = "64G"; gpus = 1
    time_min = 1440; constraint = "a100"; gres = "..."; exclude = "node01"
    sbatch = { "mail-type" = "FAIL" }    # any other sbatch flag
    [kind.prepare]                  # ... then per job kind (prepare | train | report) ...
    gpus = 0
    [[rule]]                        # ... then every matching rule, in file order
    models = ["mednext-l-*"]        # fnmatch patterns on the model, dataset (or task) name
    datasets = ["amos22"]           # and kinds; a missing key matches everything
    time_min = 2880

This is the project's own layer over submitit's executor parameters: the paper ran on its authors'
cluster and publishes no such file.

Every value that ends up in an ``#SBATCH`` line or in the job script (resources, ``sbatch``
flags and values, ``env``, ``setup``, ``python``, the profile's name) is refused if it holds a
newline, carriage return or NUL (:func:`check_script_value`): submitit writes them into the
script verbatim, so ``partition = "gpu\n#SBATCH --account=other"`` would add a directive and
a value with a newline in ``setup`` or ``env`` a command. The check is public so that the job
names ``harness.jobs.slurm`` builds from job keys can go through it too.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path

from harness.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
KINDS = ("prepare", "train", "report")
RESOURCE_KEYS = ("partition", "account", "qos", "cpus", "mem", "gpus", "time_min",
                 "constraint", "gres", "exclude", "sbatch")
TOP_KEYS = ("name", "slurm_conf", "python", "signal_delay_s", "max_requeues",
            "array_parallelism", "setup", "env", "defaults", "kind", "rule")
RULE_MATCH_KEYS = ("models", "datasets", "kinds")
_MEM = re.compile(r"[1-9][0-9]*[KMGT]?")                  # fullmatch: "$" lets "16G\n" pass
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_LINE_BREAKERS = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL character"}


def check_script_value(value, key: str, where: str | None = None) -> None:
    """Refuse a value bound for an ``#SBATCH`` line or the job script if it holds a newline,
    carriage return or NUL; ``ValueError`` names ``where`` (the profile file), ``key`` and the
    value. Non-strings are checked as ``str(value)``, as they are written."""
    text = value if isinstance(value, str) else str(value)
    bad = next((name for ch, name in _LINE_BREAKERS.items() if ch in text), None)
    if bad:
        prefix = f"{where}: " if where else ""
        raise UserError(f"{prefix}{key} = {value!r} contains {bad}: values of a cluster profile "
                         f"are written into #SBATCH lines and the job script, where it would "
                         f"end the line and start another")


@dataclass(frozen=True)
class Resources:
    """What one SLURM job asks for. ``mem`` is SLURM's syntax (``"16G"``); ``sbatch`` holds any
    other sbatch flag (name without dashes -> value)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cpus: int = 1
    mem: str | None = None
    gpus: int = 0
    time_min: int = 60
    constraint: str | None = None
    gres: str | None = None
    exclude: str | None = None
    sbatch: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.cpus, int) or isinstance(self.cpus, bool) or self.cpus < 1:
            raise UserError(f"cpus must be an integer >= 1, got {self.cpus!r}")
        if not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 0:
            raise UserError(f"gpus must be an integer >= 0, got {self.gpus!r}")
        if not isinstance(self.time_min, int) or isinstance(self.time_min, bool) or self.time_min < 1:
            raise UserError(f"time_min must be an integer >= 1 (minutes), got {self.time_min!r}")
        if self.mem is not None and not (isinstance(self.mem, str) and _MEM.fullmatch(self.mem)):
            raise UserError(f"mem must look like '16G' or '500M', got {self.mem!r}")
        for name in ("partition", "account", "qos", "constraint", "gres", "exclude"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise UserError(f"{name} must be a non-empty string, got {value!r}")
            if value is not None:
                check_script_value(value, name)
        for flag, value in self.sbatch:
            check_script_value(flag, "sbatch flag")
            check_script_value(value, f"sbatch.{flag}")

    def signature(self) -> tuple:
        """Jobs with equal signatures can share one job array."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def sbatch_parameters(self) -> dict:
        """submitit ``SlurmExecutor.update_parameters`` keywords for these resources."""
        params: dict = {"time": self.time_min, "cpus_per_task": self.cpus}
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        for name in ("partition", "account", "qos", "constraint", "gres", "exclude", "mem"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        return params


@dataclass(frozen=True)
class ClusterProfile:
    """A site: defaults, per-kind resources, rules and the job environment. See the module doc."""

    name: str
    path: Path | None = None
    slurm_conf: str | None = None
    python: str | None = None
    signal_delay_s: int = 120
    max_requeues: int = 3
    array_parallelism: int = 64
    setup: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    defaults: dict = field(default_factory=dict, hash=False)
    kinds: dict = field(default_factory=dict, hash=False)
    rules: tuple = ()

    def __post_init__(self) -> None:
        for name in ("signal_delay_s", "array_parallelism"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.max_requeues, int) or self.max_requeues < 0:
            raise UserError(f"max_requeues must be an integer >= 0, got {self.max_requeues!r}")
        for key, value in self.env:
            if not _ENV_NAME.fullmatch(key):
                raise UserError(f"env name {key!r} is not a valid shell variable name")
            check_script_value(value, f"env.{key}")
        for i, line in enumerate(self.setup):
            check_script_value(line, f"setup[{i}]")
        for name in ("name", "python", "slurm_conf"):
            if getattr(self, name) is not None:
                check_script_value(getattr(self, name), name)
        self.resources_for("train")     # the defaults alone must form valid resources

    def resources_for(self, kind: str, model: str | None = None,
                      dataset: str | None = None, task: str | None = None) -> Resources:
        """Defaults, then ``[kind.<kind>]``, then each matching ``[[rule]]`` in file order."""
        if kind not in KINDS:
            raise UserError(f"job kind {kind!r} is not one of {KINDS}")
        merged = dict(self.defaults)
        merged.update(self.kinds.get(kind, {}))
        for rule in self.rules:
            if _rule_matches(rule, kind, model, dataset, task):
                merged.update({k: v for k, v in rule.items() if k not in RULE_MATCH_KEYS})
        sbatch = tuple(sorted((str(k), str(v)) for k, v in merged.pop("sbatch", {}).items()))
        res = Resources(**merged, sbatch=sbatch)
        if self.signal_delay_s >= res.time_min * 60:
            raise UserError(f"cluster profile {self.name!r}: signal_delay_s={self.signal_delay_s} "
                             f"is not shorter than the time limit of {kind} jobs "
                             f"({res.time_min} min): the job would be signalled at once")
        return res

    def client_env(self) -> dict[str, str]:
        """Environment for sbatch/squeue/sacct: SLURM_CONF from the profile if none is set."""
        env = dict(os.environ)
        if self.slurm_conf and "SLURM_CONF" not in env and Path(self.slurm_conf).is_file():
            env["SLURM_CONF"] = self.slurm_conf
        return env

    def setup_lines(self) -> list[str]:
        """Shell lines for the job script: the profile's exports, then its setup lines."""
        return [f"export {k}={shlex.quote(v)}" for k, v in self.env] + list(self.setup)


def _rule_matches(rule: dict, kind: str, model: str | None, dataset: str | None,
                  task: str | None) -> bool:
    def hit(patterns, *names) -> bool:
        return any(n is not None and fnmatch.fnmatchcase(n, p) for p in patterns for n in names)

    if "kinds" in rule and not hit(rule["kinds"], kind):
        return False
    if "models" in rule and not hit(rule["models"], model):
        return False
    if "datasets" in rule and not hit(rule["datasets"], dataset, task):
        return False
    return True


def expand_vars(text: str) -> str:
    """``${NAME}`` and ``${NAME:-default}`` from the environment (unset and no default: error)."""
    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise UserError(f"{text!r}: environment variable {m.group(1)} is not set")
    return _VAR.sub(sub, text)


def _check_keys(table: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(allowed)}")


def _resource_table(table, where: str) -> dict:
    if not isinstance(table, dict):
        raise UserError(f"{where}: expected a table, got {type(table).__name__}")
    _check_keys(table, RESOURCE_KEYS, where)
    if "sbatch" in table and not isinstance(table["sbatch"], dict):
        raise UserError(f"{where}: sbatch must be a table of flag = value")
    plain = {k: v for k, v in table.items() if k != "sbatch"} | {"time_min": table.get("time_min", 60)}
    try:
        Resources(**plain, sbatch=tuple((str(k), str(v)) for k, v in table.get("sbatch", {}).items()))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None
    return dict(table)


def parse_profile(data: dict, name: str, path: Path | None = None) -> ClusterProfile:
    """Build a profile from parsed TOML; every error names the file and the key."""
    where = str(path) if path else name
    _check_keys(data, TOP_KEYS, where)
    kinds = data.get("kind", {})
    if not isinstance(kinds, dict):
        raise UserError(f"{where}: [kind] must hold tables [kind.prepare], [kind.train], [kind.report]")
    _check_keys(kinds, KINDS, f"{where} [kind]")
    rules = data.get("rule", [])
    if not isinstance(rules, list):
        raise UserError(f"{where}: rules are written [[rule]]")
    parsed_rules = []
    for i, rule in enumerate(rules):
        at = f"{where} [[rule]] #{i + 1}"
        if not isinstance(rule, dict):
            raise UserError(f"{at}: expected a table")
        match = {k: rule[k] for k in RULE_MATCH_KEYS if k in rule}
        for k, v in match.items():
            if not (isinstance(v, list) and v and all(isinstance(p, str) for p in v)):
                raise UserError(f"{at}: {k} must be a non-empty list of patterns, got {v!r}")
        parsed_rules.append(match | _resource_table({k: v for k, v in rule.items()
                                                     if k not in RULE_MATCH_KEYS}, at))
    setup = data.get("setup", [])
    if not (isinstance(setup, list) and all(isinstance(s, str) for s in setup)):
        raise UserError(f"{where}: setup must be a list of shell lines")
    env = data.get("env", {})
    if not isinstance(env, dict):
        raise UserError(f"{where}: [env] must be a table of NAME = \"value\"")
    slurm_conf = data.get("slurm_conf")
    try:
        return ClusterProfile(
            name=data.get("name", name), path=path,
            slurm_conf=expand_vars(slurm_conf) if slurm_conf else None,
            python=data.get("python"),
            signal_delay_s=data.get("signal_delay_s", 120),
            max_requeues=data.get("max_requeues", 3),
            array_parallelism=data.get("array_parallelism", 64),
            setup=tuple(setup), env=tuple((str(k), str(v)) for k, v in env.items()),
            defaults=_resource_table(data.get("defaults", {}), f"{where} [defaults]"),
            kinds={k: _resource_table(v, f"{where} [kind.{k}]") for k, v in kinds.items()},
            rules=tuple(parsed_rules))
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        raise UserError(f"{where}: {exc}") from None


def cluster_dirs() -> list[Path]:
    """Where profile names are looked up: $MEDNEXT_BENCH_CLUSTERS, ./clusters, the repository's."""
    dirs = []
    if os.environ.get("MEDNEXT_BENCH_CLUSTERS"):
        dirs.append(Path(os.environ["MEDNEXT_BENCH_CLUSTERS"]))
    dirs += [Path.cwd() / "clusters", REPO_ROOT / "clusters"]
    return dirs


def resolve_profile_path(cluster: str | os.PathLike | None) -> Path:
    """A path to a ``.toml`` file, or a name looked up in :func:`cluster_dirs`.

    ``None`` means ``$MEDNEXT_BENCH_CLUSTER`` or, failing that, ``local``.
    """
    cluster = cluster or os.environ.get("MEDNEXT_BENCH_CLUSTER") or "local"
    candidate = Path(cluster)
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.is_file():
            raise UserError(f"cluster profile {str(candidate)!r} does not exist")
        return candidate
    for d in cluster_dirs():
        if (d / f"{cluster}.toml").is_file():
            return d / f"{cluster}.toml"
    known = sorted({p.stem for d in cluster_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise UserError(f"unknown cluster profile {str(cluster)!r}; known: {', '.join(known) or 'none'} "
                     f"(or pass a path to a .toml file)")


def load_cluster(cluster: str | os.PathLike | None = None) -> ClusterProfile:
    """Load a cluster profile by name or path (see :func:`resolve_profile_path`)."""
    if isinstance(cluster, ClusterProfile):
        return cluster
    import tomllib     # Python 3.11+

    path = resolve_profile_path(cluster)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    return parse_profile(data, path.stem, path)


