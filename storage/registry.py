"""Model registry: immutable, integer-numbered SavedModel versions in TF Serving's layout.

```
<root>/<model>/<version>/    saved_model.pb  variables/  assets/  registry.json
<root>/<model>/aliases.json  {"aliases": {"champion": 3, ...}, "history": [...]}
<root>/<model>/models.config TF Serving's config for the aliased versions (`storage.serving`)
<root>/<model>/.lock         (local roots: serialises alias read-modify-write)
<root>/<model>/<version>/.claim.json        (object stores: who allocated the number)
<root>/<model>/.aliases/<generation>.json   (object stores: every alias state, numbered)
```

This module publishes versions and moves aliases; which version deserves `champion` is
the promotion policy's decision (`tasks.promotion`), made in `update_aliases`.

What is atomic where:
- Local/POSIX root (the default): a version is copied into a hidden staging folder
  (`.tmp-*`, ignored by TF Serving and by this module), its checksums are recorded in
  `registry.json` inside it, it is fsynced, and one `rename` publishes it. The rename is
  also the version allocation: renaming onto an existing, non-empty version fails, so the
  writer retries with the next number and concurrent registrations never share one.
  Alias updates are read-modify-write under an `fcntl` lock, written temp + rename.
- Object stores (s3://, gs://, memory://): there is no folder rename and no lock, so
  both writes use the store's conditional create (`storage.fs.create_exclusive`: S3
  `If-None-Match: *`, GCS `ifGenerationMatch=0`). A version number is allocated by
  creating `<version>/.claim.json` only-if-absent (the loser tries the next number), the
  files are uploaded, and `registry.json` is written last, as the commit marker: readers
  ignore versions without it (TF Serving serves only the versions `models.config` names).
  An alias change is a compare-and-swap: the new state is created as the next numbered
  `.aliases/<generation>.json`; when another writer took that generation the edit is
  re-run on the newer state. `aliases.json` and `models.config` are then rewritten from
  the newest generation (re-checked after writing, so the last write is never stale).
  A store without conditional creates is refused (UnsafeStoreError), never raced.
  A killed registration leaves a claim without `registry.json`: its number is skipped.

Every file's sha256 is recorded at registration; `verify` re-hashes, and a version that
fails it is never promoted, rolled back to, or returned by `path`/`load`.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from fsspec.implementations.local import LocalFileSystem

from storage.fs import (
    TEMP_PREFIX,
    ExclusiveCreateUnsupported,
    atomic_write_json,
    copy_tree_hashed,
    create_exclusive,
    fsync_path,
    fsync_tree,
    list_files,
    read_bytes,
    read_json,
    sha256_bytes,
    sha256_file,
    temp_name,
    url_to_fs,
)
from storage.layout import DEFAULT_MODEL_NAME
from storage.local_cache import Expected, local_copy
from storage.serving import write_serving_config

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
METADATA = "registry.json"
ALIASES = "aliases.json"
CLAIM = ".claim.json"  # object stores: created only-if-absent to allocate a version number
GENERATIONS = ".aliases"  # object stores: <generation>.json, each alias state created once
ALIAS_ATTEMPTS = 32  # compare-and-swap retries before an alias edit gives up
T = TypeVar("T")
REQUIRED_FILES = (
    "saved_model.pb",
    "variables/variables.index",
    "assets/labels.json",
    "assets/thresholds.json",
    "assets/metrics.json",
    "assets/lineage.json",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
STALE_STAGING_S = 24 * 3600  # staging folders older than this belong to killed writers


class RegistryError(Exception):
    """Base class for registry failures that a caller can report without a traceback."""


class InvalidModelError(RegistryError):
    """The folder given to `read_export` (to register) is not a complete exported model."""


class NotFoundError(RegistryError):
    """No such model, version or alias."""


class CorruptVersionError(RegistryError):
    """A registered version no longer matches the checksums recorded at registration."""


class CorruptRegistry(RegistryError):
    """A registry file (registry.json, aliases.json, an alias generation) is damaged."""


class UnsafeStoreError(RegistryError):
    """The store offers no conditional create, so concurrent writers could collide."""


class AliasConflict(RegistryError):
    """Another writer changed the aliases between this edit's read and its write."""


