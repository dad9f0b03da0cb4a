"""Where a run's files go: a local directory, or a `gs://bucket/prefix` on Google Cloud Storage.

Why: on a Ray cluster a node's disk is neither shared nor kept, so the feature store that tasks on
other nodes write and read, the models, reports, Tune's results and the tracker must live in a
bucket when `paths.*` say `gs://...`. Locally nothing changes: a location is then a `Path` and
every helper here does exactly what the local code always did (temp file + rename).

A location is a `Path` or a `GcsPath`: bucket/key plus the `gcs` config section that reaches it
(endpoint, credentials, exactly as `vpt_ray.data.gcs` uses them). The settings travel with the
value, so a Ray task on another node reads or writes gs:// with the run's endpoint and credentials
without a config argument; `str()` and `repr()` show only the `gs://` URI.

Atomicity: a local write is a temp file renamed into place; a GCS object appears only once its
upload has completed. A directory (a model, a cached search, a report) is uploaded file by file
with one marker LAST (`meta.json`, `best.json`, `status.json`), and readers treat a directory
without its marker as incomplete. Two writers of one object: the last one wins (as locally),
except through `update_text`, a read-modify-write under a lock (a file lock locally, a
generation-match precondition on GCS) for files several runs change, such as the tracker.
Cost: one request per object; a phase writes a few dozen objects plus one per ticker.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vpt_ray.core import disk_full
from vpt_ray.core.config import ConfigError, GcsConfig

# before gcsfs is imported anywhere: its experimental filesystem stalls ~60 s per call against
# an emulator probing a gRPC API (see vpt_ray.data.gcs, which does the same)
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
SCHEME = "gs://"


class StorageError(ConfigError):
    """A `paths.*` location on gs:// cannot be used (no credentials, endpoint down, no bucket)."""


class ArtifactError(ValueError):
    """A file an earlier run wrote (model, its meta.json, the tracker's state) is damaged; the
    message names the file and the fix. Raised before any compute starts."""


