"""The names of the poster views a model can see (cut by `tasks.images`).

Apart from the cutting code so that the config models can name views without importing
what reads shards (tf.data, pandas).
"""

from __future__ import annotations

from typing import Literal, get_args

View = Literal["full", "flip", "top", "bottom", "pad", "top_left", "top_right", "bottom_left",
               "bottom_right"]
CORNERS: tuple[View, ...] = ("top_left", "top_right", "bottom_left", "bottom_right")
VIEWS: tuple[View, ...] = get_args(View)
DEFAULT_VIEWS: tuple[View, ...] = ("full", "top", "bottom", *CORNERS)
