"""What `run` and `demo` say about the registration: a new version, or nothing new."""

from __future__ import annotations

from flows.cli.output import registered_line
from flows.runs import RunSummary

SUMMARY = {"registry_path": "/r/posterflow/3", "version": 3, "alias": "champion"}


def test_a_cached_register_task_means_nothing_new_was_registered() -> None:
    fresh = RunSummary("id", "Completed", [("register-model-0", "Completed")])
    cached = RunSummary("id", "Completed", [("fit-model-0", "Cached"),
                                            ("register-model-0", "Cached")])
    assert not fresh._registered_before() and cached._registered_before()


def test_the_registered_line_says_which_version_or_nothing_new() -> None:
    assert registered_line({**SUMMARY, "new_version": True}) == (
        "registered:  /r/posterflow/3 (v3, champion)")
    assert registered_line({**SUMMARY, "new_version": False, "alias": ""}) == (
        "nothing new registered: /r/posterflow/3 (v3, no alias) already holds this model")