@dataclass(frozen=True)
class GcsPath:
    """An object or prefix in a bucket, with the settings to reach it; `/` joins like a Path."""

    key: str  # "bucket/prefix/name": no scheme, no leading or trailing slash
    gcs: GcsConfig = field(default_factory=GcsConfig, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.key or self.key.startswith("/") or "//" in self.key:
            raise ValueError(f"gs://{self.key}: not a bucket path (want gs://BUCKET/PREFIX)")

    def __str__(self) -> str:
        return SCHEME + self.key

    def __repr__(self) -> str:  # never the credentials
        return f"GcsPath({str(self)!r})"

    def __truediv__(self, part: str | Path) -> GcsPath:
        return GcsPath(f"{self.key}/{str(part).strip('/')}", self.gcs)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> GcsPath:
        return GcsPath(self.key.rsplit("/", 1)[0], self.gcs) if "/" in self.key else self

    @property
    def bucket(self) -> str:
        return self.key.split("/", 1)[0]

    def with_suffix(self, suffix: str) -> GcsPath:
        return self.parent / (Path(self.name).with_suffix(suffix).name)


Location = Path | GcsPath


def is_uri(value: str | Path) -> bool:
    """`value` names a URI (`scheme://...`) rather than a local path."""
    return "://" in str(value)


def parse(value: str | Path, root: Path, gcs: GcsConfig) -> Location:
    """A `paths.*` value as a location: `gs://...` -> GcsPath, else `root / value`."""
    text = str(value)
    if text.startswith(SCHEME):
        return GcsPath(text.removeprefix(SCHEME).strip("/"), gcs)
    if is_uri(text):
        raise ConfigError(f"{text!r}: only local paths and gs://BUCKET/PREFIX are supported")
    return root / text


def is_remote(loc: object) -> bool:
    return isinstance(loc, GcsPath)


def portable(loc: Location) -> str | GcsPath:
    """What a summary or a Ray task carries: a local path as str (as always), a GcsPath as is."""
    return loc if isinstance(loc, GcsPath) else str(loc)


def as_location(value: str | Path | GcsPath) -> Location:
    """Inverse of `portable`."""
    return value if isinstance(value, GcsPath) else Path(value)


# ---- files earlier runs wrote: damaged ones are one line naming them -----------------------

REWRITE = "write it again (rerun the command that made it)"


def read_json_object(path: Path, fix: str = REWRITE) -> dict:
    """The JSON object in `path` (a metrics.json, meta.json, ...): FileNotFoundError when absent,
    ArtifactError naming `path` and `fix` when it is unreadable, not UTF-8, not JSON or not an
    object (a list, a number)."""
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ArtifactError(f"{path}: not readable JSON ({_brief(exc)}); {fix}") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: holds a JSON {type(obj).__name__}, not an object; {fix}")
    return obj


def read_parquet_artifact(path: Path, fix: str = REWRITE, **kwargs: Any) -> Any:
    """`pandas.read_parquet(path)`; ArtifactError naming `path` when it is not readable parquet
    (truncated, garbage) or lacks a column asked for."""
    import pandas as pd

    try:
        return pd.read_parquet(path, **kwargs)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ArtifactError(f"{path}: not readable parquet ({_brief(exc)}); {fix}") from None


def _brief(exc: BaseException) -> str:
    """An error's message on one line of at most 200 characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:200] + "..."


# ---- GCS plumbing -------------------------------------------------------------------------

GOOGLE_ENDPOINT = "https://storage.googleapis.com"


def request_timeout(cfg: GcsConfig) -> Any:
    """aiohttp's per-request timeout for gcsfs (`requests_timeout`): connect and read."""
    import aiohttp

    return aiohttp.ClientTimeout(sock_connect=cfg.connect_timeout_s, sock_read=cfg.read_timeout_s)


def endpoint(gcs: GcsConfig) -> str:
    """`gcs.endpoint_url`, else STORAGE_EMULATOR_HOST, else Google's (as vpt_ray.data.gcs)."""
    url = gcs.endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST") or GOOGLE_ENDPOINT
    return url if url.startswith(("http://", "https://")) else "http://" + url


def gcs_filesystem(gcs: GcsConfig) -> Any:
    """The gcsfs filesystem for these settings (fsspec keeps one instance per settings).

    Listings are not cached: a run checks for objects other processes wrote moments ago. Every
    request has `gcs.connect_timeout_s` / `gcs.read_timeout_s` (gcsfs sets none)."""
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(
        token=gcs.token,
        endpoint_url=endpoint(gcs),
        use_listings_cache=False,
        requests_timeout=request_timeout(gcs),  # connect / read timeouts on every request
    )


def arrow_filesystem(loc: GcsPath) -> tuple[Any, str]:
    """(pyarrow filesystem, path) for pyarrow readers/writers and Tune's `storage_filesystem`."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(gcs_filesystem(loc.gcs))), loc.key


def tune_storage(loc: Location) -> tuple[Path | str, Any]:
    """Tune's (`storage_path`, `storage_filesystem`): a local dir with no filesystem, or a
    GcsPath's key with the pyarrow filesystem that reaches it."""
    if isinstance(loc, GcsPath):
        fs, key = arrow_filesystem(loc)
        return key, fs
    return loc, None


# ---- local atomic writers -----------------------------------------------------------------
# Temp files and directories are created as `open()` and `mkdir()` create them, with the mode
# the umask gives: `mkstemp` / `mkdtemp` made every report, tracker, model file 0600 (model
# directories 0700), so a colleague on a shared machine could not open a report. Nothing written
# here holds a secret (the token files are written by jobs/ with 0600 on purpose).


def temp_name(path: Path) -> Path:
    """A fresh hidden name next to `path` for a write-then-rename."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Temp file + rename, so readers never see a half-written file. A full disk's error names
    `path` (`disk_full.naming`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with disk_full.naming(path), open(tmp, "xb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def json_text(obj: object) -> str:
    return json.dumps(obj, indent=2, default=str, allow_nan=True) + "\n"


def write_json_atomic(path: Path, obj: object) -> None:
    write_text_atomic(path, json_text(obj))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Build a directory under a temp name next to `final`; on success swap it into place, on
    failure remove it, so `final` is either the old complete directory or the new one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    tmp.mkdir()  # the umask's mode, as any directory (mkdtemp's was 0700)
    try:
        with disk_full.naming(final):
            yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- read-modify-write under a lock ----------------------------------------------------------

LOCK_TIMEOUT_S = 300.0  # a local writer waits this long for the file lock
GCS_UPDATE_ATTEMPTS = 20  # a GCS writer retries this often when another writer came first


def update_text(
    loc: Location, change: Callable[[str | None], str], timeout_s: float = LOCK_TIMEOUT_S
) -> str:
    """Replace the text at `loc` with `change(current text or None)` as one step against other
    writers (other runs, on this machine or any node); returns the text written.

    Locally: under a file lock (`.{name}.lock` next to it, `filelock`: an OS lock the kernel
    releases if the holder dies), read, change, atomic write. On GCS: read the object and its
    generation, change, upload with an `ifGenerationMatch` precondition (0 = must not exist);
    when another writer came first (HTTP 412), read and change again, after a short random
    wait. `change` must be a pure function of the text: on GCS it may run more than once."""
    if isinstance(loc, Path):
        from filelock import FileLock, Timeout

        loc.parent.mkdir(parents=True, exist_ok=True)
        lock = loc.with_name(f".{loc.name}.lock")
        try:
            with FileLock(lock, timeout=timeout_s):
                new = change(loc.read_text() if loc.exists() else None)
                write_text_atomic(loc, new)
                return new
        except Timeout:
            raise StorageError(
                f"{loc}: another process held its lock {lock} for {timeout_s:g} s; is a run "
                "stuck writing it? (the lock is released when that process exits)"
            ) from None
    fs = gcs_filesystem(loc.gcs)
    for attempt in range(GCS_UPDATE_ATTEMPTS):
        try:
            generation = str(fs.info(loc.key)["generation"])
            text: str | None = fs.cat_file(loc.key).decode()
        except FileNotFoundError:
            generation, text = "0", None
        new = change(text)
        try:
            _upload_if_generation(fs, loc, new.encode(), generation)
            return new
        except FileExistsError:  # HTTP 412: someone wrote it since we read it
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
    raise StorageError(
        f"{loc}: changed by other writers {GCS_UPDATE_ATTEMPTS} times while this run tried to "
        "update it; run again"
    )


def _upload_if_generation(fs: Any, loc: GcsPath, data: bytes, generation: str) -> None:
    """One multipart upload (as gcsfs's own) with `ifGenerationMatch`; FileExistsError on 412.
    gcsfs offers the precondition only for "must not exist" (mode="create")."""
    from urllib.parse import quote

    bucket, key = loc.key.split("/", 1)
    meta = json.dumps({"name": key})
    head = (
        "--==0==\nContent-Type: application/json; charset=UTF-8\n\n"
        f"{meta}\n--==0==\nContent-Type: application/octet-stream\n\n"
    )
    fs.call(
        "POST",
        f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
        uploadType="multipart",
        ifGenerationMatch=generation,
        headers={"Content-Type": 'multipart/related; boundary="==0=="'},
        data=head.encode() + data + b"\n--==0==--",
        json_out=True,
    )


# ---- one API for both ---------------------------------------------------------------------


def makedirs(loc: Location) -> None:
    """Create a local directory; a no-op on GCS (prefixes need no creating)."""
    if isinstance(loc, Path):
        loc.mkdir(parents=True, exist_ok=True)


def exists(loc: Location) -> bool:
    if isinstance(loc, Path):
        return loc.exists()
    return gcs_filesystem(loc.gcs).exists(loc.key)


def read_bytes(loc: Location) -> bytes:
    """The whole file or object; FileNotFoundError when absent."""
    if isinstance(loc, Path):
        return loc.read_bytes()
    return gcs_filesystem(loc.gcs).cat_file(loc.key)


def read_text(loc: Location) -> str:
    return read_bytes(loc).decode()


def write_bytes(loc: Location, data: bytes) -> None:
    """Atomically: a renamed temp file, or one object upload."""
    if isinstance(loc, Path):
        write_bytes_atomic(loc, data)
    else:
        gcs_filesystem(loc.gcs).pipe_file(loc.key, data)


def write_text(loc: Location, text: str) -> None:
    write_bytes(loc, text.encode())


def write_json(loc: Location, obj: object) -> None:
    write_text(loc, json_text(obj))


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write `table` to `path` through a temp file + rename (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with disk_full.naming(path):
            pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet(table: pa.Table, loc: Location) -> None:
    if isinstance(loc, Path):
        write_parquet_atomic(table, loc)
        return
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes(loc, buf.getvalue())


def read_parquet(loc: str | Location, **kwargs: Any) -> pa.Table:
    """`pq.read_table` (columns, filters, ...) of a local file or an object (ranged reads).

    The object is opened with gcsfs's "readahead" cache: its default ("adaptive") leaves a
    background prefetch task behind at close, which asyncio logs as an ERROR in every task."""
    if isinstance(loc, GcsPath):
        with gcs_filesystem(loc.gcs).open(loc.key, "rb", cache_type="readahead") as fh:
            return pq.read_table(fh, **kwargs)
    return pq.read_table(loc, **kwargs)


def upload_file(src: Path, dst: Location) -> None:
    write_bytes(dst, src.read_bytes())


def upload_dir(src: Path, dst: Location, last: tuple[str, ...] = ()) -> list[str]:
    """Copy every file under `src` to `dst` (same relative names), the `last` ones after all
    others, so a reader who sees the marker sees the whole directory. Returns the names."""
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    files = [f for f in files if f not in last] + [f for f in last if f in files]
    if isinstance(dst, Path):
        for f in files:
            write_bytes_atomic(dst / f, (src / f).read_bytes())
        return files
    fs = gcs_filesystem(dst.gcs)
    for f in files:
        fs.pipe_file((dst / f).key, (src / f).read_bytes())
    return files


def list_files(loc: Location) -> list[str]:
    """Relative names of every file under `loc` (empty when nothing is there)."""
    if isinstance(loc, Path):
        if not loc.is_dir():
            return []
        return sorted(p.relative_to(loc).as_posix() for p in loc.rglob("*") if p.is_file())
    fs = gcs_filesystem(loc.gcs)
    try:
        found = fs.find(loc.key)
    except FileNotFoundError:
        return []
    return sorted(k.removeprefix(loc.key + "/") for k in found if k.startswith(loc.key + "/"))


def download_dir(src: Location, dst: Path) -> list[str]:
    """Copy every file under `src` into the local directory `dst`; returns the names."""
    names = list_files(src)
    for name in names:
        write_bytes_atomic(dst / name, read_bytes(src / name))
    return names


@contextlib.contextmanager
def local_dir(loc: Location, marker: str) -> Iterator[Path]:
    """`loc` as a local directory: itself, or a temp download of a gs:// one, which must hold
    `marker` (uploaded last): without it the upload was interrupted and nothing is read."""
    if isinstance(loc, Path):
        yield loc
        return
    if not exists(loc / marker):
        raise FileNotFoundError(
            f"{loc}: no {marker}, so not a complete directory (the run did not finish, or its "
            "upload was interrupted)"
        )
    with tempfile.TemporaryDirectory(prefix="vpt-ray-") as tmp:
        download_dir(loc, Path(tmp) / loc.name)
        yield Path(tmp) / loc.name


def remove(loc: Location) -> None:
    """Delete a file or a whole directory / prefix; nothing there is fine."""
    if isinstance(loc, Path):
        if loc.is_dir():
            shutil.rmtree(loc)
        else:
            loc.unlink(missing_ok=True)
        return
    fs = gcs_filesystem(loc.gcs)
    keys = [loc.key] if fs.isfile(loc.key) else []
    keys += [(loc / name).key for name in list_files(loc)]
    if keys:
        fs.rm(keys)
