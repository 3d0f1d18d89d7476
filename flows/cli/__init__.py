"""The `posterflow` command line: parse arguments, build a config, call stage functions.

`app` (app.py) registers the stage commands (stages.py), the registry commands
(registry.py) and the whole-pipeline commands (pipeline.py); output.py prints. Heavy
libraries (TensorFlow, Great Expectations, Prefect) are imported inside the commands that
need them, so `posterflow --help`, `fetch` and `mirror` start fast.
"""

from flows.cli.app import app, main

__all__ = ["app", "main"]
