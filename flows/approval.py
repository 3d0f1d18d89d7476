"""A reviewer's approval before promotion: the flow pauses with a typed form in the Prefect UI.

With `registry.approval: required` the train flow registers the candidate as challenger, then
calls `request_review` from the flow itself (Prefect pauses flows, not tasks). The UI's
Resume dialog shows the card's headline table and its path, and a form of `Review`'s fields;
`prefect.flow_runs.resume_flow_run(id, run_input={"approve": true, "reason": "..."})` does
the same through the API. A timeout returns None: the version stays challenger (Prefect marks
the paused run Failed, "The flow was completed and never resumed"; a parent run completes).
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

POLL_S = 2  # how often the paused flow asks the server whether it was resumed


class Review(RunInput):
    """The reviewer's decision on a challenger."""

    approve: bool = Field(False, description="Approve: the promotion gate then decides.")
    reason: str = Field("", description="Why (recorded in the registry's alias history).")
    force: bool = Field(False, description="Promote even if the gate refuses (recorded as "
                        "forced).")


def request_review(description: str, timeout_s: int) -> Review | None:
    """Pause the current flow run until a reviewer resumes it with a `Review`; None on timeout."""
    try:
        return pause_flow_run(
            wait_for_input=Review.with_initial_data(description=description),
            timeout=timeout_s, poll_interval=POLL_S, key="model-review")
    except FlowPauseTimeout:
        get_run_logger().warning("no review within %d s: the version stays challenger", timeout_s)
        return None
