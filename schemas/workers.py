"""Worker registry and queue inspection views."""

from __future__ import annotations

from pydantic import BaseModel, Field


class GpuInfo(BaseModel):
    index: int
    name: str
    total_mb: int
    free_mb: int
    reserved_mb: int = Field(default=0, description="promised by GPU admission to running jobs "
                             "whose memory NVML does not show yet")


class WorkerInfo(BaseModel):
    worker_id: str
    worker_type: str
    framework: str
    framework_version: str
    hostname: str
    pid: int
    started_at: int
    heartbeat_at: int
    max_concurrent_jobs: int
    running_jobs: list[str] = Field(default_factory=list)
    gpus: list[GpuInfo] = Field(default_factory=list)
    state: str = "running"
    command_jobs: bool = Field(default=False, description="it reads its type's command stream "
                               "(COMMAND_JOBS=true): it runs command jobs")


class StreamInfo(BaseModel):
    stream: str
    worker_type: str
    kind: str
    length: int
    pending: int
    lag: int | None = Field(description="entries not yet delivered (length - pending: exact, "
                            "since acked entries are deleted; works on Redis 6.2 too)")
    oldest_pending_age_ms: int | None
    consumers: int
    dead_letters: int
    delayed: int = 0
    high_priority: int = Field(default=0, description="of `length`, the jobs in the "
                               "high-priority lane (`<stream>:high`)")
