"""Colour selection before grayscale: named colours, HSV ranges, their errors, and the config that holds them."""

import numpy as np
import pytest

from kcaptcha.config import Config
from kcaptcha.data import colours, images

RED, DARK_RED, BLUE, GREEN, ORANGE = (230, 20, 20), (120, 10, 10), (30, 40, 220), (20, 160, 40), (255, 128, 0)
WHITE, GRAY, BLACK, ROSE = (255, 255, 255), (128, 128, 128), (10, 10, 10), (255, 0, 30)


def selected(spec, *pixels):
    return list(colours.mask(np.asarray([pixels], np.float32), spec)[0])


def test_named_colours_select_their_hue_and_nothing_gray():
    assert selected("red", RED, DARK_RED, ROSE, BLUE, GREEN, ORANGE, WHITE, GRAY, BLACK) == \
        [True, True, True, False, False, False, False, False, False]
    assert selected("blue", RED, BLUE, GREEN) == [False, True, False]
    assert selected("black", BLACK, GRAY, RED) == [True, False, False]
    assert selected("red+blue", RED, BLUE, GREEN) == [True, True, False]


def test_hsv_ranges_in_opencv_units_and_hue_wraps_around_red():
    assert selected("hsv:0-20,100-255,80-255", RED, ORANGE, ROSE, BLUE) == [True, True, False, False]
    assert selected("hsv:170-5,100-255,80-255", RED, ROSE, ORANGE) == [True, True, False]
    assert selected("hsv:0-179,0-255,0-60", BLACK, DARK_RED, WHITE) == [True, False, False]


def test_selected_pixels_become_black_and_the_rest_white_as_the_model_input():
    pixels = np.full((20, 40, 3), 255, np.uint8)
    pixels[5:15, 5:15], pixels[5:15, 25:35] = RED, BLUE
    red = images.to_model_input(pixels, 40, 20, preprocessing=images.Preprocessing("red"))
    assert red[5:15, 5:15].max() == 0.0 and red[:, 20:].min() == 1.0 and red[:5].min() == 1.0
    plain = images.to_model_input(pixels, 40, 20)
    assert plain[5:15, 25:35].max() < 0.5  # without the selection, the blue square is dark too


@pytest.mark.parametrize("spec, message", [
    ("mauve", "'mauve' is neither a colour name"),
    ("hsv:0-20,100-255", "needs three ranges"),
    ("hsv:0-200,0-255,0-255", "hue range '0-200' of 'hsv:0-200,0-255,0-255' must lie within 0-179"),
    ("hsv:0-20,200-100,0-255", "saturation range '200-100'"),
    ("hsv:a-b,0-255,0-255", "is not 'LOW-HIGH'"),
    ("red+", "'' is neither"),
])
def test_a_bad_selection_names_the_part_that_is_wrong(spec, message):
    with pytest.raises(ValueError, match="colour") as error:
        colours.parse(spec)
    assert message in str(error.value) and repr(spec) in str(error.value)


def test_config_checks_the_colour_the_gif_frames_and_that_synthetic_captchas_survive_the_selection():
    with pytest.raises(ValueError, match="'mauve' is neither"):
        Config(colour="mauve").validate()
    with pytest.raises(ValueError, match="gif_frames must be one of first, min, max, mean. Received: gif_frames='median'"):
        Config(gif_frames="median").validate()
    with pytest.raises(ValueError, match="--style=colour_decoy"):
        Config(colour="red").validate()
    Config(colour="red", style="colour_decoy", gif_frames="min").validate()
