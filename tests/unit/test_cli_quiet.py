"""Quiet by default, loud on request: TensorFlow's native notices, absl, flow tracebacks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from flows.cli import quiet
from flows.runs import MessageOnly, deterministic_errors
from tasks.catalog import CatalogCheckError

NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796181907.716477    1531 port.cc:153] oneDNN custom operations are on.",
    "I0000 00:00:1796181907.729818    1531 cudart_stub.cc:31] Could not find cuda drivers",
    "E0000 00:00:1796181970.415112    1531 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild",
]
KEPT = [
    "2026-12-02 03:30:16,253 INFO tasks.catalog: catalog x.csv: 406 rows read",
    "Traceback (most recent call last):",
    "/x/site-packages/tf_keras/src/x.py:1: UserWarning: something a person should see",
]


@pytest.mark.parametrize("line", NOTICES)
def test_native_start_up_notices_are_recognised(line: str) -> None:
    assert quiet.NATIVE_NOTICE.match(line)


@pytest.mark.parametrize("line", KEPT)
def test_other_output_is_not_taken_for_a_notice(line: str) -> None:
    assert not quiet.NATIVE_NOTICE.match(line)


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1,
                                 "Task run failed with exception: %r", (exc,), sys.exc_info())


def test_deterministic_failures_are_logged_without_their_traceback() -> None:
    only_message = MessageOnly(deterministic_errors())
    assert not only_message.filter(_record(CatalogCheckError("no genre is carried by >= 10")))
    unexpected = _record(ZeroDivisionError("division by zero"))
    assert only_message.filter(unexpected)
    assert "Traceback" in logging.Formatter().format(unexpected)
    plain = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1,
                              "Finished in state Failed('...')", (), None)
    assert only_message.filter(plain)


def _python(code: str, verbose: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    script = f"from flows.cli import quiet\nquiet.configure({verbose})\n{code}"
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, check=True)


@pytest.mark.slow
def test_tensorflow_starts_quietly_and_loudly_with_verbose() -> None:
    code = ("import sys\nquiet.start_tensorflow()\nprint('kept', file=sys.stderr)\n"
            "import tensorflow as tf\nprint(tf.reduce_sum(tf.ones(3)).numpy())\n"
            "from absl import logging\nlogging.warning('absl wall')\n")
    quiet_run = _python(code, verbose=False)
    assert quiet_run.stdout.strip() == "3.0"
    for tag in ("E0000", "W0000", "I0000", "InitializeLog", "absl wall"):
        assert tag not in quiet_run.stderr, quiet_run.stderr
    assert "kept" in quiet_run.stderr
    loud = _python(code, verbose=True)
    assert "I0000" in loud.stderr and "absl wall" in loud.stderr
