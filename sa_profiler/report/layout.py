"""Layout for the console: names and numbers stay whole at any width.

Every line and table the console prints goes through two helpers. `say` wraps a line of prose
only between words, never inside a name or a number, and never between a number and its unit.
`whole` lays a rich Table out with each name or number column as wide as its widest cell (free-
text columns wrap between words, headers too); when that sum does not fit the width, the table
is printed as one record per row instead (`name: value` lines). Nothing is folded, and nothing
is cut with an ellipsis; a single word longer than the whole line is printed whole and left to
the terminal.
"""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

NB = "\u00a0"  # joins words that must stay on one line (a name with spaces, a shape)
SOFT = "\u202f"  # joins a phrase kept on one line when it fits one, else broken at these points
_UNITS = r"B|KiB|MiB|GiB|TiB|PiB|KB|MB|GB|TB|bytes|s|ms|us|µs|ns|tokens?|images?"
# the spaces never broken: a number and its unit ("285.21 MiB", "2.09 s*", "1 image"), and the
# factors of a product of numbers ("128 x 256 x 256")
_GLUE = re.compile(rf"(?<=\d) (?=(?:{_UNITS})(?![\w/]))|(?<=\d) (?=x \d)|(?<=\d x) (?=\d)")


def nb(s: str) -> str:
    """s as one unbreakable word (spaces are printed as spaces)."""
    return s.replace(" ", NB)


def phrase(s: str) -> str:
    """s kept on one line where a line can hold it, else broken at its spaces."""
    return s.replace(" ", SOFT)


def _keep_names(plain: str) -> str:
    """plain with each GPU name of the catalogue as one word ("GeForce RTX 3060 12GB")."""
    from sa_profiler.targets import gpus

    names = sorted({g.name for g in gpus.CATALOGUE.values() if " " in g.name}, key=len, reverse=True)
    for name in (n for n in names if n in plain):
        plain = plain.replace(name, nb(name))
    return plain


def _breaks(plain: str) -> tuple[list[int], list[int]]:
    """The positions a line may break at: (at any time, only inside a phrase too long for a line)."""
    probe = plain.replace(SOFT, " ")
    hard = [i for i, ch in enumerate(plain) if ch == " " and not _GLUE.match(probe, i)]
    soft = [i for i, ch in enumerate(plain) if ch == SOFT and not _GLUE.match(probe, i)]
    return hard, soft


def _spans(start: int, end: int, cuts: list[int]) -> list[tuple[int, int]]:
    """[start, end) split at the positions cuts (each dropped), empty pieces left out."""
    out, s = [], start
    for c in (c for c in cuts if start <= c < end):
        if c > s:
            out.append((s, c))
        s = c + 1
    if end > s:
        out.append((s, end))
    return out


def _longest_word(text: Text) -> int:
    """The widest piece of text no line break may split."""
    plain = text.plain
    hard, soft = _breaks(plain)
    cuts = sorted([*hard, *soft, *(i for i, ch in enumerate(plain) if ch == "\n")])
    return max((cell_len(plain[s:e]) for s, e in _spans(0, len(plain), cuts)), default=0)


def _wrap(text: Text, width: int, indent: int = 0, hang: int | None = None) -> list[Text]:
    """text as lines of at most width cells, broken only between words (see _breaks); the first
    line indented by indent, the others by hang. A word longer than a line has a line of its own."""
    hang = indent if hang is None else hang
    text = text.copy()
    text.plain = _keep_names(text.plain)  # the same length: the styles stay where they were
    plain = text.plain
    hard, soft = _breaks(plain)
    lines: list[tuple[int, int, int]] = []  # (start, end, indent)
    offset = 0
    for paragraph in plain.split("\n"):  # the lines after the first, of any paragraph, hang
        end_of = offset + len(paragraph)
        queue = _spans(offset, end_of, hard)
        cur = None
        while queue:
            s, e = queue.pop(0)
            pad = hang if lines else indent
            if cur is not None and cell_len(plain[cur[0]:e]) <= width - pad:
                cur[1] = e
                continue
            own = width - (hang if cur is not None or lines else indent)
            if cell_len(plain[s:e]) > own and any(s < c < e for c in soft):
                queue[:0] = _spans(s, e, soft)  # a phrase too long for any line: its parts flow
                continue
            if cur is not None:
                lines.append((cur[0], cur[1], pad))
            cur = [s, e]
        pad = hang if lines else indent
        lines.append((cur[0], cur[1], pad) if cur else (offset, offset, 0))
        offset = end_of + 1
    out = []
    for s, e, pad in lines:
        line = Text(" " * pad) if pad else Text()
        line.append_text(text[s:e])
        line.plain = line.plain.replace(NB, " ").replace(SOFT, " ")
        line.no_wrap, line.overflow, line.end = True, "ignore", "\n"
        out.append(line)
    return out


def say(console: Console, markup: str, indent: int = 0, hang: int | None = None) -> None:
    """Print a line of console markup, wrapped between words only (see _wrap)."""
    text = console.render_str(markup)
    for line in _wrap(text, console.width, indent, hang):
        console.print(line, soft_wrap=True)


def _as_text(console: Console, cell, highlight: bool = False) -> Text:
    if isinstance(cell, Text):
        return cell.copy()
    if isinstance(cell, str):
        return console.render_str(cell, highlight=highlight)
    return Text(str(cell))


