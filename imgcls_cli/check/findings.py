"""Findings: one row of issues.csv each (an unreadable file, a duplicate, a near duplicate, a leak between splits,
the same image under two labels, a likely label error), the kinds fail_on groups them into, and clean.csv (the
readable images without the flagged ones)."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from imgcls_cli.check.duplicates import Pair
from imgcls_cli.check.listing import Listing
from imgcls_cli.rundir import write_csv

KINDS = ("unreadable", "duplicate", "near_duplicate", "leakage", "label_conflict", "label_issue")
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2, "": 3}
# fail_on=[...] -> the finding kinds that make the exit status 1
GROUPS = {"unreadable": ("unreadable",), "duplicates": ("duplicate", "near_duplicate", "label_conflict"),
          "leakage": ("leakage",), "label_issues": ("label_issue", "label_conflict")}


def columns(id_column: str) -> list[str]:
    return ["kind", id_column, "split", "class", "related", "related_split", "related_class", "match", "score",
            "suggested", "reason"]


def _row(items: Listing, kind: str, i: int, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, items.id_column: items.ids[i], "split": items.splits[i],
            "class": items.classes[int(items.labels[i])], "position": i, **extra}


def unreadable_rows(items: Listing) -> list[dict[str, Any]]:
    return [_row(items, "unreadable", i, reason=items.info.error[i]) for i in np.flatnonzero(~items.info.readable)]


def pair_kind(items: Listing, keep: int, other: int) -> str:
    if items.labels[keep] != items.labels[other]:
        return "label_conflict"
    return "leakage" if items.splits[keep] != items.splits[other] else ""


def _pair_row(items: Listing, keep: int, other: int, exact: bool, score: float) -> dict[str, Any]:
    kind = pair_kind(items, keep, other) or ("duplicate" if exact else "near_duplicate")
    return _row(items, kind, other, related=items.ids[keep], related_split=items.splits[keep],
                related_class=items.classes[int(items.labels[keep])], match="exact" if exact else "near",
                score=score, related_position=keep)


def _ordered(items: Listing, a: int, b: int) -> tuple[int, int]:
    """(the copy kept, the copy flagged): the one in the earlier split (train, val, test) is kept, then the first."""
    return tuple(sorted((a, b), key=lambda i: (SPLIT_ORDER[items.splits[i]], i)))  # type: ignore[return-value]


def duplicate_rows(items: Listing, groups: list[list[int]], near: list[Pair]) -> list[dict[str, Any]]:
    """A row for every exact copy after a group's first (the one in the earliest split), and for every confirmed
    near-duplicate pair."""
    rows = []
    for group in groups:
        first, *others = sorted(group, key=lambda i: (SPLIT_ORDER[items.splits[i]], i))
        rows += [_pair_row(items, first, i, True, 1.0) for i in others]
    for pair in near:
        keep, other = _ordered(items, pair.first, pair.second)
        rows.append(_pair_row(items, keep, other, False, pair.similarity))
    return rows


def in_groups(row: dict[str, Any]) -> list[str]:
    """The fail_on kinds a finding belongs to (the same image under two labels in two splits is a leak too)."""
    groups = [g for g, kinds in GROUPS.items() if row["kind"] in kinds]
    if row["kind"] == "label_conflict" and row.get("related_split") not in (None, row["split"]):
        groups.append("leakage")
    return groups


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Findings per kind, and per fail_on group."""
    per_kind = {k: sum(r["kind"] == k for r in rows) for k in KINDS}
    per_group = {g: sum(g in in_groups(r) for r in rows) for g in GROUPS}
    return {**per_kind, **{f"{g}_total": n for g, n in per_group.items()}}


def flagged(rows: list[dict[str, Any]]) -> set[int]:
    """Positions left out of clean.csv: every flagged image, and both copies of an image under two labels."""
    out = {int(r["position"]) for r in rows}
    out |= {int(r["related_position"]) for r in rows if r["kind"] == "label_conflict"}
    return out


def write_issues(path: os.PathLike, items: Listing, rows: list[dict[str, Any]]) -> None:
    write_csv(path, rows, columns(items.id_column))


def write_clean(path: os.PathLike, items: Listing, rows: list[dict[str, Any]]) -> int:
    """clean.csv: path (absolute), label, split of every readable image that is not flagged; how many."""
    assert items.paths is not None  # CheckSpec refuses write_clean for datasets without files
    left_out = flagged(rows)
    keep = [i for i in np.flatnonzero(items.info.readable) if int(i) not in left_out]
    table = [{"path": os.path.abspath(items.paths[i]), "label": items.classes[int(items.labels[i])],
              "split": items.splits[i]} for i in keep]
    write_csv(path, table, ["path", "label", "split"])
    return len(table)
