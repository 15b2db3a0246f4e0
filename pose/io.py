"""Atomic writes, JSON helpers and image reading with errors that name the file.

Every artifact the pipeline writes goes through :func:`atomic_path` (write to a temporary sibling, then
``os.replace``), so a stage that fails never leaves a half-written output behind.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np


_UMASK = os.umask(0)
os.umask(_UMASK)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")   # what folder inputs take as images


class PoseDataError(ValueError):
    """Bad input: the message names the file and the field that is wrong."""

    def __init__(self, path: str | os.PathLike, problem: str, field: str | None = None):
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}" + (f": field {field!r}" if field else "")
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # picklable with its fields (a launched worker hands it back, pose.engine.launch)
        return type(self), (self.path, self.problem, self.field)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False, written_by: str = "posepipe") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it into place, on error remove it.

    For a directory (``is_dir=True``) the temporary folder gets the folder-output marker
    (:data:`pose.outputs.MARKER`, ``written_by``) before the caller writes into it, and an existing target is
    replaced whole, but only one the project may replace (:func:`pose.outputs.check_folder`: nothing, an empty
    folder, a marked folder, a file / symlink it owns). That is checked on entry, before the caller's work, and
    again just before the replace; otherwise :class:`PoseDataError` names the path and nothing is changed.
    """
    path = Path(path)
    if is_dir:
        from pose import outputs   # pose.outputs imports this module

        outputs.check_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_UMASK)  # mkstemp/mkdtemp create owner-only files
    try:
        if is_dir:
            outputs.mark_folder(tmp, written_by)
        yield tmp
        if is_dir:
            outputs.check_folder(path)   # again: something may have appeared there meanwhile
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
    """Write ``obj`` as strict JSON (atomically): a NaN or infinity, which JSON cannot hold (Python would write a
    bare ``NaN`` that other readers reject), is written as ``null``."""
    try:
        text = json.dumps(obj, indent=indent, default=_json_default, allow_nan=False)
    except ValueError:   # only when some float is not finite: rare, so the clean-up pass costs nothing normally
        text = json.dumps(_finite_or_none(obj), indent=indent, default=_json_default, allow_nan=False)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")


def _finite_or_none(o: Any) -> Any:
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite_or_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_or_none(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite_or_none(o.tolist())
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` when it is a regular file (or a link to one); else a :class:`PoseDataError` saying what it is.

    Checked before opening: opening a FIFO blocks forever, and a folder or device gives an OS error deep inside
    a reader."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise PoseDataError(path, f"{what} does not exist") from None
    except OSError as e:
        raise PoseDataError(path, f"{what} cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise PoseDataError(path, f"is a folder; expected a {what}")
    if not stat.S_ISREG(mode):
        raise PoseDataError(path, f"is not a regular file (a pipe, socket or device); expected a {what}")
    if not os.access(path, os.R_OK):
        raise PoseDataError(path, f"{what} is not readable (permissions)")
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Parse a UTF-8 JSON file; anything else (binary, UTF-16, truncated, nested past Python's recursion limit,
    a folder or a pipe) is a :class:`PoseDataError` naming the file."""
    path = regular_file(path, "JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise PoseDataError(path, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise PoseDataError(path, f"not UTF-8 text (byte {e.start}: binary, or another encoding such as UTF-16); "
                            "JSON files must be UTF-8") from None
    except RecursionError:
        raise PoseDataError(path, "JSON nested too deeply to be a dataset or settings file") from None


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


MAX_IMAGE_PIXELS = int(os.environ.get("POSEPIPE_MAX_IMAGE_PIXELS", 64_000_000))
MAX_IMAGE_ASPECT = 50.0   # longer side / shorter side; no photo of people is a 2 x 20000 strip


def image_header_size(data: np.ndarray) -> tuple[int, int] | None:
    """``(width, height)`` a PNG or JPEG header claims, read without decoding (``None`` for other formats or
    when the header cannot be parsed: the decoder then decides)."""
    b = data[:1 << 16].tobytes()
    if b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 24 and b[12:16] == b"IHDR":
        return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
    if b[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(b):
            if b[i] != 0xFF:
                return None
            marker, length = b[i + 1], int.from_bytes(b[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # start of frame
                return int.from_bytes(b[i + 7:i + 9], "big"), int.from_bytes(b[i + 5:i + 7], "big")
            i += 2 + length
    return None


def check_image_size(path: str | os.PathLike, width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse sizes that cannot be a photo to run a pose model on: empty, over ``max_pixels`` (the
    ``POSEPIPE_MAX_IMAGE_PIXELS`` environment variable; decoding such a file, or scaling it for a network, would
    allocate gigabytes) or a strip more than :data:`MAX_IMAGE_ASPECT` times longer than wide."""
    if width < 1 or height < 1:
        raise PoseDataError(path, f"image is empty ({width} x {height} pixels)")
    if width * height > max_pixels:
        raise PoseDataError(path, f"image is {width} x {height} pixels, over the limit of {max_pixels} pixels "
                            "(POSEPIPE_MAX_IMAGE_PIXELS)")
    if max(width, height) > MAX_IMAGE_ASPECT * min(width, height):
        raise PoseDataError(path, f"image is {width} x {height} pixels: a strip, not a photo (sides more than "
                            f"{MAX_IMAGE_ASPECT:g} x apart)")


def read_image(path: str | os.PathLike, reduce: int = 1) -> np.ndarray:
    """Read an image as BGR uint8 (H×W×3); raise :class:`PoseDataError` naming the file when it cannot
    (missing, not a regular file, empty, truncated, not an image, or a size :func:`check_image_size` refuses).

    ``reduce`` ∈ {1, 2, 4, 8} decodes at 1/reduce of the size (JPEG decodes that much faster): pixel ``i`` of the
    result covers source pixels ``reduce·i … reduce·i + reduce − 1``, i.e. its centre is ``reduce·i + (reduce−1)/2``.
    """
    path = regular_file(path, "image file")
    data = np.fromfile(str(path), dtype=np.uint8)
    if not data.size:
        raise PoseDataError(path, "image file is empty (0 bytes)")
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:].tobytes():
        # libjpeg decodes a cut-off JPEG as grey below the cut and only warns: a silently wrong image
        raise PoseDataError(path, "JPEG file is truncated (no end-of-image marker)")
    claimed = image_header_size(data)
    if claimed is not None:
        check_image_size(path, *claimed)
    try:
        image = cv2.imdecode(data, _DECODE_FLAGS[reduce])
    except cv2.error as e:
        raise PoseDataError(path, f"OpenCV cannot decode the image ({str(e).strip().splitlines()[-1]})") from None
    if image is None:
        raise PoseDataError(path, "image file is unreadable (truncated or not an image)")
    check_image_size(path, image.shape[1] * reduce, image.shape[0] * reduce)
    return image


def is_number(v: Any) -> bool:
    """A finite JSON number: not a bool, NaN, ±inf or an integer beyond float range."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def require_keys(record: dict, keys: list[str] | tuple[str, ...], path: str | os.PathLike, where: str = "") -> None:
    """Raise :class:`PoseDataError` naming the first missing field of ``record``."""
    for k in keys:
        if k not in record:
            raise PoseDataError(path, f"missing{' in ' + where if where else ''}", field=k)
