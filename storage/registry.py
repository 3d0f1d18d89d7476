"""Model registry: immutable, integer-numbered SavedModel versions in TF Serving's layout.

```
<root>/<model>/<version>/   saved_model.pb  variables/  assets/  registry.json
<root>/<model>/aliases.json {"aliases": {"champion": 3, ...}, "history": [...]}
<root>/<model>/.lock        (local roots: serialises alias read-modify-write)
```

What is atomic where:
- Local/POSIX root (the default): a version is copied into a hidden staging folder
  (`.tmp-*`, ignored by TF Serving and by this module), its checksums are recorded in
  `registry.json` inside it, it is fsynced, and one `rename` publishes it. The rename is
  also the version allocation: renaming onto an existing, non-empty version fails, so the
  writer retries with the next number and concurrent registrations never share one.
  Alias updates are read-modify-write under an `fcntl` lock, written temp + rename.
- Object stores (s3://, gs://, memory://): there is no folder rename. Files are uploaded
  into `<version>/` and `registry.json` is written last, as the commit marker: this module
  ignores versions without it, but TF Serving polling the bucket could see a partial
  version, and neither version allocation nor alias updates are locked. Run one writer
  per model there (e.g. a Prefect concurrency limit of 1 on the register task).

Every file's sha256 is recorded at registration; `verify` re-hashes, and a version that
fails it is never promoted, rolled back to, or returned by `path`/`load`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from storage.fs import (
    TEMP_PREFIX,
    atomic_write_json,
    atomic_write_text,
    read_json,
    temp_name,
    url_to_fs,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "posterflow"  # = flows.config.RegisterConfig.model_name default
CHAMPION = "champion"
CHALLENGER = "challenger"
METADATA = "registry.json"
ALIASES = "aliases.json"
SERVING_CONFIG = "models.config"
REQUIRED_FILES = (
    "saved_model.pb",
    "variables/variables.index",
    "assets/labels.json",
    "assets/thresholds.json",
    "assets/metrics.json",
    "assets/lineage.json",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHUNK = 1 << 20
UNKNOWN_SPLIT = "unknown"  # lineage without a dataset version: never "the same split"
STALE_STAGING_S = 24 * 3600  # staging folders older than this belong to killed writers


class RegistryError(Exception):
    """Base class for registry failures that a caller can report without a traceback."""


class InvalidModelError(RegistryError):
    """The folder given to `register` is not a complete exported model."""


class NotFoundError(RegistryError):
    """No such model, version or alias."""


class CorruptVersionError(RegistryError):
    """A registered version no longer matches the checksums recorded at registration."""


@dataclass(frozen=True)
class VersionInfo:
    """One registered version: its number, folder and `registry.json` metadata."""

    model: str
    version: int
    path: str
    metadata: dict[str, Any]

    @property
    def test_macro_f1(self) -> float:
        return float(self.metadata["metrics"]["test"]["macro_f1"])

    @property
    def test_split(self) -> str:
        return str(self.metadata["test_split"])

    @property
    def lineage(self) -> dict[str, Any]:
        return dict(self.metadata["lineage"])


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate becomes champion, and why (recorded in the alias history)."""

    promoted: bool
    reason: str
    candidate_f1: float
    baseline_f1: float | None = None
    champion: int | None = None
    forced: bool = False


@dataclass(frozen=True)
class Registration:
    """What `register` did: the new version, its folder and the gate's decision."""

    model: str
    version: int
    path: str
    alias: str
    decision: GateDecision


@dataclass(frozen=True)
class VerifyResult:
    """Problems found when re-checking a version against its recorded checksums."""

    model: str
    version: int
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems


def utc_now() -> str:
    """Current UTC time, ISO 8601 (the registry's one timestamp format)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def split_key(lineage: dict[str, Any]) -> str:
    """Identity of the test split a model was scored on: fingerprint if given, else dataset."""
    if lineage.get("test_split_fingerprint"):
        return f"fingerprint:{lineage['test_split_fingerprint']}"
    if lineage.get("dataset_version"):
        return f"dataset:{lineage['dataset_version']}"
    return UNKNOWN_SPLIT


def gate(
    candidate: VersionInfo,
    champion: VersionInfo | None,
    margin: float,
    champion_score: float | None = None,
) -> GateDecision:
    """Promote when candidate test macro F1 >= champion's (on the same split) + margin."""
    f1 = candidate.test_macro_f1
    if champion is None:
        return GateDecision(True, "first version: no champion yet", f1)
    if champion.test_split == candidate.test_split and candidate.test_split != UNKNOWN_SPLIT:
        baseline, where = champion.test_macro_f1, f"on the same test split ({candidate.test_split})"
    elif champion_score is not None:
        baseline = champion_score
        where = f"(given) on the candidate's test split ({candidate.test_split})"
    else:
        return GateDecision(
            False,
            f"not compared: champion v{champion.version} was scored on {champion.test_split}, "
            f"the candidate on {candidate.test_split}; pass the champion's score on the "
            "candidate's split (champion_score) to gate it",
            f1,
            champion=champion.version,
        )
    promoted = f1 >= baseline + margin
    op = ">=" if promoted else "<"
    reason = (
        f"test macro F1 {f1:.4f} {op} champion v{champion.version} {baseline:.4f} "
        f"+ margin {margin:.4f} {where}"
    )
    return GateDecision(promoted, reason, f1, baseline, champion.version)


def serving_config(model: str, base_path: str, aliases: dict[str, int]) -> str:
    """TF Serving model config: load the aliased versions only, labelled by alias.

    Without it TF Serving serves the highest version, challengers included; with
    `--model_config_file=<model>/models.config --model_config_file_poll_wait_seconds=N`
    it serves `/versions/<champion>` and `/labels/champion` and follows promotions (add
    `--allow_version_labels_for_unavailable_models` so a label may name a version that
    is still loading).
    """
    versions = "".join(f"        versions: {v}\n" for v in sorted(set(aliases.values())))
    labels = "".join(
        f'    version_labels {{ key: "{a}" value: {v} }}\n' for a, v in sorted(aliases.items())
    )
    return (
        "model_config_list {\n  config {\n"
        f"    name: {json.dumps(model)}\n    base_path: {json.dumps(base_path)}\n"
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{\n      specific {{\n{versions}      }}\n    }}\n"
        f"{labels}  }}\n}}\n"
    )


def _check_name(model: str) -> str:
    """Model names become folder names: no slashes, no leading dot."""
    if not _NAME.match(model):
        raise ValueError(f"model name must match {_NAME.pattern}, got {model!r}")
    return model


def _read_export(fs: fsspec.AbstractFileSystem, src: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check an exported model folder and return its (metrics, lineage) assets."""
    missing = [rel for rel in REQUIRED_FILES if not fs.isfile(f"{src}/{rel}")]
    if missing:
        raise InvalidModelError(f"{src} is not an exported model: missing {', '.join(missing)}")
    try:
        metrics = read_json(fs.unstrip_protocol(f"{src}/assets/metrics.json"))
        lineage = read_json(fs.unstrip_protocol(f"{src}/assets/lineage.json"))
        f1 = float(metrics["test"]["macro_f1"])
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidModelError(
            f"{src}/assets: expected metrics.json with test.macro_f1 and a JSON lineage.json "
            f"({type(e).__name__}: {e})"
        ) from e
    if not (math.isfinite(f1) and 0.0 <= f1 <= 1.0) or not isinstance(lineage, dict):
        raise InvalidModelError(f"{src}/assets: expected test macro_f1 in [0, 1], got {f1}")
    return metrics, lineage


def _relative_files(fs: fsspec.AbstractFileSystem, folder: str) -> dict[str, int]:
    """Every file under `folder` as {relative path: size}."""
    folder = folder.rstrip("/")
    found = fs.find(folder, detail=True)
    return {p[len(folder) + 1 :]: int(d["size"]) for p, d in found.items()}


def _copy_hashing(
    src_fs: fsspec.AbstractFileSystem, src: str, dst_fs: fsspec.AbstractFileSystem, dst: str
) -> dict[str, dict[str, Any]]:
    """Copy every file and return {relative path: {sha256, bytes}} of the bytes written."""
    files = {}
    for rel in sorted(_relative_files(src_fs, src)):
        dst_fs.makedirs(f"{dst}/{rel}".rpartition("/")[0], exist_ok=True)
        h, n = hashlib.sha256(), 0
        with src_fs.open(f"{src}/{rel}", "rb") as r, dst_fs.open(f"{dst}/{rel}", "wb") as w:
            while block := r.read(_CHUNK):
                h.update(block)
                w.write(block)
                n += len(block)
        files[rel] = {"sha256": h.hexdigest(), "bytes": n}
    return files


def _remove_stale_staging(model_dir: str, max_age_s: float = STALE_STAGING_S) -> None:
    """Delete what killed writers left (staging folders, alias temp files) once old enough."""
    cutoff = time.time() - max_age_s
    for entry in os.scandir(model_dir):
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        try:  # concurrent writers rename their staging folders and alias temp files away
            mtime, is_dir = entry.stat().st_mtime, entry.is_dir()
        except FileNotFoundError:
            continue
        if mtime < cutoff:
            log.warning("removing stale staging entry %s", entry.path)
            if is_dir:
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _fsync(path: str) -> None:
    """Flush one local file or directory entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: str) -> None:
    """Flush a local folder's files and directories to disk before publishing it."""
    for dirpath, _, names in os.walk(folder):
        for name in [*names, "."]:
            _fsync(os.path.join(dirpath, name))


