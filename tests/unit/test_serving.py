"""storage.serving: TF Serving's models.config for the aliased versions, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.serving import serving_config, write_serving_config


def test_serving_config_lists_aliased_versions_once_and_labels_each_alias() -> None:
    text = serving_config("posterflow", "/srv/registry/posterflow",
                          {"stable": 1, "champion": 3, "canary": 3})
    assert text == (
        "model_config_list {\n"
        "  config {\n"
        '    name: "posterflow"\n'
        '    base_path: "/srv/registry/posterflow"\n'
        '    model_platform: "tensorflow"\n'
        "    model_version_policy {\n"
        "      specific {\n"
        "        versions: 1\n"
        "        versions: 3\n"
        "      }\n"
        "    }\n"
        '    version_labels { key: "canary" value: 3 }\n'
        '    version_labels { key: "champion" value: 3 }\n'
        '    version_labels { key: "stable" value: 1 }\n'
        "  }\n"
        "}\n"
    )


def test_write_serving_config_uses_an_absolute_base_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_serving_config("registry/posterflow", "posterflow", {"champion": 2})
    written = (tmp_path / "registry" / "posterflow" / "models.config").read_text()
    assert path == "registry/posterflow/models.config"
    assert f'base_path: "{tmp_path / "registry" / "posterflow"}"' in written
    assert written == serving_config("posterflow", str(tmp_path / "registry" / "posterflow"),
                                     {"champion": 2})
