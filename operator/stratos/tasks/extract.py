"""Answer extraction that tolerates what real models write.

Models rarely end with a bare answer: they write "The answer is 42.", "**Answer:** 42", `\\boxed{42}`,
GSM8K's "#### 42", wrap the answer in <think> blocks, or keep talking after it. `answer_span` finds
the text that states the final answer, most explicit marker first:

1. the last `\\boxed{...}` (nested braces allowed);
2. whichever comes later of the last `#### ...` line (not a markdown heading like "#### Step 2") and
   the last "answer is ...", "answer: ...", "final answer ...", "winning tiles are ..." phrase, cut
   at the end of its sentence, so a model that corrects itself is read at its final word;
3. otherwise the last non-empty line.

Task plug-ins then parse that span (a number, tiles, free text).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_THINK_END = re.compile(r"</think>", re.IGNORECASE)
_HASHES = re.compile(r"^\s*#{4}\s*(.+?)\s*$", re.MULTILINE)
_PHRASE = re.compile(
    r"\b(?:final\s+answer|answer|winning\s+tiles?)\b(?:\s*\(s\))?\s*"
    r"(?:(?:is|are|would\s+be|will\s+be|should\s+be)\b\s*[:：]?|[:：=])\s*",
    re.IGNORECASE,
)
# End of the sentence that states the answer: '.', ';', '!' or '?' before a space (so 3.5 survives),
# a newline, or a comma that starts a justification.
_SENTENCE_END = re.compile(r"[.;!?](?=\s|$)|\n|,\s+(?:because|since|as|which|so|given)\b", re.IGNORECASE)
_MARKDOWN = str.maketrans("", "", "*_`")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def strip_thinking(text: str) -> str:
    """Drop a leading <think>…</think> block when something follows it."""
    parts = _THINK_END.split(text)
    tail = parts[-1].strip()
    return tail if len(parts) > 1 and tail else text


def last_boxed(text: str) -> str | None:
    r"""Contents of the last \boxed{...} (or \fbox{...}), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def _clean(span: str) -> str:
    span = span.translate(_MARKDOWN).strip()
    span = re.sub(r"^\\text\{(.*)\}$", r"\1", span)
    return span.strip().strip("\"'“”").strip()


def answer_span(text: str) -> str | None:
    """The piece of `text` that states the final answer, or None when the text is empty."""
    if not text or not text.strip():
        return None
    text = strip_thinking(text)
    boxed = last_boxed(text)
    if boxed is not None:
        return _clean(boxed)
    plain = text.translate(_MARKDOWN)
    # "#### 42" (GSM8K's marker) but not a markdown heading such as "#### Step 2".
    hashes = [m for m in _HASHES.finditer(plain) if not m.group(1)[0].isalpha()]
    candidates: list[tuple[int, str]] = []
    if hashes:
        candidates.append((hashes[-1].start(), _clean(hashes[-1].group(1))))
    for m in reversed(list(_PHRASE.finditer(plain))):
        rest = plain[m.end() :].lstrip()
        end = _SENTENCE_END.search(rest)
        span = _clean(rest[: end.start()] if end else rest)
        if span:
            candidates.append((m.start(), span))
            break
    if candidates:
        return max(candidates, key=lambda c: c[0])[1]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return _clean(lines[-1].lstrip("#")) if lines else None


def strip_final_answer(reasoning: str) -> str:
    """`reasoning` without its closing answer statement, so a hint guides without giving it away.

    Removes trailing lines that carry "#### …", "\\boxed{…}" or "The answer is …".
    """
    lines = strip_thinking(reasoning).rstrip().splitlines()
    while lines and (
        not lines[-1].strip()
        or _HASHES.match(lines[-1])
        or "\\boxed{" in lines[-1]
        or re.search(r"\b(?:final\s+)?answer\s*(?:is|:)", lines[-1], re.IGNORECASE)
    ):
        lines.pop()
    return "\n".join(lines).rstrip()


def parse_number(text: str) -> Decimal | None:
    """The number a short answer states: '$1,234.50' -> 1234.50, '42 apples' -> 42, '18.0' -> 18.

    After an '=' the right-hand side wins ('5 + 3 = 8' -> 8); otherwise the first number.
    Commas inside digits are thousands separators; a trailing percent or unit is ignored.
    """
    text = text.replace("−", "-").replace("\u2009", "").replace("\u00a0", "")
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    text = re.sub(r"(?<=\d) (?=\d{3}\b)", "", text)  # "1 234" thousands separator
    frac = re.search(r"(-?\d+)\s*/\s*(\d+)", text)
    m = _NUMBER.search(text)
    if frac and (m is None or frac.start() <= m.start()) and int(frac.group(2)) != 0:
        return Decimal(int(frac.group(1))) / Decimal(int(frac.group(2)))
    if m is None:
        return None
    raw = m.group(0).replace(",", "")
    try:
        return Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the regex only admits valid literals
        return None


def format_number(value: Decimal) -> str:
    """Canonical text for a number: no exponent, no trailing zeros ('18.0' -> '18')."""
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_number(text: str) -> str | None:
    """The final numeric answer in a model's output, canonicalised, or None.

    Looks in the answer span first; if that holds no number, falls back to the last number anywhere.
    """
    span = answer_span(text)
    if span is not None:
        value = parse_number(span)
        if value is not None:
            return format_number(value)
    numbers = _NUMBER.findall(strip_thinking(text or ""))
    for raw in reversed(numbers):
        value = parse_number(raw)
        if value is not None:
            return format_number(value)
    return None


def numbers_equal(a: str | None, b: str | None, *, rel_tol: float = 1e-6) -> bool:
    """Numeric equality of two answer strings, tolerant of commas, '$', units and trailing '.0'."""
    if a is None or b is None:
        return False
    x, y = parse_number(a), parse_number(b)
    if x is None or y is None:
        return False
    if x == y:
        return True
    return abs(x - y) <= Decimal(str(rel_tol)) * max(abs(x), abs(y))


def normalise_text(text: str) -> str:
    """Case-folded, whitespace-collapsed, without surrounding quotes and a trailing full stop."""
    text = " ".join(text.split()).casefold()
    return text.strip("\"'“”`").rstrip(".").strip()


def answer_tails(text: str) -> list[str]:
    """The text after each "answer is" / "winning tiles are" style phrase, last phrase first.

    For answers that run over several lines (bulleted lists), where `answer_span`'s sentence cut is
    too tight; callers take the first tail that starts with an answer.
    """
    plain = strip_thinking(text).translate(_MARKDOWN)
    return [plain[m.end() :] for m in reversed(list(_PHRASE.finditer(plain)))]
