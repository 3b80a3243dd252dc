"""Answer extraction and string normalisation for MATH-style answers.

Two normalisations are used, as in the MATH verifier of the recipe: the Minerva one (Lewkowycz et al.
2022, appendix D) applied to extracted final answers, and the Hendrycks et al. (2021) one used for the
string comparison.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tulu_cli.rewards.spans import first_dollar_pair, unwrap_lazy_spans, widest_span

INVALID_ANSWER = "[invalidanswer]"


def last_boxed_content(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces, or of `\\boxed x`."""
    if "\\boxed " in text:
        # The space form has no braces: the answer runs to the next `$`.
        return text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    command = "\\boxed"
    if start < 0:
        start = text.rfind("\\fbox")
        command = "\\fbox"
        if start < 0:
            return None
    open_brace = start + len(command)
    if open_brace >= len(text) or text[open_brace] != "{":
        return None
    depth = 0
    for index in range(open_brace, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : index]
    return None


_MINERVA_OPENING = "Final Answer: The final answer is"
_MINERVA_CLOSING = " I hope it is correct"


def minerva_answer(text: str) -> str:
    """The X of "Final Answer: The final answer is X. I hope it is correct.", or INVALID_ANSWER.

    The recipe's pattern is `Final Answer: The final answer is(.*?). I hope it is correct.` (its dots
    match any character); this finds the same match in one pass.
    """
    # Appending the closing sentence accepts a response cut right after the answer.
    for line in (text + "I hope it is correct.").split("\n"):
        start = line.find(_MINERVA_OPENING)
        if start < 0:
            continue
        begin = start + len(_MINERVA_OPENING)
        # One character (the sentence's full stop) sits between the answer and the closing sentence,
        # and one more must follow it. A later opening on this line could not match either.
        end = line.find(_MINERVA_CLOSING, begin + 1)
        if 0 <= end < len(line) - len(_MINERVA_CLOSING):
            return line[begin : end - 1].strip()
    return INVALID_ANSWER


_MINERVA_SUBSTITUTIONS = (
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
)
_MINERVA_REMOVED = (
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots",
    "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters",
    "meals", "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
    "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;",
    ",\\!", "{,}", '"', "\\dots",
)  # fmt: skip


def _unboxed(line: str) -> str:
    span = widest_span(line, "\\boxed{", "}")
    if span is None:
        return line
    start, end = span
    return line[:start] + line[start + len("\\boxed{") : end - 1] + line[end:]


def minerva_normalize(answer: str) -> str:
    answer = answer.split("=")[-1]
    for before, after in _MINERVA_SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for removed in _MINERVA_REMOVED:
        answer = answer.replace(removed, "")
    # The recipe's regexes here (`(.*?)(\$)(.*?)(\$)(.*)`, `(\\text\{)(.*?)(\})`, ..., `(\\boxed\{)(.*)(\})`)
    # are quadratic on a long line; the span helpers give the same results in linear time.
    answer = "\n".join(first_dollar_pair(line) for line in answer.split("\n"))
    for command in ("\\text{", "\\textbf{", "\\overline{"):
        answer = unwrap_lazy_spans(answer, command, "}")
    answer = "\n".join(_unboxed(line) for line in answer.split("\n"))
    # Shorthand TeX: \fracab -> \frac{a}{b}, \sqrta -> \sqrt{a}.
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer


def _fix_fracs(text: str) -> str:
    parts = text.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{"):
            out += part
            continue
        if len(part) < 2:
            return text
        numerator, rest = part[0], part[1:]
        if rest[0] != "{":
            out += "{" + numerator + "}{" + rest[0] + "}" + rest[1:]
        else:
            out += "{" + numerator + "}" + rest
    return out


def _fix_a_slash_b(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 2:
        return text
    # A non-integer side raises on purpose: the comparison then falls back to the raw strings, as the
    # reference normalisation does.
    numerator, denominator = int(parts[0]), int(parts[1])
    if text != f"{numerator}/{denominator}":
        return text
    return "\\frac{" + str(numerator) + "}{" + str(denominator) + "}"


def _remove_right_units(text: str) -> str:
    # "\text{ " only introduces units in MATH answers.
    if "\\text{ " in text:
        parts = text.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError("ambiguous units")
        return parts[0]
    return text


def _fix_sqrt(text: str) -> str:
    if "\\sqrt" not in text:
        return text
    parts = text.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        if part and part[0] != "{":
            out += "\\sqrt{" + part[0] + "}" + part[1:]
        elif not part:
            raise ValueError("dangling \\sqrt")
        else:
            out += "\\sqrt" + part
    return out


def hendrycks_normalize(text: str) -> str:
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "")
    text = text.replace("\\$", "")
    text = _remove_right_units(text)
    text = text.replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        text = sides[1]  # "k = 3" -> "3"
    text = _fix_sqrt(text)
    text = text.replace(" ", "")
    text = _fix_fracs(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _fix_a_slash_b(text)


def hendrycks_equal(first: str, second: str) -> bool:
    try:
        return hendrycks_normalize(first) == hendrycks_normalize(second)
    except ValueError:
        return first == second


def candidate_answers(
    response: str, *, boxed: Callable[[str], str | None] = last_boxed_content, normalize_boxed: bool = True
) -> list[str]:
    """Answers to try, in the order of the recipe; later extractions are fallbacks for earlier ones.

    The boxed answer is also tried Minerva-normalised (`\\text{12}`, `1,000`, `5\\text{ cm}` match), which
    the release did not do (see release_profile.py)."""
    candidates = []
    boxed_answer = boxed(response)
    if boxed_answer is not None:
        candidates.append(boxed_answer)
        if normalize_boxed and (normalized := minerva_normalize(boxed_answer)) != boxed_answer:
            candidates.append(normalized)
    minerva = minerva_answer(response)
    if minerva != INVALID_ANSWER:
        candidates.append(minerva_normalize(minerva))
    if not candidates:
        dollars = [match.start() for match in re.finditer(r"\$", response)]
        if len(dollars) > 1:
            candidates.append(minerva_normalize(response[dollars[-2] + 1 : dollars[-1]]))
    if not candidates:
        candidates.append(minerva_normalize(response))
        # The raw text as well, in case the normalisation damaged a correct answer.
        candidates.append(response)
    return candidates
