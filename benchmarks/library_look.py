"""The `captcha` library's drawing of a captcha's characters, redone so benchmarks can see and move them,
and its noise, which they can leave out."""

import contextlib


@contextlib.contextmanager
def drawing(records=None, apart: bool = False, without_noise=()):
    """While open, the `captcha` library pastes characters with `recording_create_captcha_image(records,
    apart)` (when either is asked for), and draws each noise named in `without_noise` ("dots", "curve") on a
    copy: the image keeps none of it, and the same random numbers are drawn."""
    from captcha import image as captcha_image

    cls = captcha_image.ImageCaptcha
    saved = {name: cls.__dict__[name] for name in ("create_captcha_image", "create_noise_dots", "create_noise_curve")}
    try:
        if records is not None or apart:
            cls.create_captcha_image = recording_create_captcha_image([] if records is None else records, apart)
        for noise in without_noise:
            setattr(cls, f"create_noise_{noise}", _on_a_copy(saved[f"create_noise_{noise}"].__func__))
        yield
    finally:
        for name, method in saved.items():
            setattr(cls, name, method)


def _on_a_copy(method):
    """A static noise method that draws on a copy of the image and returns the image untouched."""

    def draw_on_copy(image, *args, **kwargs):
        method(image.copy(), *args, **kwargs)
        return image

    return staticmethod(draw_on_copy)


def recording_create_captcha_image(records: list, apart: bool = False):
    """`ImageCaptcha.create_captcha_image` of captcha 0.7, unchanged in what it draws and in the random
    numbers it takes, that also appends each character's ink mask and position to `records`. With `apart`,
    each character is pasted 2 pixels after the last one's box instead of stepping back over it (the same
    random numbers are drawn, and the text is squeezed to the width as the library squeezes wide text)."""
    import numpy as np
    from captcha import image as captcha_image

    def create_captcha_image(self, chars, color, background):
        secrets = captcha_image.secrets  # kcaptcha's seeded stand-in while rendering
        image = captcha_image.createImage("RGB", (self._width, self._height), background)
        draw = captcha_image.Draw(image)
        images, is_character = [], []
        for c in chars:
            if secrets.randbits(32) / (2**32) > self.word_space_probability:
                images.append(self._draw_character(" ", draw, color))
                is_character.append(False)
            images.append(self._draw_character(c, draw, color))
            is_character.append(True)
        text_width = sum([im.size[0] for im in images])
        average = int(text_width / len(chars))
        width = max(text_width, self._width)
        if apart:  # room for the left margin and the gaps
            width = max(text_width + int(average * 0.1) + 2 * len(images), self._width)
        image = image.resize((width, self._height))
        rand = int(self.word_offset_dx * average)
        offset = int(average * 0.1)
        inks = []
        for im, character in zip(images, is_character):
            w, h = im.size
            mask = im.convert("L").point(self.lookup_table)
            top = int((self._height - h) / 2)
            image.paste(im, (offset, top), mask)
            if character:
                inks.append((offset, top, np.asarray(mask) >= 128))
            step_back = secrets.randbelow(rand + 1)
            offset = offset + w + (2 if apart else -step_back)
        records.append((width, self._height, inks))
        if width > self._width:
            image = image.resize((self._width, self._height))
        return image

    return create_captcha_image
