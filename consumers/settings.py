"""Worker settings: read once at the entry point (env vars as in the seed) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from consumers.affinity import parse_cpus
from schemas.catalogue import CATALOGUE, STATE
from schemas.status import Priority
from streams.consumer import DEFAULT_PRIORITY_WEIGHT
from streams.settings import RedisSettings


class WorkerSettings(RedisSettings):

    worker_type: str = Field(description="WORKER_TYPE, e.g. sklearn, pytorch-2.1-gpu")
    model_framework: str = Field(description="MODEL_FRAMEWORK, must match the worker type")
    use_gpu: bool = False
    max_concurrent_jobs: int = Field(default=2, ge=1, le=1024)

    lease_timeout_s: float = Field(default=30.0, gt=0, description="a dead worker's jobs are "
                                   "reclaimed after this long")
    reclaim_interval_s: float | None = Field(default=None, gt=0)
    max_deliveries: int = Field(default=5, ge=1)
    max_retries: int = Field(default=3, ge=0, description="MAX_RETRIES: retries of retryable "
                             "errors; the default and the maximum of a job's own max_retries")
    retry_backoff_s: float = Field(default=1.0, gt=0)
    retry_backoff_max_s: float = Field(default=300.0, gt=0)
    job_timeout_s: float = Field(default=24 * 3600, gt=0, description="JOB_TIMEOUT_S: how long "
                                 "a job that sets no timeout_s may run (each attempt); past it "
                                 "the job fails with code timeout")
    max_job_timeout_s: float = Field(default=7 * 24 * 3600, gt=0, description="MAX_JOB_TIMEOUT_S:"
                                     " a job's timeout_s above this is cut to it")
    max_priority: Priority = Field(default=Priority.HIGH, description="MAX_PRIORITY: the "
                                   "highest priority a job of this type may have; normal: "
                                   "every job waits in the normal lane")
    priority_weight: int = Field(default=DEFAULT_PRIORITY_WEIGHT, ge=1, le=1000,
                                 description="PRIORITY_WEIGHT: while both lanes have a backlog, "
                                 "this many high-priority jobs are started per normal one")
    read_ahead_s: float = Field(default=0.05, ge=0, le=60, description="READ_AHEAD_S: short "
                                "jobs are read ahead: up to MAX_CONCURRENT_JOBS more are started "
                                "and wait for a thread, as many as the slots free within this "
                                "long at the recent jobs' run time (0: off)")
    read_ahead_stale_s: float = Field(default=2.0, gt=0, description="READ_AHEAD_STALE_S: a "
                                      "job read ahead still waiting for a thread after this "
                                      "long is handed back for another worker")
    cancel_check_s: float = Field(default=1.0, gt=0, description="CANCEL_CHECK_S: how often "
                                  "running jobs' cancel requests are looked up (a job that "
                                  "reports progress learns of one at its next report anyway)")
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    heartbeat_interval_s: float = Field(default=2.0, gt=0, description="HEARTBEAT_INTERVAL_S: "
                                        "the registry hash expires after three intervals "
                                        "without one; then the worker counts as dead")
    orphan_check_s: float = Field(default=1.0, ge=0, description="ORPHAN_CHECK_S: how often a "
                                  "worker with free slots claims the jobs of workers whose "
                                  "heartbeat expired (before their lease ends); 0 = off, "
                                  "reclaim after LEASE_TIMEOUT_S only")
    progress_interval_s: float = Field(default=0.25, ge=0, description="progress events are "
                                       "coalesced to at most one per interval per job")
    block_ms: int = Field(default=5000, ge=1)
    worker_cpus: str | None = Field(default=None, description="WORKER_CPUS: the CPUs this "
                                    "worker and its job threads run on, e.g. 0 or 0-3 (taskset "
                                    "list); default: all the process may use. One CPU runs many "
                                    "short I/O-bound jobs faster (consumers/affinity.py)")
    job_thread_policy: Literal["batch", "normal"] = Field(
        default="batch", description="JOB_THREAD_POLICY: the Linux scheduling policy of the "
        "job threads: batch (SCHED_BATCH: a job thread that wakes does not preempt the thread "
        "on its CPU, which holds the interpreter lock) or normal (SCHED_OTHER). The event loop "
        "stays normal (consumers/threads.py)")

    # GPU admission (consumers/admission.py): on for every worker that has GPU devices.
    gpu_script: Path | None = Field(
        default=None, validation_alias=AliasChoices("aiq_gpu_script", "gpu_script"),
        description="AIQ_GPU_SCRIPT: a JSON file of scripted GPU devices used instead of NVML "
        "(tests; see consumers/gpu.py). Any worker type with it runs GPU admission")
    gpu_headroom_mb: int = Field(default=256, ge=0, description="MiB per device admission "
                                 "never gives out (CUDA context of a new job, fragmentation)")
    gpu_estimate_margin: float = Field(default=0.1, ge=0, le=10, description="an estimate from "
                                       "an observed peak is the peak times 1 + this")
    admission_recheck_s: float = Field(default=1.0, gt=0, description="how often a job held "
                                       "for GPU memory is checked again (also at every job end)")
    waiting_event_min_change_mb: int = Field(default=256, ge=0, description="a waiting job's "
                                             "event is rewritten when free memory moved this much")
    oom_max_halvings: int = Field(default=3, ge=0, le=16, description="CUDA OOM: retry with "
                                  "batch_size halved at most this many times")

    metrics_port: int = Field(default=0, ge=0, le=65535, description="METRICS_PORT: serve "
                              "this worker's Prometheus metrics on this port (0: off)")
    metrics_host: str = Field(default="0.0.0.0", description="METRICS_HOST: the address the "
                              "metrics port binds (all interfaces: it is on only when asked for, "
                              "to be scraped from elsewhere)")

    data_root: Path = Path("data")
    artifact_root: Path = Field(default=Path("artifacts"), description="ARTIFACT_ROOT: this "
                                "worker's local artifact directory; the store itself unless "
                                "ARTIFACT_URI names another (then its cache of what it reads)")
    artifact_uri: str | None = Field(default=None, description="ARTIFACT_URI: the artifact "
                                     "store, any fsspec URL (file:///path, s3://bucket/prefix "
                                     "with the s3 extra); default: ARTIFACT_ROOT itself")
    artifact_s3_endpoint_url: str | None = Field(default=None, description="ARTIFACT_S3_"
                                                 "ENDPOINT_URL: an S3-compatible endpoint "
                                                 "(MinIO, SeaweedFS) instead of AWS")

    # Command jobs (POST /jobs/command; consumers/command): a team's own program, run as this
    # worker's user. Off unless COMMAND_JOBS is true: a worker without it never reads, claims
    # or reclaims an entry of its type's command stream.
    command_jobs: bool = Field(default=False, description="COMMAND_JOBS: read this type's "
                               "command stream and run command jobs (arbitrary code, as this "
                               "worker's user: docs/SECURITY.md)")
    command_env_root: Path = Field(default=Path("command-envs"), description="COMMAND_ENV_ROOT: "
                                   "where jobs' uv environments are built and cached by lock or "
                                   "requirements hash (share it between workers of one host)")
    command_work_root: Path = Field(default=Path("command-work"), description="COMMAND_WORK_"
                                    "ROOT: jobs' own working directories (unpacked archives, "
                                    "empty ones), removed when each job ends")
    command_kill_grace_s: float = Field(default=10.0, ge=0, le=3600, description="COMMAND_KILL_"
                                        "GRACE_S: a cancelled, timed-out or handed-back "
                                        "command gets SIGTERM, then SIGKILL this much later")
    command_uv: str = Field(default="uv", min_length=1, description="COMMAND_UV: the uv "
                            "executable that builds jobs' environments")
    command_python: str | None = Field(default=None, description="COMMAND_PYTHON: the Python "
                                       "(a path or version) of jobs' environments; default: "
                                       "this worker's for requirements, uv's choice for a lock")
    command_env_build_timeout_s: float = Field(default=1800.0, gt=0, description="COMMAND_ENV_"
                                               "BUILD_TIMEOUT_S: building one environment may "
                                               "take this long")
    command_env_passthrough: str = Field(
        default="PATH,HOME,USER,LOGNAME,SHELL,LANG,LANGUAGE,LC_*,TZ,TMPDIR,TERM,"
                "LD_LIBRARY_PATH,CUDA_*,NVIDIA_*,HF_*,UV_*,XDG_*,SSL_CERT_FILE,SSL_CERT_DIR,"
                "REQUESTS_CA_BUNDLE,HTTP_PROXY,HTTPS_PROXY,NO_PROXY,http_proxy,https_proxy,"
                "no_proxy",
        description="COMMAND_ENV_PASSTHROUGH: this worker's environment variables a command "
        "sees (comma-separated names; NAME_* for a prefix); the rest (REDIS_URL, keys, "
        "ARTIFACT_* credentials) stays out")
    command_max_archive_bytes: int = Field(default=2 * 1024**3, ge=1, description="COMMAND_MAX_"
                                           "ARCHIVE_BYTES: a working_dir archive larger than "
                                           "this unpacked is refused")
    command_max_output_files: int = Field(default=1000, ge=0, description="COMMAND_MAX_OUTPUT_"
                                          "FILES: files of $AIQ_OUTPUT_DIR uploaded at most")
    log_max_lines: int = Field(default=10_000, ge=100, le=10_000_000, description="LOG_MAX_"
                               "LINES: a command job's log stream keeps about this many lines "
                               "(MAXLEN ~)")
    log_line_max_bytes: int = Field(default=8192, ge=80, le=1024 * 1024, description="LOG_LINE_"
                                    "MAX_BYTES: a longer output line is cut here, with a marker")
    log_flush_s: float = Field(default=0.05, gt=0, le=10, description="LOG_FLUSH_S: a command's "
                               "output lines are written at least this often (in batches)")
    log_batch_lines: int = Field(default=500, ge=1, le=10_000, description="LOG_BATCH_LINES: "
                                 "lines per write at most")

    log_level: str = "INFO"
    log_json: bool = True

    burst: bool = Field(default=False, description="stop (exit 0) once the queue is empty: no "
                        "entry waiting, pending or delayed for a retry, and no job running")

    @field_validator("worker_cpus")
    @classmethod
    def _cpu_list(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_cpus(value)  # ValueError: named WORKER_CPUS by the caller
        return value.strip()

    @property
    def cpus(self) -> frozenset[int] | None:
        """WORKER_CPUS as a set (None: not set)."""
        return parse_cpus(self.worker_cpus) if self.worker_cpus else None

    @model_validator(mode="after")
    def _renewal_within_lease(self) -> WorkerSettings:
        # RECLAIM_INTERVAL_S is also the lease-renewal period (consumers/runtime.py _maintain):
        # at or past the lease, a live worker's jobs would be reclaimed while they run.
        if self.reclaim_interval_s is not None and \
                self.reclaim_interval_s > self.lease_timeout_s / 2:
            raise ValueError(
                f"RECLAIM_INTERVAL_S={self.reclaim_interval_s:g} is also how often leases are "
                f"renewed: it must be at most half of LEASE_TIMEOUT_S="
                f"{self.lease_timeout_s:g}, so one late renewal does not lose a live worker's "
                "jobs to another (leave it unset: a third of the lease)")
        return self

    @model_validator(mode="after")
    def _known_type(self) -> WorkerSettings:
        wt = CATALOGUE.get(self.worker_type)
        if wt is None:
            known = ", ".join(sorted(CATALOGUE))
            broken = "".join(f"; {problem}" for problem in STATE.problems)
            raise ValueError(f"unknown WORKER_TYPE {self.worker_type!r}; known: {known}; no "
                             "framework plugin installed in this environment declares it "
                             "(install the plugin package that provides it, e.g. uv pip "
                             f"install <plugin>){broken}")
        if self.model_framework != wt.framework:
            raise ValueError(
                f"MODEL_FRAMEWORK={self.model_framework!r} does not match WORKER_TYPE="
                f"{self.worker_type!r} (expects {wt.framework!r})"
            )
        return self

    @property
    def type_limits(self) -> dict[str, str]:
        """The maxima this worker publishes for its type (``ai:{type}:limits``), which the
        submit and retry scripts apply to every job."""
        return {"max_retries": str(self.max_retries),
                "max_timeout_s": repr(float(self.max_job_timeout_s)),
                "max_priority": self.max_priority.value}

    def timeout_of(self, requested: float | None) -> float:
        """The timeout a job runs under: its own, else JOB_TIMEOUT_S, at most MAX_JOB_TIMEOUT_S."""
        return min(requested or self.job_timeout_s, self.max_job_timeout_s)

    @property
    def lease_ms(self) -> int:
        return int(self.lease_timeout_s * 1000)

    @property
    def reclaim_every_s(self) -> float:
        return self.reclaim_interval_s or max(self.lease_timeout_s / 3, 0.05)