class Registry:
    """A registry rooted at a local folder (default) or any fsspec URL."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(root)
        self.fs, self._root = url_to_fs(root)
        self.local = isinstance(self.fs, LocalFileSystem)

    # --- reading ---------------------------------------------------------------------

    def _model_dir(self, model: str) -> str:
        return f"{self._root.rstrip('/')}/{_check_name(model)}"

    def _url(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def _folder_numbers(self, model: str) -> list[int]:
        """Every integer-named folder, registered or not (allocation must skip them all)."""
        mdir = self._model_dir(model)
        if not self.fs.isdir(mdir):
            return []
        names = (p.rstrip("/").rpartition("/")[2] for p in self.fs.ls(mdir, detail=False))
        return sorted(int(n) for n in names if n.isdigit())

    def versions(self, model: str) -> list[int]:
        """Registered versions (those with `registry.json`), ascending."""
        mdir = self._model_dir(model)
        return [v for v in self._folder_numbers(model) if self.fs.isfile(f"{mdir}/{v}/{METADATA}")]

    def info(self, model: str, version: int) -> VersionInfo:
        """Metadata of one registered version."""
        path = f"{self._model_dir(model)}/{version}"
        try:
            meta = read_json(self._url(f"{path}/{METADATA}"))
        except FileNotFoundError as e:
            raise NotFoundError(f"{model} has no registered version {version} ({path})") from e
        return VersionInfo(model, version, self._url(path), meta)

    def aliases(self, model: str) -> dict[str, Any]:
        """The alias file: {"aliases": {name: version}, "history": [...]}."""
        try:
            return dict(read_json(self._url(f"{self._model_dir(model)}/{ALIASES}")))
        except FileNotFoundError:
            return {"aliases": {}, "history": []}

    def resolve(self, model: str, ref: str | int) -> int:
        """A version number from a number or an alias name."""
        if isinstance(ref, int) or str(ref).isdigit():
            version = int(ref)
            if version not in self.versions(model):
                raise NotFoundError(f"{model} has no registered version {version}")
            return version
        aliases = self.aliases(model)["aliases"]
        if ref not in aliases:
            raise NotFoundError(f"{model} has no alias {ref!r} (aliases: {sorted(aliases)})")
        return int(aliases[ref])

    def verify(self, model: str, version: int) -> VerifyResult:
        """Re-hash every file of a version against the checksums recorded at registration."""
        info = self.info(model, version)
        vdir = f"{self._model_dir(model)}/{version}"
        recorded: dict[str, dict[str, Any]] = info.metadata["files"]
        actual = _relative_files(self.fs, vdir)
        actual.pop(METADATA, None)
        problems = [
            f"{rel}: recorded at registration, now missing"
            for rel in sorted(set(recorded) - set(actual))
        ]
        problems += [
            f"{rel}: not recorded at registration" for rel in sorted(set(actual) - set(recorded))
        ]
        for rel in sorted(set(recorded) & set(actual)):
            want = recorded[rel]
            if actual[rel] != want["bytes"]:
                problems.append(f"{rel}: expected {want['bytes']} bytes, found {actual[rel]}")
            elif (got := self._sha256(f"{vdir}/{rel}")) != want["sha256"]:
                problems.append(f"{rel}: sha256 mismatch (expected {want['sha256']}, got {got})")
        return VerifyResult(model, version, tuple(problems))

    def _sha256(self, path: str) -> str:
        h = hashlib.sha256()
        with self.fs.open(path, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
        return h.hexdigest()

    def _verified(self, model: str, version: int) -> VersionInfo:
        """The version's info, or CorruptVersionError when it fails `verify`."""
        result = self.verify(model, version)
        if not result.ok:
            raise CorruptVersionError(
                f"{model} v{version} failed verification: {'; '.join(result.problems)}"
            )
        return self.info(model, version)

    def path(self, model: str, ref: str | int = CHAMPION) -> str:
        """Folder (local path or URL) of a verified version, e.g. the champion, for serving."""
        return self._verified(model, self.resolve(model, ref)).path

    def load(self, model: str, ref: str | int = CHAMPION) -> Any:
        """`tf.saved_model.load` of a verified version."""
        import tensorflow as tf

        return tf.saved_model.load(self.path(model, ref))

    # --- writing ---------------------------------------------------------------------

    def register(
        self,
        model_dir: str | os.PathLike[str],
        model: str = DEFAULT_MODEL,
        *,
        margin: float = 0.0,
        champion_score: float | None = None,
        force: bool = False,
        flow_run_id: str | None = None,
    ) -> Registration:
        """Add an exported model as the next version, then gate it against the champion."""
        src_fs, src = url_to_fs(model_dir)
        metrics, lineage = _read_export(src_fs, src.rstrip("/"))
        meta = {
            "format": 1,
            "model": model,
            "created_at": utc_now(),
            "source": str(model_dir),
            "flow_run_id": flow_run_id,
            "metrics": metrics,
            "lineage": lineage,
            "test_split": split_key(lineage),
        }
        publish = self._publish_local if self.local else self._publish_remote
        version = publish(src_fs, src.rstrip("/"), model, meta)
        log.info("registered %s v%d from %s", model, version, model_dir)
        decision = self.promote(
            model,
            version,
            margin=margin,
            champion_score=champion_score,
            force=force,
            flow_run_id=flow_run_id,
            action="register",
        )
        alias = CHAMPION if decision.promoted else CHALLENGER
        return Registration(model, version, self.info(model, version).path, alias, decision)

    def _publish_local(
        self, src_fs: fsspec.AbstractFileSystem, src: str, model: str, meta: dict[str, Any]
    ) -> int:
        """Stage, checksum, fsync, then rename to the next free number (the allocation)."""
        mdir = self._model_dir(model)
        os.makedirs(mdir, exist_ok=True)
        _remove_stale_staging(mdir)
        staging = temp_name(f"{mdir}/version")
        try:
            meta["files"] = _copy_hashing(src_fs, src, self.fs, staging)
            atomic_write_json(f"{staging}/{METADATA}", meta)
            _fsync_tree(staging)
            while True:
                version = max(self._folder_numbers(model), default=0) + 1
                try:
                    os.rename(staging, f"{mdir}/{version}")
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    log.debug("%s v%d was taken by another writer, trying the next", model, version)
                    continue
                _fsync(mdir)
                return version
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish_remote(
        self, src_fs: fsspec.AbstractFileSystem, src: str, model: str, meta: dict[str, Any]
    ) -> int:
        """Upload into the next number, `registry.json` last (single writer per model)."""
        version = max(self._folder_numbers(model), default=0) + 1
        vdir = f"{self._model_dir(model)}/{version}"
        meta["files"] = _copy_hashing(src_fs, src, self.fs, vdir)
        atomic_write_json(self._url(f"{vdir}/{METADATA}"), meta)
        return version

    @contextlib.contextmanager
    def _alias_lock(self, model: str) -> Iterator[None]:
        """Exclusive lock for alias read-modify-write (local roots; none on object stores)."""
        if not self.local:
            yield
            return
        mdir = self._model_dir(model)
        os.makedirs(mdir, exist_ok=True)
        with open(f"{mdir}/.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @staticmethod
    def _set_alias(state: dict[str, Any], alias: str, version: int | None, **entry: Any) -> None:
        """Point (or with None, drop) an alias in `state` and append the change to history."""
        previous = state["aliases"].get(alias)
        if version is None:
            state["aliases"].pop(alias, None)
        else:
            state["aliases"][alias] = version
        state["history"].append(
            {"at": utc_now(), "alias": alias, "version": version, "previous": previous, **entry}
        )

    def _write_aliases(self, model: str, state: dict[str, Any]) -> None:
        """Write aliases.json, then the TF Serving config that serves the aliased versions."""
        mdir = self._model_dir(model)
        atomic_write_json(self._url(f"{mdir}/{ALIASES}"), state)
        base = os.path.abspath(mdir) if self.local else self._url(mdir)
        config = serving_config(model, base, state["aliases"])
        atomic_write_text(self._url(f"{mdir}/{SERVING_CONFIG}"), config)

    def promote(
        self,
        model: str,
        version: int,
        *,
        margin: float = 0.0,
        champion_score: float | None = None,
        force: bool = False,
        flow_run_id: str | None = None,
        action: str = "promote",
    ) -> GateDecision:
        """Gate a verified version against the champion; on refusal it becomes challenger."""
        candidate = self._verified(model, version)
        with self._alias_lock(model):
            state = self.aliases(model)
            current = state["aliases"].get(CHAMPION)
            if current == version:
                f1 = candidate.test_macro_f1
                return GateDecision(True, f"v{version} is already champion", f1)
            champion = self.info(model, int(current)) if current is not None else None
            decision = gate(candidate, champion, margin, champion_score)
            if force and not decision.promoted:
                reason = f"forced over the gate: {decision.reason}"
                decision = replace(decision, promoted=True, forced=True, reason=reason)
            entry = {
                "action": action,
                "forced": decision.forced,
                "reason": decision.reason,
                "flow_run_id": flow_run_id,
            }
            if decision.promoted:
                self._set_alias(state, CHAMPION, version, **entry)
                if state["aliases"].get(CHALLENGER) == version:
                    self._set_alias(state, CHALLENGER, None, **entry)
            else:
                self._set_alias(state, CHALLENGER, version, **entry)
            self._write_aliases(model, state)
        log.info("%s v%d: %s", model, version, decision.reason)
        return decision

    def set_alias(self, model: str, alias: str, version: int, reason: str = "") -> None:
        """Point any alias except champion (which only `promote`/`rollback` move) at a version."""
        if alias == CHAMPION:
            raise ValueError("champion moves only through promote (the gate) or rollback")
        _check_name(alias)
        self._verified(model, version)
        with self._alias_lock(model):
            state = self.aliases(model)
            self._set_alias(
                state, alias, version, action="set", forced=False, reason=reason, flow_run_id=None
            )
            self._write_aliases(model, state)

    def rollback(self, model: str, to: int | None = None, reason: str = "") -> int:
        """Point champion back at an earlier version (default: the latest earlier champion)."""
        with self._alias_lock(model):
            state = self.aliases(model)
            current = state["aliases"].get(CHAMPION)
            if current is None:
                raise NotFoundError(f"{model} has no champion to roll back")
            if to is None:
                former = {h["version"] for h in state["history"] if h["alias"] == CHAMPION}
                earlier = sorted(v for v in former if v is not None and v < current)
                if not earlier:
                    raise NotFoundError(f"{model}: no champion before v{current} to roll back to")
                to = earlier[-1]
            if to >= current:
                raise ValueError(f"rollback goes to an earlier version than v{current}, got v{to}")
            self._verified(model, to)
            self._set_alias(
                state,
                CHAMPION,
                to,
                action="rollback",
                forced=False,
                reason=reason or f"rolled back from v{current}",
                flow_run_id=None,
            )
            self._write_aliases(model, state)
        log.info("%s champion rolled back from v%d to v%d", model, current, to)
        return to