def read_registry_json(url: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The one reader of registry JSON: a JSON object with `required` keys, else CorruptRegistry.

    FileNotFoundError passes through (absence is not damage); anything unreadable, truncated,
    empty or of the wrong shape is reported naming the file.
    """
    try:
        body = read_json(url)
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise CorruptRegistry(f"{url} is damaged: not valid JSON ({e})") from e
    if not isinstance(body, dict):
        raise CorruptRegistry(f"{url} is damaged: expected a JSON object, "
                              f"found {type(body).__name__}")
    missing = [key for key in required if key not in body]
    if missing:
        raise CorruptRegistry(f"{url} is damaged: missing {', '.join(missing)}")
    return body


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
        """The key of the test split its test metrics were measured on (set at publishing)."""
        return str(self.metadata["test_split"])

    @property
    def lineage(self) -> dict[str, Any]:
        return dict(self.metadata["lineage"])


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


def _check_name(name: str, kind: str = "model name") -> str:
    """Model and alias names become folder names and keys: no slashes, no leading dot."""
    if not _NAME.match(name):
        raise ValueError(f"{kind} must match {_NAME.pattern}, got {name!r}")
    return name


@dataclass(frozen=True)
class ExportedModel:
    """A complete exported model folder (`tasks.export`'s layout) and its assets."""

    source: str  # the folder as given: a local path or fsspec URL
    metrics: dict[str, Any]
    lineage: dict[str, Any]


def read_export(model_dir: str | os.PathLike[str]) -> ExportedModel:
    """Check an exported model folder; InvalidModelError naming what is missing or malformed."""
    fs, src = url_to_fs(model_dir)
    src = src.rstrip("/")
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
    return ExportedModel(str(model_dir), metrics, lineage)


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


@dataclass
class AliasChanges:
    """A model's aliases.json being edited under its lock; every move is recorded."""

    state: dict[str, Any]  # {"aliases": {name: version}, "history": [...]}
    changed: bool = False

    def get(self, alias: str) -> int | None:
        """The version an alias points at, if any."""
        version = self.state["aliases"].get(alias)
        return None if version is None else int(version)

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.state["history"])

    def move(
        self,
        alias: str,
        version: int | None,
        *,
        action: str,
        reason: str,
        forced: bool = False,
        flow_run_id: str | None = None,
    ) -> None:
        """Point (or with None, drop) an alias and append the change to the history."""
        aliases = self.state["aliases"]
        previous = aliases.get(alias)
        if version is None:
            aliases.pop(alias, None)
        else:
            aliases[alias] = version
        entry = {"action": action, "forced": forced, "reason": reason, "flow_run_id": flow_run_id}
        self.state["history"].append(
            {"at": utc_now(), "alias": alias, "version": version, "previous": previous, **entry}
        )
        self.changed = True


AliasListener = Callable[["Registry", str, list[dict[str, Any]]], None]


class Registry:
    """A registry rooted at a local folder (default) or any fsspec URL.

    `on_alias_change(registry, model, entries)` is called after every alias write with the
    history entries it added (the flows emit Prefect events from it: `flows.events`).
    """

    def __init__(self, root: str | os.PathLike[str],
                 on_alias_change: AliasListener | None = None) -> None:
        self.root = str(root)
        self.on_alias_change = on_alias_change
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
        self.fs.invalidate_cache(mdir)  # other machines write here: never trust a listing cache
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
            meta = read_registry_json(self._url(f"{path}/{METADATA}"),
                                      ("files", "metrics", "lineage", "test_split"))
        except FileNotFoundError as e:
            raise NotFoundError(f"{model} has no registered version {version} ({path})") from e
        return VersionInfo(model, version, self._url(path), meta)

    def aliases(self, model: str) -> dict[str, Any]:
        """The alias state: {"aliases": {name: version}, "history": [...]}."""
        if self.local:
            return self._read_aliases(self._url(f"{self._model_dir(model)}/{ALIASES}"))
        return self._alias_generation(model)[1]

    @staticmethod
    def _read_aliases(url: str) -> dict[str, Any]:
        try:
            state = read_registry_json(url, ("aliases", "history"))
        except FileNotFoundError:
            return {"aliases": {}, "history": []}
        if not isinstance(state["aliases"], dict) or not isinstance(state["history"], list):
            raise CorruptRegistry(f"{url} is damaged: expected an aliases mapping and a "
                                  "history list")
        return state

    def _alias_generation(self, model: str) -> tuple[int, dict[str, Any]]:
        """(newest generation number, its state) on an object store; 0 = aliases.json or none."""
        gdir = f"{self._model_dir(model)}/{GENERATIONS}"
        self.fs.invalidate_cache(gdir)
        names = self.fs.ls(gdir, detail=False) if self.fs.isdir(gdir) else []
        numbers = [int(n) for n in (p.rstrip("/").rpartition("/")[2].removesuffix(".json")
                                    for p in names) if n.isdigit()]
        if not numbers:
            return 0, self._read_aliases(self._url(f"{self._model_dir(model)}/{ALIASES}"))
        newest = max(numbers)
        return newest, self._read_aliases(self._url(self._generation_path(model, newest)))

    def _generation_path(self, model: str, generation: int) -> str:
        return f"{self._model_dir(model)}/{GENERATIONS}/{generation:012d}.json"

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
        try:
            info = self.info(model, version)
        except CorruptRegistry as e:
            return VerifyResult(model, version, (str(e),))
        vdir = f"{self._model_dir(model)}/{version}"
        recorded: dict[str, dict[str, Any]] = info.metadata["files"]
        actual = list_files(self._url(vdir))
        actual.pop(METADATA, None)
        actual.pop(CLAIM, None)
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
            elif (got := sha256_file(self._url(f"{vdir}/{rel}"))) != want["sha256"]:
                problems.append(f"{rel}: sha256 mismatch (expected {want['sha256']}, got {got})")
        return VerifyResult(model, version, tuple(problems))

    def verified(self, model: str, version: int) -> VersionInfo:
        """The version's info, or CorruptVersionError when it fails `verify`."""
        result = self.verify(model, version)
        if not result.ok:
            raise CorruptVersionError(
                f"{model} v{version} failed verification: {'; '.join(result.problems)}"
            )
        return self.info(model, version)

    def path(self, model: str, ref: str | int = CHAMPION) -> str:
        """Folder (local path or URL) of a verified version, e.g. the champion, for serving."""
        return self.verified(model, self.resolve(model, ref)).path

    def local_path(self, model: str, ref: str | int = CHAMPION) -> str:
        """A local folder TensorFlow can load holding a verified version.

        Local roots: the version itself. Object stores: this machine's copy in
        `storage.local_cache`, keyed by the sha256 of the version's registry.json and
        checked against its recorded checksums once, on arrival.
        """
        info = self.verified(model, self.resolve(model, ref))
        if self.local:
            return info.path
        listing = {METADATA: read_bytes(f"{info.path}/{METADATA}")}
        files = {rel: Expected(int(f["bytes"]), str(f["sha256"]))
                 for rel, f in info.metadata["files"].items()}
        return str(local_copy("models", sha256_bytes(listing[METADATA]), info.path, files,
                              listing))

    def load(self, model: str, ref: str | int = CHAMPION) -> Any:
        """`tf.saved_model.load` of a verified version."""
        import tensorflow as tf

        return tf.saved_model.load(self.local_path(model, ref))

    # --- writing ---------------------------------------------------------------------

    def publish(
        self,
        export: ExportedModel,
        model: str = DEFAULT_MODEL_NAME,
        *,
        test_split: str,
        flow_run_id: str | None = None,
    ) -> VersionInfo:
        """Add an exported model as the next version (no alias moves: see `tasks.promotion`)."""
        meta = {
            "format": 1,
            "model": model,
            "created_at": utc_now(),
            "source": export.source,
            "flow_run_id": flow_run_id,
            "metrics": export.metrics,
            "lineage": export.lineage,
            "test_split": test_split,
        }
        publish = self._publish_local if self.local else self._publish_remote
        version = publish(export.source, model, meta)
        log.info("registered %s v%d from %s", model, version, export.source)
        return self.info(model, version)

    def _publish_local(self, src: str, model: str, meta: dict[str, Any]) -> int:
        """Stage, checksum, fsync, then rename to the next free number (the allocation)."""
        mdir = self._model_dir(model)
        os.makedirs(mdir, exist_ok=True)
        _remove_stale_staging(mdir)
        staging = temp_name(f"{mdir}/version")
        try:
            meta["files"] = copy_tree_hashed(src, staging)
            atomic_write_json(f"{staging}/{METADATA}", meta)
            fsync_tree(staging)
            while True:
                version = max(self._folder_numbers(model), default=0) + 1
                try:
                    os.rename(staging, f"{mdir}/{version}")
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    log.debug("%s v%d was taken by another writer, trying the next", model, version)
                    continue
                fsync_path(mdir)
                return version
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish_remote(self, src: str, model: str, meta: dict[str, Any]) -> int:
        """Claim the next free number, upload into it, `registry.json` last."""
        version = self._claim_version(model)
        vdir = self._url(f"{self._model_dir(model)}/{version}")
        meta["files"] = copy_tree_hashed(src, vdir)
        atomic_write_json(f"{vdir}/{METADATA}", meta)
        return version

    def _claim_version(self, model: str) -> int:
        """Allocate a version number by creating its claim only-if-absent (many writers)."""
        claim = json.dumps({"claimed_at": utc_now(), "host": socket.gethostname(),
                            "pid": os.getpid()}).encode()
        version = max(self._folder_numbers(model), default=0) + 1
        while not self._create(f"{self._model_dir(model)}/{version}/{CLAIM}", claim):
            log.debug("%s v%d was claimed by another writer, trying the next", model, version)
            version += 1
        return version

    def _create(self, path: str, data: bytes) -> bool:
        """`create_exclusive`, with a store that cannot do it refused as UnsafeStoreError."""
        try:
            return create_exclusive(self._url(path), data)
        except ExclusiveCreateUnsupported as e:
            raise UnsafeStoreError(f"cannot write the registry at {self.root} safely: {e}") from e

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

    @contextlib.contextmanager
    def editing_aliases(self, model: str) -> Iterator[AliasChanges]:
        """Read-modify-write a model's aliases once (prefer `update_aliases`, which retries).

        Local roots: under the model's lock. Object stores: a compare-and-swap that raises
        AliasConflict when another writer changed the aliases meanwhile. When the block moved
        an alias (and raised nothing), aliases.json is written, then the TF Serving config.
        """
        if self.local:
            with self._alias_lock(model):
                changes = AliasChanges(self.aliases(model))
                before = len(changes.state["history"])
                yield changes
                if changes.changed:
                    self._write_alias_files(model, changes.state)
        else:
            generation, state = self._alias_generation(model)
            changes = AliasChanges(copy.deepcopy(state))
            before = len(changes.state["history"])
            yield changes
            if changes.changed:
                body = (json.dumps(changes.state, indent=2, sort_keys=True, default=str) + "\n")
                if not self._create(self._generation_path(model, generation + 1), body.encode()):
                    raise AliasConflict(f"{model}: aliases changed by another writer "
                                        f"(generation {generation + 1} exists)")
                self._mirror_newest_aliases(model)
        if changes.changed and self.on_alias_change is not None:
            self.on_alias_change(self, model, changes.state["history"][before:])

    def update_aliases(self, model: str, edit: Callable[[AliasChanges], T]) -> T:
        """Apply `edit` to the current aliases and commit it, re-running it after a conflict.

        `edit` must decide from the state it is given (it may run several times).
        """
        for attempt in range(ALIAS_ATTEMPTS):
            try:
                with self.editing_aliases(model) as changes:
                    return edit(changes)
            except AliasConflict:
                time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
        raise RegistryError(f"{model}: gave up updating aliases after {ALIAS_ATTEMPTS} "
                            "conflicting concurrent updates")

    def _write_alias_files(self, model: str, state: dict[str, Any]) -> None:
        """aliases.json, then the TF Serving config of the aliased versions."""
        mdir = self._url(self._model_dir(model))
        atomic_write_json(f"{mdir}/{ALIASES}", state)
        write_serving_config(mdir, model, state["aliases"])

    def _mirror_newest_aliases(self, model: str) -> None:
        """Rewrite aliases.json and models.config from the newest generation until none newer.

        Every writer re-checks after writing, so a stale write is always followed by a fresh one.
        """
        written = -1
        while True:
            generation, state = self._alias_generation(model)
            if generation == written:
                return
            self._write_alias_files(model, state)
            written = generation

    def set_alias(self, model: str, alias: str, version: int, reason: str = "") -> None:
        """Point any alias except champion (moved only by the gate or `rollback`) at a version."""
        if alias == CHAMPION:
            raise ValueError("champion moves only through promote (the gate) or rollback")
        _check_name(alias, "alias")
        self.verified(model, version)
        self.update_aliases(model, lambda aliases: aliases.move(alias, version, action="set",
                                                                  reason=reason))

    def rollback(self, model: str, to: int | None = None, reason: str = "") -> int:
        """Point champion back at an earlier version (default: the latest earlier champion)."""

        def edit(aliases: AliasChanges) -> tuple[int, int]:
            current = aliases.get(CHAMPION)
            if current is None:
                raise NotFoundError(f"{model} has no champion to roll back")
            target = to
            if target is None:
                former = {h["version"] for h in aliases.history if h["alias"] == CHAMPION}
                earlier = sorted(v for v in former if v is not None and v < current)
                if not earlier:
                    raise NotFoundError(f"{model}: no champion before v{current} to roll back to")
                target = earlier[-1]
            if target >= current:
                raise ValueError(f"rollback goes to an earlier version than v{current}, "
                                 f"got v{target}")
            self.verified(model, target)
            aliases.move(CHAMPION, target, action="rollback",
                         reason=reason or f"rolled back from v{current}")
            return current, target

        current, target = self.update_aliases(model, edit)
        log.info("%s champion rolled back from v%d to v%d", model, current, target)
        return target
