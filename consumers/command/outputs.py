"""A command job's artifacts: the files its program wrote under ``$AIQ_OUTPUT_DIR``.

``AIQ_OUTPUT_DIR`` is ``<ARTIFACT_ROOT>/<job_id>/output`` (emptied before each attempt). When
the program succeeds, each regular file there is uploaded to the artifact store as
``<job_id>/output/<path>`` (atomic per file, consumers/artifact_store.py), then
``<job_id>/metadata.json`` lists them, last. Symlinks and other non-regular files are skipped,
so are names the store cannot hold (letters, digits, ``.``, ``_``, ``-`` per path segment) and
files past ``COMMAND_MAX_OUTPUT_FILES``: each skip is a line in the job's log.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

from consumers.artifact_store import ArtifactStore

OUTPUT = "output"
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")  # as the store's


def fresh_output_dir(store: ArtifactStore, job_id: str) -> Path:
    """The job's empty output directory (what an earlier attempt left here is removed)."""
    path = store.local_path(job_id, OUTPUT)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _files(root: Path) -> list[str]:
    """Paths (relative, ``/``-separated) of everything under ``root``, without following links."""
    out = []
    for directory, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            out.append((Path(directory) / name).relative_to(root).as_posix())
    return sorted(out)


def upload(store: ArtifactStore, job_id: str, max_files: int, note: Callable[[str], None]
           ) -> list[str]:
    """Upload the job's output files; their paths relative to the output directory."""
    root = store.local_path(job_id, OUTPUT)
    kept: list[str] = []
    for rel in _files(root):
        if not stat.S_ISREG((root / rel).lstat().st_mode):
            note(f"output {rel!r} skipped: not a regular file")
        elif not all(_SEGMENT.fullmatch(p) for p in rel.split("/")):
            note(f"output {rel!r} skipped: use letters, digits, '.', '_' and '-' in names")
        elif len(kept) >= max_files:
            note(f"output {rel!r} skipped: more than {max_files} files "
                 "(COMMAND_MAX_OUTPUT_FILES)")
        else:
            store.push(job_id, f"{OUTPUT}/{rel}")
            kept.append(rel)
    if kept:
        store.publish(job_id, {"job_id": job_id, "kind": "command", "created_at": time.time(),
                               "files": [f"{OUTPUT}/{rel}" for rel in kept]})
    return kept
