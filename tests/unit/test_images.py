"""The poster views: each is the region it names, at the backbone's size, in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tasks.images import CORNER_SIDE, VIEWS, poster_view

HEIGHT, WIDTH = 268, 182  # the dev posters' size


def poster(height: int = HEIGHT, width: int = WIDTH) -> tf.Tensor:
    """Pixels whose value says where they are: red grows down the rows, green across."""
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    return tf.constant(np.stack([rows, cols, np.full_like(rows, 128)], axis=-1))


def region(pixels: tf.Tensor, top: int, left: int, side: int) -> np.ndarray:
    """That square of the poster, resized as every view is."""
    square = pixels[top:top + side, left:left + side]
    return tf.image.resize(square, [224, 224], method="bilinear").numpy() / 255.0


@pytest.mark.parametrize(("view", "corner"), [
    ("top_left", (0, 0)), ("top_right", (0, 1)), ("bottom_left", (1, 0)),
    ("bottom_right", (1, 1))])
def test_a_corner_view_is_that_corner_of_the_poster_seen_closer(
        view: str, corner: tuple[int, int]) -> None:
    pixels = poster()
    side = int(WIDTH * CORNER_SIDE)
    top, left = corner[0] * (HEIGHT - side), corner[1] * (WIDTH - side)
    np.testing.assert_allclose(poster_view(pixels, view).numpy(),
                               region(pixels, top, left, side), atol=1e-6)


def test_top_and_bottom_are_the_first_and_last_squares() -> None:
    pixels = poster()
    np.testing.assert_allclose(poster_view(pixels, "top").numpy(),
                               region(pixels, 0, 0, WIDTH), atol=1e-6)
    np.testing.assert_allclose(poster_view(pixels, "bottom").numpy(),
                               region(pixels, HEIGHT - WIDTH, 0, WIDTH), atol=1e-6)


@pytest.mark.parametrize("shape", [(HEIGHT, WIDTH), (WIDTH, HEIGHT), (40, 40), (3, 500), (1, 1)])
def test_every_view_of_any_shape_is_the_backbone_input(shape: tuple[int, int]) -> None:
    pixels = poster(*shape)
    for view in VIEWS:
        image = poster_view(pixels, view).numpy()
        assert image.shape == (224, 224, 3), view
        assert image.min() >= 0.0 and image.max() <= 1.0, view


def test_an_unknown_view_is_named() -> None:
    with pytest.raises(ValueError, match="unknown view 'middle'"):
        poster_view(poster(), "middle")  # type: ignore[arg-type]
