"""Contact sheets: captchas in a grid, each with a caption (the benchmarks' error and reading sheets)."""

from typing import Optional, Sequence, Tuple


def contact_sheet(cells: Sequence[Tuple[object, str]], image_size: Tuple[int, int], columns: int = 4,
                  title: Optional[str] = None, caption_above: bool = False, caption_color: str = "red",
                  keep_aspect: bool = False):
    """An RGB sheet of `cells`, (image path or PIL image, caption) pairs, `columns` to a row.

    Each image is resized to `image_size` (fitted inside it with `keep_aspect`), its caption drawn below it
    (above with `caption_above`); `title`, if any, heads the sheet.
    """
    from PIL import Image, ImageDraw

    width, height = image_size
    cell_w, cell_h, top = width + 10, height + 26, 20 if title else 0
    rows = -(-len(cells) // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h + top), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 4), title, fill="black")
    for k, (image, caption) in enumerate(cells):
        x, y = (k % columns) * cell_w + 5, (k // columns) * cell_h + top
        if isinstance(image, str):
            with Image.open(image) as opened:
                picture = opened.convert("RGB")
        else:
            picture = image.convert("RGB")
        if keep_aspect:
            picture.thumbnail((width, height))
        else:
            picture = picture.resize((width, height), Image.LANCZOS)
        sheet.paste(picture, (x, y + 20 if caption_above else y + 2))
        draw.text((x, y + 4 if caption_above else y + height + 6), caption, fill=caption_color)
    return sheet
