"""StageCache on real Prefect tasks: content keys, outputs that must still exist, generations."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows.caching import StageCache, file_digest, missing_outputs
from storage.fs import atomic_write_text, sha256_file

CALLS: list[str] = []


@task(persist_result=True, cache_policy=StageCache(content={"src": file_digest},
                                                   stale=missing_outputs(lambda out: [out])))
def shout(src: str, out_dir: str) -> str:
    """Upper-case a file into a content-named output (a stand-in for a stage)."""
    CALLS.append(src)
    out = f"{out_dir}/{sha256_file(src)[:12]}.txt"
    atomic_write_text(out, Path(src).read_text().upper())
    return out


@flow
def shout_flow(src: str, out_dir: str) -> str:
    return shout(src, out_dir)


def test_cache_follows_content_and_outputs(harness, tmp_path):
    CALLS.clear()
    src, out_dir = tmp_path / "in.txt", str(tmp_path / "out")
    src.write_text("drama")
    first = shout_flow(str(src), out_dir)
    assert shout_flow(str(src), out_dir) == first and len(CALLS) == 1  # same content: cached

    src.write_text("horror")  # same path, new content: runs again
    second = shout_flow(str(src), out_dir)
    assert second != first and Path(second).read_text() == "HORROR" and len(CALLS) == 2

    Path(second).unlink()  # the cached result names an output that is gone: runs again
    assert shout_flow(str(src), out_dir) == second and Path(second).is_file()
    assert len(CALLS) == 3
    assert shout_flow(str(src), out_dir) == second and len(CALLS) == 3  # cached again

    src.write_text("drama")  # back to the first content: its record is still valid
    assert shout_flow(str(src), out_dir) == first and len(CALLS) == 3
