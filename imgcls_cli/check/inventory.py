"""The inventory of a listing: images per class and split, the imbalance ratio, and how many images have each size,
channel count, mode and format (what check.json records and the report and console show as tables)."""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from imgcls_cli.check.listing import Listing
from imgcls_cli.data.splits import SPLITS


def _tally(values: list[Any]) -> list[list[Any]]:
    """[[value, count], ...], the most frequent first."""
    return [[v, n] for v, n in Counter(values).most_common()]


def inventory(items: Listing) -> dict[str, Any]:
    """Every count of the dataset's readable images (and how many could not be read)."""
    ok = items.info.readable
    splits = [s for s in SPLITS if (items.splits[ok] == s).any()]
    per_class = []
    for c, name in enumerate(items.classes):
        mine = ok & (items.labels == c)
        per_class.append({"class": name, **{s: int((mine & (items.splits == s)).sum()) for s in splits},
                          "total": int(mine.sum())})
    totals = [row["total"] for row in per_class]
    info = items.info
    positions = np.flatnonzero(ok)
    return {
        "dataset": items.name, "images": len(items), "readable": int(ok.sum()), "unreadable": int((~ok).sum()),
        "classes": len(items.classes), "splits": {s: int((items.splits[ok] == s).sum()) for s in splits},
        "per_class": per_class,
        "imbalance_ratio": round(max(totals) / min(totals), 3) if min(totals) > 0 else None,
        "sizes": _tally([f"{info.width[i]}x{info.height[i]}" for i in positions]),
        "channels": _tally([int(info.channels[i]) for i in positions]),
        "modes": _tally([info.mode[i] for i in positions]),
        "formats": _tally([info.format[i] for i in positions]),
    }
