"""Ownership of what the project writes: posepipe replaces only what it can show it wrote.

Every output path (params.yaml, ``pose --out`` / ``--json``) is the user's choice, and a typo or a reused name
can point it at something of theirs: a folder with their files and ``.git``, a file they keep. Replacing that
"atomically" still deletes it. So before writing, each output is checked here, and the command stops with a
:class:`~pose.io.PoseDataError` naming the path, before anything is changed, unless the path is

* free: nothing there (writing a new file or folder is always allowed), or an empty folder;
* a **folder output** of the project: it carries the marker file :data:`MARKER` (``.posepipe-output``, a small JSON
  ``{"written_by": "posepipe <what>", "folder": true}``). :func:`pose.io.atomic_path` writes it into the temporary
  folder before the rename, :func:`prepare_folder` into a folder written in place. Being inside the folder it
  travels with it: DVC caches and restores it, so a folder from ``dvc pull`` is the project's too. Everything in a
  marked folder (at any depth) is the project's;
* a **file output** the project wrote: its name is in the registry of its folder, the same :data:`MARKER` file
  holding ``{"files": [names]}`` (:func:`claim_file` before the work, :func:`record_file` after the write), or it
  is a file ``dvc checkout`` restored: an output of ``./dvc.lock`` with the md5 recorded there (DVC does not
  track the registry, so a fresh clone has the files without it).

Anything else (a non-empty folder without the marker, a file no registry lists, a folder where a file is written,
a file where a folder is written in place) is refused. To let the project replace a folder of yours, remove it yourself.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from pose.io import PoseDataError

MARKER = ".posepipe-output"
_NOTE = "written by posepipe, which may replace it; files it did not write make it stop instead (pose/outputs.py)"
_ADVICE = "nothing was changed; choose another path or remove it yourself"


# ---------------------------------------------------------------------------------------------------- folders
def _read_marker(folder: Path) -> dict:
    """The marker / registry JSON in ``folder``; ``{}`` when there is none or it is unreadable (fail safe)."""
    marker = folder / MARKER
    try:
        data = json.loads(marker.read_text()) if marker.is_file() else {}   # is_file: never block on a FIFO
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_marked(folder: Path) -> bool:
    return folder.is_dir() and _read_marker(folder).get("folder") is True


def _inside_marked_folder(path: Path) -> bool:
    return any(_is_marked(p) for p in Path(os.path.abspath(path)).parents)


def mark_folder(folder: str | os.PathLike, written_by: str = "posepipe") -> None:
    """Write the folder-output marker into ``folder`` (a new or temporary folder of the project).

    Deterministic content (no time, no PID), so that a seeded output stays byte-identical."""
    text = json.dumps({"written_by": written_by, "folder": True, "note": _NOTE}, indent=2) + "\n"
    (Path(folder) / MARKER).write_text(text)


def owns_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder the project wrote: it carries the marker, or lies in a folder that does."""
    path = Path(path)
    return path.is_dir() and (_is_marked(path) or _inside_marked_folder(path))


def check_folder(path: str | os.PathLike) -> None:
    """Raise :class:`PoseDataError` unless a folder output may replace ``path`` as a whole.

    Allowed: nothing there, an empty folder, a folder the project wrote (:func:`owns_folder`), a file or symlink it
    owns (:func:`owns_file`). A symlink is judged as the link itself, never by what it points to."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or path.is_file():
        if not owns_file(path):
            kind = "a symlink" if path.is_symlink() else "a file"
            raise PoseDataError(path, f"exists ({kind}) and was not written by posepipe (no {MARKER} marker lists "
                                      f"it); {_ADVICE}")
        return
    if path.is_dir():
        if owns_folder(path) or not any(path.iterdir()):
            return
        raise PoseDataError(path, f"exists and was not written by posepipe (a non-empty folder without a {MARKER} "
                                  f"marker); {_ADVICE}")
    raise PoseDataError(path, f"exists and is neither a folder nor a file posepipe wrote; {_ADVICE}")


def prepare_folder(path: str | os.PathLike, written_by: str = "posepipe") -> Path:
    """Make ``path`` a folder output written in place (``pose predict --out``, ``pose export --out``): create it, or
    take an empty or marked one, and mark it. Raises :class:`PoseDataError` for a folder of someone else's or a
    path that is not a folder (nothing is created then)."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise PoseDataError(path, f"exists and is not a folder, but a folder is written here; {_ADVICE}")
    if path.is_dir():
        if owns_folder(path):
            return path
        if any(path.iterdir()):
            raise PoseDataError(path, f"exists and was not written by posepipe (a non-empty folder without a "
                                      f"{MARKER} marker); {_ADVICE}")
    path.mkdir(parents=True, exist_ok=True)
    mark_folder(path, written_by)
    return path


