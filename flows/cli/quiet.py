"""Quiet by default, loud on request: TensorFlow's native logs and absl's warnings.

Set by the entry point (`app.py`'s root options), never by a library module at import:
`configure(verbose)` before any command runs, then `start_tensorflow()` at the start of
each command that runs TensorFlow, before anything else imports it. `-v` leaves both
untouched, so every native line and absl warning shows.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

# TensorFlow's native start-up notices: absl lines (`I0000 00:00:... port.cc:153] ...`)
# written before TensorFlow applies TF_CPP_MIN_LOG_LEVEL, absl's banner about them, and
# the CPU feature notice's second line.
NATIVE_NOTICE = re.compile(
    r"^(?:[IWE]\d{4} \d\d:\d\d:\S+ +\d+ \S+:\d+\] |WARNING: All log messages before "
    r"absl::InitializeLog\(\) is called|To enable the following instructions: )"
)

_verbose = True  # until configure() says otherwise: library use stays untouched


def configure(verbose: bool) -> None:
    """Entry-point log levels for TensorFlow's C++ side and absl; nothing when verbose.

    TF_CPP_MIN_LOG_LEVEL 3 (errors hidden too, not 2): without a GPU driver TensorFlow
    logs the expected cuInit failure (`E0000 ... UNKNOWN ERROR (303)`) as an error, and
    its real errors reach Python as exceptions. absl's Python logger carries the SavedModel
    export's warning that lists every renamed input name (thousands of characters).
    """
    global _verbose
    _verbose = verbose
    if not verbose:
        from absl import logging as absl_logging  # small; TensorFlow's own dependency

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        absl_logging.set_verbosity(absl_logging.ERROR)


def start_tensorflow() -> None:
    """Import TensorFlow and list its devices with fd 2 captured; replay all but notices.

    The notices TensorFlow's native libraries write while loading (oneDNN, no CUDA driver)
    come before TF_CPP_MIN_LOG_LEVEL applies, so only filtering the stream removes them;
    anything else written meanwhile (a Python warning, a real error) is replayed.
    """
    if _verbose or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not NATIVE_NOTICE.match(line)))
