"""Names of run folders and run reports: sortable by start time, unique across processes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


def new_run_id(label: str = "") -> str:
    """`<UTC time to the microsecond>-<8 random hex>[-<label>]`: sorts by start, never collides."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}" + (f"-{label}" if label else "")