# ---------------------------------------------------------------------------------------------------- files
def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _restored_by_dvc(path: Path) -> bool:
    """Whether ``path`` is a file output of ``./dvc.lock`` with the md5 recorded there (what ``dvc pull`` /
    ``dvc checkout`` restores into a fresh clone, where the registry, which DVC does not track, is missing)."""
    lock = Path("dvc.lock")
    if not lock.is_file() or not path.is_file():
        return False
    import yaml

    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return False
    here = os.path.abspath(path)
    for stage in stages.values():
        for out in (stage or {}).get("outs") or []:
            if isinstance(out, dict) and os.path.abspath(str(out.get("path"))) == here and out.get("md5"):
                return _md5(path) == out["md5"]
    return False


def owns_file(path: str | os.PathLike) -> bool:
    """Whether the project wrote the file (or symlink) ``path``: listed in its folder's registry, inside a marked
    folder, or restored by DVC as an output of ``./dvc.lock``."""
    path = Path(path)
    return (path.name in (_read_marker(path.parent).get("files") or []) or _inside_marked_folder(path)
            or _restored_by_dvc(path))


def claim_file(path: str | os.PathLike) -> None:
    """Raise :class:`PoseDataError` unless a file output may be written at ``path`` (call it before the work).

    Allowed: nothing there, or a file / symlink the project owns (:func:`owns_file`). A folder there is the wrong
    kind of output path and is refused like anything else of someone else's."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        raise PoseDataError(path, f"exists and is a folder, but a file is written here; {_ADVICE}")
    if not (path.is_symlink() or path.is_file()):
        raise PoseDataError(path, f"exists and is not a regular file; {_ADVICE}")
    if not owns_file(path):
        raise PoseDataError(path, f"exists and was not written by posepipe (no {MARKER} marker lists it); "
                                  f"{_ADVICE}")


@contextlib.contextmanager
def _locked(registry: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``registry``, the file that the path names *now* (it is replaced by rename, so a
    lock won on an old inode is dropped and taken again)."""
    while True:
        fd = os.open(registry, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.fstat(fd).st_ino == os.stat(registry).st_ino
            except FileNotFoundError:
                current = False
            if current:
                yield
                return
        finally:
            os.close(fd)


def record_file(path: str | os.PathLike) -> None:
    """Add ``path``'s name to the registry of its folder (call it after the write), so that a later run may replace
    it. Locked (concurrent writers in one folder lose no name) and atomic (temporary file, then ``os.replace``);
    names whose files are gone are dropped. Nothing to do inside a marked folder."""
    path = Path(path)
    if _inside_marked_folder(path):
        return
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    registry = folder / MARKER
    with _locked(registry):
        files = _read_marker(folder).get("files") or []
        names = sorted({n for n in files if isinstance(n, str) and os.path.lexists(folder / n)} | {path.name})
        doc: dict[str, Any] = {"written_by": "posepipe", "files": names, "note": _NOTE}
        fd, tmp = tempfile.mkstemp(prefix=f"{MARKER}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, registry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
