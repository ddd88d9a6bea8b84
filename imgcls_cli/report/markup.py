"""HTML pieces built from user input (class names, paths, config values), every text escaped: tables, sections,
numbers, and data embedded as JSON that no value can break out of."""
from __future__ import annotations

import html
import json
import time
from typing import Any, Iterable, Sequence


def esc(value: Any) -> str:
    """Text (or a number) as HTML text or an attribute value: &, <, >, " and ' escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def number(value: Any) -> str:
    """A cell's text: floats with 6 significant digits (as the run's CSV files write them), others as they are."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def percent(value: Any) -> str:
    """A fraction in [0, 1] as a percentage with two decimals, or an em dash when there is none."""
    try:
        return f"{100 * float(value):.2f}%"
    except (TypeError, ValueError):
        return "—"


def duration(seconds: Any) -> str:
    """Seconds as 12.3 s, 4 min 05 s or 2 h 03 min."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, sortable: bool = False, cls: str = "",
          numeric: Iterable[int] = ()) -> str:
    """A table of escaped cells; sortable: clicking a header sorts by that column (the page's script)."""
    right = set(numeric)
    classes = " ".join(c for c in (cls, "sortable" if sortable else "") if c)
    head = "".join(f'<th scope="col"{" class=num" if i in right else ""}>{esc(c)}</th>'
                   for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in right else ""}>{esc(number(v))}</td>'
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return (f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            if classes else f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def key_values(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of names and values."""
    body = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{esc(number(v))}</td></tr>' for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def section(anchor: str, title: str, body: str, note: str = "") -> str:
    """A titled section with an anchor the page's menu links to; note: a line under the title (escaped)."""
    lead = f'<p class="note">{esc(note)}</p>' if note else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{lead}{body}</section>'


def facts(pairs: Iterable[tuple[str, Any]]) -> str:
    """The header's figures: each value large, its name under it."""
    boxes = "".join(f'<div class="fact"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for k, v in pairs)
    return f'<div class="facts">{boxes}</div>'


def footer(rebuild: str) -> str:
    """When the page was written, and the command that writes it again."""
    return (f'<footer class="note">Written by imgcls on {time.strftime("%Y-%m-%d %H:%M:%S")}: one self-contained '
            f"file, nothing loaded from the network. Rebuild it with <code>{esc(rebuild)}</code>.</footer>")


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def json_script(element_id: str, data: Any) -> str:
    """Data for the page's script, in a <script type="application/json"> block: <, > and & are written as JSON
    escapes, so no value can close the block (</script>) or open a comment; U+2028/9 likewise."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


# No request leaves the page: images are data: URLs, styles and the script are inline, and the policy says so to
# the browser too (a value that slipped through escaping could still not load anything).
POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
          "base-uri 'none'; form-action 'none'")


def document(title: str, style: str, body: str, script: str = "") -> str:
    """A whole page: UTF-8, the content security policy, inline style and script."""
    tail = f"<script>{script}</script>" if script else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{style}</style></head>\n<body>{body}{tail}</body></html>\n")
