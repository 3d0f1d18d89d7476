"""The Dask task runner of the fan-out stages, its workers reporting to the flow's Prefect API.

prefect-dask runs each task on a worker under the settings of the process that submitted
it (Prefect serialises them with the task). On Prefect's ephemeral server (`posterflow run`
or `demo` with no `PREFECT_API_URL`) those settings name no API, so every worker process
would start a temporary server of its own, and the fan-out's task runs would land in
databases the flow run, the UI and the cache never see. This runner points the settings at
the one server the flow's process already runs before any task is submitted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

log = logging.getLogger(__name__)


@contextlib.contextmanager
def api_url_for_workers() -> Iterator[str | None]:
    """Settings that name this process's Prefect API (the ephemeral server's, if that is it)."""
    if PREFECT_API_URL.value() or not _ephemeral_server_running():
        yield PREFECT_API_URL.value()
        return
    url = SubprocessASGIServer().api_url  # the ephemeral server get_client() started
    log.debug("Dask workers report to this process's ephemeral Prefect API at %s", url)
    with temporary_settings({PREFECT_API_URL: url}):
        yield url


def _ephemeral_server_running() -> bool:
    """Whether this process runs Prefect's ephemeral server (the one behind an unset API URL)."""
    return bool(SubprocessASGIServer().running)


class SharedApiDaskTaskRunner(DaskTaskRunner):
    """prefect-dask's `DaskTaskRunner` whose workers never start Prefect servers of their own."""

    def __enter__(self) -> SharedApiDaskTaskRunner:
        entered = super().__enter__()
        # Entered before the lazily created cluster and client: they are closed first.
        self._exit_stack.enter_context(api_url_for_workers())
        return entered
