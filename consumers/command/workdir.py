"""Where a command job runs: its ``working_dir``.

* a path: a directory under the worker's ``DATA_ROOT`` (relative to it, or absolute inside it),
  resolved with the data root's own checks (consumers/paths.py: symlinks and ``..`` followed
  first, nothing outside the root); the job runs in it, in place;
* ``artifact://<id>/<path>.tar.gz|.tgz|.zip``: an archive in the artifact store, fetched
  (consumers/artifact_store.py) and unpacked into a directory of the job's own under
  ``COMMAND_WORK_ROOT``, removed when the job ends. Unpacking refuses what would land outside
  that directory (absolute names, ``..``, links pointing out, device files: tarfile's ``data``
  filter; the same checks for zip members) and archives over ``COMMAND_MAX_ARCHIVE_BYTES``
  unpacked or ``MAX_MEMBERS`` files;
* none: an empty directory of the job's own, removed when the job ends.
"""

from __future__ import annotations

import contextlib
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from secrets import token_hex

from consumers.artifact_store import ArtifactStore
from consumers.errors import FailJob, RetryLater
from consumers.paths import resolve_under_root

ARTIFACT_SCHEME = "artifact://"  # as schemas/commands.py
MAX_MEMBERS = 100_000


@contextlib.contextmanager
def working_dir(given: str | None, data_root: Path, work_root: Path, store: ArtifactStore,
                job_id: str, max_bytes: int) -> Iterator[Path]:
    """The job's working directory for the block (its own ones are removed after)."""
    if given and not given.startswith(ARTIFACT_SCHEME):
        yield _under_data_root(data_root, given)
        return
    own = work_root / f"{job_id}-{token_hex(4)}"
    own.mkdir(parents=True)
    try:
        if given:
            unpack(_fetch(store, given), own, max_bytes, given)
        yield own
    finally:
        shutil.rmtree(own, ignore_errors=True)


def _under_data_root(data_root: Path, given: str) -> Path:
    resolved = resolve_under_root(data_root, given, "working_dir")
    if not resolved.is_dir():
        what = "is not a directory" if resolved.exists() else "was not found"
        raise FailJob(f"working_dir {given!r} {what} under the data root",
                      code="working_dir_not_found")
    return resolved


def _fetch(store: ArtifactStore, uri: str) -> Path:
    model_id, _, name = uri.removeprefix(ARTIFACT_SCHEME).partition("/")
    try:
        found = store.pull(model_id, name)
    except FailJob:
        raise FailJob(f"working_dir {uri!r} is not a usable artifact name",
                      code="archive_not_found") from None
    except OSError as exc:  # the store did not answer: worth another attempt
        raise RetryLater(f"fetching working_dir {uri!r} failed: {exc}") from exc
    if not found:
        raise FailJob(f"working_dir {uri!r} was not found in the artifact store",
                      code="archive_not_found")
    return store.local_path(model_id, name)


def unpack(archive: Path, into: Path, max_bytes: int, shown: str) -> None:
    """Unpack a .tar.gz/.tgz/.zip archive into ``into``; ``archive_invalid`` for anything that
    would escape it, or is too large."""
    try:
        if shown.endswith(".zip"):
            _unzip(archive, into, max_bytes, shown)
        else:
            _untar(archive, into, max_bytes, shown)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise FailJob(f"working_dir {shown!r}: the archive cannot be unpacked: {exc}",
                      code="archive_invalid") from exc


def _too_big(total: int, count: int, max_bytes: int, shown: str) -> None:
    if count > MAX_MEMBERS or total > max_bytes:
        raise FailJob(f"working_dir {shown!r}: the archive holds {count} files, {total} bytes "
                      f"unpacked; at most {MAX_MEMBERS} files and {max_bytes} bytes "
                      "(COMMAND_MAX_ARCHIVE_BYTES)", code="archive_invalid")


def _untar(archive: Path, into: Path, max_bytes: int, shown: str) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        _too_big(sum(m.size for m in members), len(members), max_bytes, shown)
        for member in members:
            try:
                tarfile.data_filter(member, str(into))
            except tarfile.FilterError as exc:
                raise FailJob(f"working_dir {shown!r}: member {member.name!r} was refused "
                              f"({exc})", code="archive_invalid") from None
        tar.extractall(into, filter="data")


def _unzip(archive: Path, into: Path, max_bytes: int, shown: str) -> None:
    base = into.resolve()
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        _too_big(sum(i.file_size for i in infos), len(infos), max_bytes, shown)
        for info in infos:
            name = PurePosixPath(info.filename.replace("\\", "/"))
            target = (base / name).resolve()
            if name.is_absolute() or ".." in name.parts or not target.is_relative_to(base):
                raise FailJob(f"working_dir {shown!r}: member {info.filename!r} would land "
                              "outside the job's directory", code="archive_invalid")
        zf.extractall(into)
