"""Linear-time equivalents of the span regexes the verifiers use.

A pattern such as `\\[.*?\\]` restarts its scan at every opening delimiter, so one line of 100k `[` with
no `]` costs 100k^2/2 steps (minutes). Each function here returns exactly what the regex named in its
docstring returns (`.` never crosses a newline, so lines are independent), in one pass over the text.
"""

from __future__ import annotations

from collections.abc import Iterator


def lazy_spans(text: str, opening: str, closing: str) -> Iterator[str]:
    """The groups of `re.findall(escape(opening) + "(.*?)" + escape(closing), text)`."""
    for line in text.split("\n"):
        position = 0
        while True:
            start = line.find(opening, position)
            if start < 0:
                break
            end = line.find(closing, start + len(opening))
            if end < 0:
                # No later opening on this line can find a closing either.
                break
            yield line[start + len(opening) : end]
            position = end + len(closing)


def unwrap_lazy_spans(text: str, opening: str, closing: str) -> str:
    """`re.sub(escape(opening) + "(.*?)" + escape(closing), r"\\1", text)`."""
    lines = []
    for line in text.split("\n"):
        pieces, position = [], 0
        while True:
            start = line.find(opening, position)
            end = line.find(closing, start + len(opening)) if start >= 0 else -1
            if end < 0:
                break
            pieces += [line[position:start], line[start + len(opening) : end]]
            position = end + len(closing)
        pieces.append(line[position:])
        lines.append("".join(pieces))
    return "\n".join(lines)


def widest_span(line: str, opening: str, closing: str, min_inner: int = 0) -> tuple[int, int] | None:
    """(start, end) of the one match of `escape(opening) + ".{min_inner,}" + escape(closing)` (greedy) in
    a line without newlines: the first opening to the last closing after it, or None."""
    start = line.find(opening)
    if start < 0:
        return None
    end = line.rfind(closing, start + len(opening) + min_inner)
    if end < 0:
        return None
    return start, end + len(closing)


def first_dollar_pair(line: str) -> str:
    """`re.sub(r"(.*?)(\\$)(.*?)(\\$)(.*)", "$\\\\3$", line)` for a line without newlines."""
    parts = line.split("$", 2)
    return line if len(parts) < 3 else f"${parts[1]}$"
