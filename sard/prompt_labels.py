"""Prompt point labels shared by SAM and EfficientSAM prompt encoders and the data mapper.

A module of its own, with no imports, so the data pipeline can use them without loading torch
or any model family.
"""

LABEL_PAD = -1  # padding: the point is ignored
LABEL_NEG = 0  # background click
LABEL_POS = 1  # foreground click
LABEL_BOX_TL = 2  # box top-left corner
LABEL_BOX_BR = 3  # box bottom-right corner
