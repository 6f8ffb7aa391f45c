"""The `captcha` library's drawing of a captcha's characters, redone so benchmarks can see and move them."""


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
