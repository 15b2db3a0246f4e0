"""Atomic writes, JSON helpers and image reading with errors that name the file.

Every artifact the pipeline writes goes through :func:`atomic_path` (write to a temporary sibling, then
``os.replace``), so a stage that fails never leaves a half-written output behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np


_UMASK = os.umask(0)
os.umask(_UMASK)


class PoseDataError(ValueError):
    """Bad input: the message names the file and the field that is wrong."""

    def __init__(self, path: str | os.PathLike, problem: str, field: str | None = None):
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}" + (f": field {field!r}" if field else "")
        super().__init__(f"{where}: {problem}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it into place, on error remove it.

    For a directory (``is_dir=True``) an existing target is replaced whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_UMASK)  # mkstemp/mkdtemp create owner-only files
    try:
        yield tmp
        if is_dir:
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.exists():
                shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, default=_json_default)
            f.write("\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise PoseDataError(path, "file does not exist")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise PoseDataError(path, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 92) -> None:
    path = Path(path)
    ext = path.suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise PoseDataError(path, f"OpenCV could not encode the image as {ext}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


_DECODE_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}


def read_image(path: str | os.PathLike, reduce: int = 1) -> np.ndarray:
    """Read an image as BGR uint8 (H×W×3); raise :class:`PoseDataError` naming the file when it cannot.

    ``reduce`` ∈ {1, 2, 4, 8} decodes at 1/reduce of the size (JPEG decodes that much faster): pixel ``i`` of the
    result covers source pixels ``reduce·i … reduce·i + reduce − 1``, i.e. its centre is ``reduce·i + (reduce−1)/2``.
    """
    path = Path(path)
    if not path.exists():
        raise PoseDataError(path, "image file does not exist")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, _DECODE_FLAGS[reduce]) if data.size else None
    if image is None:
        raise PoseDataError(path, "image file is unreadable (empty, truncated or not an image)")
    return image


def require_keys(record: dict, keys: list[str] | tuple[str, ...], path: str | os.PathLike, where: str = "") -> None:
    """Raise :class:`PoseDataError` naming the first missing field of ``record``."""
    for k in keys:
        if k not in record:
            raise PoseDataError(path, f"missing{' in ' + where if where else ''}", field=k)
