"""Demo data: a small MovieGenre.csv-style catalog and posters whose genres are visible.

Each genre paints its own shape in its own colour on the poster, so even a frozen random
backbone yields features a head can learn from, and `posterflow demo` shows a real gain
over chance offline. A few defective rows (empty poster URL, empty genre, a non-numeric
id, a duplicate id, an Adult movie, a missing poster file) show rejects and left-out
posters in the reports, without crossing the catalog's reject tolerance.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from storage.fs import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from PIL.ImageDraw import ImageDraw

#: genre -> (RGB colour, shape). The colour and shape are the signal the model learns.
GENRE_STYLES: dict[str, tuple[tuple[int, int, int], str]] = {
    "Action": ((220, 30, 30), "circle"),
    "Comedy": ((250, 210, 40), "triangle"),
    "Drama": ((40, 70, 200), "rectangle"),
    "Horror": ((20, 20, 20), "cross"),
    "Romance": ((250, 120, 190), "ellipse"),
    "Sci-Fi": ((40, 210, 210), "diamond"),
}
RARE_GENRE = "News"  # a handful of movies: dropped by the rare-genre rule
POSTER_SIZE = (182, 268)  # width, height: the real posters' size
HEADER = ["imdbId", "Imdb Link", "Title", "IMDB Score", "Genre", "Poster"]


@dataclass(frozen=True)
class DemoData:
    """Where the demo catalog and posters were written, and what they contain."""

    csv_path: str
    posters_dir: str
    movies: int
    defective_rows: int


def _draw_shape(draw: ImageDraw, shape: str, box: tuple[int, int, int, int],
                colour: tuple[int, int, int]) -> None:
    """Paint one genre's shape into `box` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "ellipse":
        draw.ellipse((x0, cy - (y1 - y0) // 4, x1, cy + (y1 - y0) // 4), fill=colour)
    elif shape == "rectangle":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == "cross":
        w = (x1 - x0) // 4
        draw.rectangle((cx - w, y0, cx + w, y1), fill=colour)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of circle, ellipse, ...")


def render_poster(genres: list[str], seed: int,
                  boxes: Sequence[tuple[int, int, int, int]] | None = None,
                  quality: int = 90) -> bytes:
    """A JPEG poster with one shape per genre on a noisy background.

    `boxes` places each genre's shape (x0, y0, x1, y1) instead of at random (the behaviour
    tests vary one thing at a time); the background and clutter depend on `seed` only.
    """
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    width, height = POSTER_SIZE
    grey = rng.randint(110, 170)
    image = Image.new("RGB", POSTER_SIZE, (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    for _ in range(12):  # clutter that carries no label
        x, y = rng.randrange(width), rng.randrange(height)
        shade = rng.randint(80, 200)
        draw.line((x, y, rng.randrange(width), rng.randrange(height)), fill=(shade,) * 3, width=2)
    for i, genre in enumerate(genres):
        colour, shape = GENRE_STYLES.get(genre, ((255, 255, 255), "rectangle"))
        size = rng.randint(70, 100)
        x0, y0 = rng.randrange(0, width - size), rng.randrange(0, height - size)
        box = boxes[i] if boxes is not None else (x0, y0, x0 + size, y0 + size)
        _draw_shape(draw, shape, box, colour)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _movie_genres(rng: random.Random, index: int) -> list[str]:
    """One to three genres; a few movies carry the rare genre as well."""
    genres = rng.sample(sorted(GENRE_STYLES), k=rng.choice([1, 1, 2, 2, 3]))
    if index % 97 == 5:
        genres.append(RARE_GENRE)
    return genres


def _row(imdb_id: object, genres: str, poster: str, rng: random.Random) -> list[str]:
    """One CSV row in the original MovieGenre.csv layout."""
    link = f"http://www.imdb.com/title/tt{imdb_id}" if str(imdb_id).isdigit() else ""
    score = f"{rng.uniform(3.0, 9.0):.1f}"
    return [str(imdb_id), link, f"Demo movie {imdb_id} ({2000 + rng.randrange(20)})", score,
            genres, poster]


def make_demo_data(out_dir: str | Path, base_url: str, movies: int = 400,
                   seed: int = 0) -> DemoData:
    """Write `MovieGenre.csv` and `posters/<imdbId>.jpg` under `out_dir`, URLs under `base_url`."""
    if movies < 50:
        raise ValueError(f"the demo needs at least 50 movies to split and learn, got {movies}")
    rng = random.Random(seed)
    out = Path(out_dir)
    posters = out / "posters"
    base = base_url.rstrip("/")
    rows: list[list[str]] = []
    first_id = 1_000_000
    for i in range(movies):
        imdb_id = first_id + i
        genres = _movie_genres(rng, i)
        atomic_write_bytes(posters / f"{imdb_id}.jpg", render_poster(genres, seed * 100_003 + i))
        rows.append(_row(imdb_id, "|".join(genres), f"{base}/{imdb_id}.jpg", rng))
    defects = [
        _row(first_id + movies, "Drama", "", rng),  # empty poster URL
        _row(first_id + movies + 1, "", f"{base}/{first_id + movies + 1}.jpg", rng),  # no genre
        _row("tt-bad", "Comedy", f"{base}/bad.jpg", rng),  # non-numeric id
        _row(first_id, "Action", f"{base}/{first_id}.jpg", rng),  # duplicate id
        _row(first_id + movies + 2, "Adult|Drama", f"{base}/{first_id + movies + 2}.jpg", rng),
        _row(first_id + movies + 3, "Action|Drama", f"{base}/{first_id + movies + 3}.jpg", rng),
    ]  # the last one has no poster file: the mirror answers 404 and fetch reports it
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows + defects)
    csv_path = out / "MovieGenre.csv"
    atomic_write_text(csv_path, buf.getvalue())
    return DemoData(str(csv_path), str(posters), movies, len(defects))