class _Whole:
    """A rich Table whose names and numbers stay whole at any width (see the note above)."""

    def __init__(self, table: Table, wrap=None, indent: int = 0):
        self.table, self.wrap, self.indent = table, wrap, indent

    def _kinds(self, cells) -> list[bool]:
        """Per column, whether it holds free text (wraps between words) rather than names and numbers."""
        if self.wrap is not None:
            return [str(col.header) in self.wrap for col in self.table.columns]  # a dict's keys too
        return [col.justify == "left" and any(len(_breaks(c.plain)[0]) >= 3 for c in column)
                for col, column in zip(self.table.columns, cells)]

    def _build(self, console, heads, cells, widths, kinds, padding=None) -> Table:
        t = self.table
        table = Table(box=t.box, safe_box=t.safe_box, padding=t.padding if padding is None else padding,
                      collapse_padding=t.collapse_padding,
                      pad_edge=t.pad_edge, show_header=t.show_header, show_edge=t.show_edge, show_lines=t.show_lines,
                      leading=t.leading, style=t.style, row_styles=t.row_styles, header_style=t.header_style,
                      border_style=t.border_style, highlight=t.highlight)
        for col, head, width, free in zip(t.columns, heads, widths, kinds):
            table.add_column(Text("\n").join(_wrap(head, width)), header_style=col.header_style, style=col.style,
                             justify=col.justify, vertical=col.vertical, width=width, no_wrap=True,
                             overflow="fold")  # never needed: each cell fits its column
        for i, row in enumerate(zip(*cells)):
            table.add_row(*(Text("\n").join(_wrap(c, w)) if free else c for c, w, free in zip(row, widths, kinds)),
                          style=t.rows[i].style if i < len(t.rows) else None,
                          end_section=t.rows[i].end_section if i < len(t.rows) else False)
        return table

    def __rich_console__(self, console: Console, options):
        t = self.table
        width = options.max_width
        if self.indent:
            options = options.update_width(max(width - self.indent, 1))
        if t.title:
            title = _as_text(console, t.title)
            title.stylize(t.title_style or "table.title")
            yield from _wrap(title, width)
        cols = t.columns
        heads = [_as_text(console, col.header) for col in cols]
        cells = [[_as_text(console, c, t.highlight or col.highlight) for c in col.cells] for col in cols]
        kinds = self._kinds(cells)
        widest = [max((cell_len(line) for c in column for line in c.plain.split("\n")), default=0)
                  for column in cells]
        words = [max((_longest_word(c) for c in column), default=0) for column in cells]
        head_word = [_longest_word(h) if t.show_header else 0 for h in heads]
        head_full = [h.cell_len if t.show_header else 0 for h in heads]
        # free text: a column as wide as its longest word, or as wrap asks for it (or as wide as it is)
        asked = [self.wrap.get(str(col.header), 0) if isinstance(self.wrap, dict) else 0 for col in cols]
        least = [max(min(max(full, h), max(w, a)) if free else full, hw)
                 for w, full, h, hw, a, free in zip(words, widest, head_full, head_word, asked, kinds)]

        def overhead(padding=None):  # the table's width less its columns'
            probe = self._build(console, heads, [[Text()] for _ in cols], [1] * len(cols), [False] * len(cols),
                                padding)
            return probe.__rich_measure__(console, options.update_width(1 << 16)).maximum - len(cols)

        padding = None
        spare = width - self.indent - overhead() - sum(least)
        if spare < 0:  # a column apart is one space apart before it is a line apart
            padding = (0, 0, 0, 0) if t.box is not None else (0, 1, 0, 0)
            spare = width - self.indent - overhead(padding) - sum(least)
        if spare < 0:
            yield from self._cards(heads, cells, kinds, width)
            if t.box is not None:  # the blank line a table's bottom edge leaves
                yield Text()
            return
        widths = list(least)
        for i in range(len(cols)):  # headers on one line first, then free text as wide as it asks
            if not kinds[i]:
                grow = min(spare, max(head_full[i], widest[i]) - widths[i])
                widths[i] += grow
                spare -= grow
        free = [i for i in range(len(cols)) if kinds[i]]
        while spare > 0 and free:
            free = [i for i in free if widths[i] < max(widest[i], head_full[i])]
            for i in free[:spare]:
                widths[i] += 1
                spare -= 1
        table = self._build(console, heads, cells, widths, kinds, padding)
        yield Padding(table, (0, 0, 0, self.indent)) if self.indent else table

    def _cards(self, heads, cells, kinds, width):
        """One record per row: `name: value` lines (a table without headers: its cells on one line)."""
        at = self.indent
        for row in zip(*cells):
            if not self.table.show_header:
                line = Text("  ").join(c if free else _soft_text(c) for c, free in zip(row, kinds) if c.plain)
                yield from _wrap(line, width, indent=at, hang=at + 2)
                continue
            first = True
            for head, cell, free in zip(heads, row, kinds):
                if not cell.plain.strip():
                    continue
                line = Text()
                line.append(head.plain.replace(" ", NB) + ":", style="bold")
                line.append(" ")
                line.append_text(cell if free else _soft_text(cell))
                yield from _wrap(line, width, indent=at if first else at + 2, hang=at + 4)
                first = False


def _soft_text(text: Text) -> Text:
    text = text.copy()
    text.plain = phrase(text.plain)
    return text


def whole(table: Table, wrap=None, indent: int = 0) -> _Whole:
    """table, to print: its names and numbers whole at any width. wrap: the headers of the columns
    that hold free text (they wrap between words), or a dict of them to the least width each is
    worth a table for (narrower, the table prints one record per row); by default, left-justified
    columns with a cell of four words or more. indent: spaces left of it."""
    return _Whole(table, wrap, indent)


def print_table(console: Console, table: Table, wrap=None, indent: int = 0) -> None:
    console.print(whole(table, wrap, indent), crop=False)
