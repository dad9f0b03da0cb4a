"""A full disk, said in one line that names where.

Why: with `paths.artifacts` on a full filesystem a run failed as it should (FAILED, no model, the
tracker unchanged) but the console showed a traceback ending in `OSError: [Errno 28] No space
left on device`, without the path: which of the run's locations was full was left to guess.

How: the project's writers (`storage.write_*`, `atomic_dir`, the final fit's spill files) put the
path they were writing into the error (`naming`): a failed `write()` or `close()` carries none
of its own, pyarrow's errors carry no errno, numpy's says only "N requested and M written".
`find` looks for ENOSPC / EDQUOT through the error, its causes and contexts and Ray's wrappers
(`.cause`); `message` is the one line: the file when the error names one, else the run's
location (`paths.*`) whose filesystem has the least room left.
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

ERRNOS = (errno.ENOSPC, errno.EDQUOT)
TEXTS = ("No space left on device", "Disk quota exceeded")
SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's `tofile` on a full disk


def _is_full(exc: BaseException) -> bool:
    if not isinstance(exc, OSError):
        return False
    text = str(exc)
    return exc.errno in ERRNOS or (
        exc.errno is None and (any(t in text for t in TEXTS) or bool(SHORT_WRITE.search(text)))
    )


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Inside: an OSError of a full disk that names no file is raised again naming `path`."""
    try:
        yield
    except OSError as exc:
        if _is_full(exc) and not exc.filename:
            code = exc.errno if exc.errno in ERRNOS else errno.ENOSPC
            raise OSError(code, "No space left on device", str(path)) from exc
        raise


def find(exc: BaseException) -> OSError | None:
    """The full-disk OSError behind `exc` (itself, a cause, a context, a Ray task's cause), the
    one naming a file if several do; None when the failure is something else."""
    found: list[OSError] = []
    todo, seen = [exc], set()
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if _is_full(cur):
            found.append(cur)  # type: ignore[arg-type]
        cause = getattr(cur, "cause", None)  # Ray's RayTaskError keeps the task's error here
        todo += [cur.__cause__, cur.__context__]
        todo += [cause] if isinstance(cause, BaseException) else []
    named = [e for e in found if e.filename]
    return (named or found or [None])[0]


def _free(path: Path) -> int | None:
    """Bytes free on the filesystem holding `path` (its nearest existing parent)."""
    for p in [path, *path.parents]:
        if p.exists():
            with contextlib.suppress(OSError):
                return shutil.disk_usage(p).free
            return None
    return None


def message(exc: OSError, locations: dict[str, Path], outcome: str = "") -> str:
    """The one line for a full disk: what was being written (or the fullest of the run's
    `locations`, `{"paths.artifacts": path, ...}`), the room left there, the fix and `outcome`
    (what became of the command's work)."""
    if exc.filename:
        where = Path(str(exc.filename))
        key = next((k for k, p in locations.items() if where.is_relative_to(p)), None)
        what = f"writing {where}" + (f" ({key})" if key else "")
    else:
        room = {k: f for k, p in locations.items() if (f := _free(p)) is not None}
        key = min(room, key=room.__getitem__) if room else None
        where = locations[key] if key else Path.cwd()
        what = f"writing under {where}" + (f" ({key})" if key else "")
    free = _free(where)
    left = f"{free / 1024**2:.1f} MB free there now" if free is not None else "free space unknown"
    fix = f"free space there or point {key} elsewhere" if key else "free space there"
    tail = f" ({outcome})" if outcome else ""
    return f"disk full: {exc.strerror or 'no space left on device'} {what}; {left}; {fix}{tail}"
