"""Demo data: MovieGenre.csv layout, defects present, and the genre visible in the pixels."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.demo import GENRE_STYLES, HEADER, make_demo_data, render_poster


def test_demo_catalog_has_the_original_layout_and_a_few_defects(tmp_path):
    data = make_demo_data(tmp_path, "http://127.0.0.1:9/", movies=60, seed=1)
    with open(data.csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER
    body = rows[1:]
    assert len(body) == data.movies + data.defective_rows == 66
    assert sum(1 for r in body if r[5] == "") == 1  # empty poster URL
    assert sum(1 for r in body if r[4] == "") == 1  # no genre
    assert sum(1 for r in body if not r[0].isdigit()) == 1  # non-numeric id
    ids = [r[0] for r in body]
    assert len(ids) - len(set(ids)) == 1  # one duplicate id
    assert all(r[5].startswith("http://127.0.0.1:9/") for r in body if r[5])
    posters = sorted(p.name for p in (tmp_path / "posters").iterdir())
    assert len(posters) == 60  # defects have no poster file, so the mirror answers 404


def test_demo_data_is_deterministic(tmp_path):
    a = make_demo_data(tmp_path / "a", "http://h", movies=50, seed=3)
    b = make_demo_data(tmp_path / "b", "http://h", movies=50, seed=3)
    assert Path(a.csv_path).read_text() == Path(b.csv_path).read_text()
    assert (tmp_path / "a/posters/1000007.jpg").read_bytes() == (
        tmp_path / "b/posters/1000007.jpg").read_bytes()


@pytest.mark.parametrize("genre", sorted(GENRE_STYLES))
def test_each_genre_paints_its_colour(genre):
    colour = np.array(GENRE_STYLES[genre][0], dtype=float)
    image = Image.open(io.BytesIO(render_poster([genre], seed=5))).convert("RGB")
    pixels = np.asarray(image, float)
    close = np.linalg.norm(pixels - colour, axis=-1) < 40
    assert close.mean() > 0.03, f"{genre}: only {close.mean():.3%} of pixels carry its colour"


def test_too_few_movies_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 50"):
        make_demo_data(tmp_path, "http://h", movies=10)
