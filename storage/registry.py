"""Model registry: immutable, integer-numbered SavedModel versions in TF Serving's layout.

```
<root>/<model>/<version>/    saved_model.pb  variables/  assets/  registry.json
<root>/<model>/aliases.json  {"aliases": {"champion": 3, ...}, "history": [...]}
<root>/<model>/models.config TF Serving's config for the aliased versions (`storage.serving`)
<root>/<model>/.lock         (local roots: serialises alias read-modify-write)
<root>/<model>/<version>/.claim.json        (object stores: who allocated the number)
<root>/<model>/.aliases/<generation>.json   (object stores: every alias state, numbered)
```

This module reads versions, publishes them and edits aliases; how each write is made atomic
on a local folder or an object store is its backend's (`storage.registry_backends`), the
alias state is `storage.aliases`', the exported folder's layout `storage.model_export`'s,
and which version deserves `champion` is the promotion policy's (`tasks.promotion`),
decided inside `update_aliases`.

Every file's sha256 is recorded at registration, with the export's content digest (the
hashes of its files): `verify` re-hashes, a version that fails it is never promoted, rolled
back to, or returned by `path`/`load`, and publishing an export the registry already holds
returns that version instead of a new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from storage.aliases import ALIAS_ATTEMPTS, CHAMPION, AliasChanges, AliasConflict
from storage.fs import list_files, sha256_file, url_to_fs
from storage.layout import DEFAULT_MODEL_NAME
from storage.model_export import ExportedModel
from storage.registry_backends import CLAIM, METADATA, backend_for
from storage.registry_files import (
    CorruptRegistry,
    RegistryError,
    check_name,
    read_registry_json,
    utc_now,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


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
    reused: bool = False  # `publish` found this export already registered as this version

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
        self.backend = backend_for(self.fs, self.root)

    # --- reading ---------------------------------------------------------------------

    def _model_dir(self, model: str) -> str:
        return f"{self._root.rstrip('/')}/{check_name(model)}"

    def _url(self, path: str) -> str:
        return self.backend.url(path)

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
        return self.backend.read_aliases(self._model_dir(model))

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
        `storage.local_cache`, checked against its recorded checksums once, on arrival.
        """
        info = self.verified(model, self.resolve(model, ref))
        return self.backend.local_path(info.path, info.metadata)

    def load(self, model: str, ref: str | int = CHAMPION) -> Any:
        """`tf.saved_model.load` of a verified version."""
        import tensorflow as tf

        return tf.saved_model.load(self.local_path(model, ref))

    def find_export(self, model: str, digest: str) -> VersionInfo | None:
        """The registered version whose files have this content digest, if any."""
        for version in self.versions(model):
            with contextlib.suppress(CorruptRegistry):
                info = self.info(model, version)
                if content_digest(info.metadata["files"]) == digest:
                    return info
        return None

    def publish(
        self,
        export: ExportedModel,
        model: str = DEFAULT_MODEL_NAME,
        *,
        test_split: str,
        flow_run_id: str | None = None,
    ) -> VersionInfo:
        """Add an exported model as the next version (no alias moves: see `tasks.promotion`).

        An export whose files the registry already holds (same content digest) is not
        published again: that version is returned, marked `reused`.
        """
        held = self.find_export(model, content_digest(export.files))
        if held is not None:
            log.info("%s v%d already holds %s: not registered again", model, held.version,
                     export.source)
            return replace(held, reused=True)
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
        version = self.backend.publish(export.source, self._model_dir(model), meta,
                                       lambda: self._folder_numbers(model))
        log.info("registered %s v%d from %s", model, version, export.source)
        return self.info(model, version)

    @contextlib.contextmanager
    def editing_aliases(self, model: str) -> Iterator[AliasChanges]:
        """Read-modify-write a model's aliases once (prefer `update_aliases`, which retries).

        Committed by the backend when the block moved an alias and raised nothing (local: under
        the model's lock; object stores: a compare-and-swap raising AliasConflict when another
        writer changed the aliases meanwhile), then `on_alias_change` hears of the moves.
        """
        with self.backend.editing(model, self._model_dir(model)) as changes:
            before = len(changes.state["history"])
            yield changes
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

    def set_alias(self, model: str, alias: str, version: int, *, action: str = "set",
                  reason: str = "", flow_run_id: str | None = None) -> None:
        """Point an alias at a verified version (which alias may move is the caller's policy)."""
        check_name(alias, "alias")
        self.verified(model, version)
        self.update_aliases(model, lambda aliases: aliases.move(
            alias, version, action=action, reason=reason, flow_run_id=flow_run_id))


def content_digest(files: dict[str, Any]) -> str:
    """One hash of a model's files (relative path, size, sha256), the registry's own aside."""
    lines = sorted(f"{rel}\t{f['bytes']}\t{f['sha256']}" for rel, f in files.items()
                   if rel not in (METADATA, CLAIM))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
