"""Answer extraction from free-form model outputs (GSM, BBH, multiple-choice letters).

Each function documents its contract with doctests; the tests add hand-written tricky
outputs. Rules follow the Tülu evaluation (open-instruct) where it is sound, and say
where they deliberately differ.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d*\.?\d+")
_THOUSANDS = re.compile(r"(\d),(\d)")
_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_OPTION = re.compile(r"^\(([A-Z])\)$")


def last_number(text: str) -> str | None:
    """The last number in `text` (thousands commas removed), as written; None if none.

    Differs from open-instruct, whose pattern drops the sign of negative integers; a
    hyphen glued to a preceding word or digit ("1-2", "COVID-19") is not a sign.

    >>> last_number("She paid $1,234.50 in total.")
    '1234.50'
    >>> last_number("The answer is -7.")
    '-7'
    >>> last_number("pages 3-4")
    '4'
    >>> last_number("no digits") is None
    True
    """
    text = _THOUSANDS.sub(r"\1\2", _THOUSANDS.sub(r"\1\2", text))
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    value = match.group(0)
    if value.startswith("-") and match.start() > 0 and text[match.start() - 1].isalnum():
        value = value[1:]
    return value


def numbers_equal(prediction: str | None, reference: str) -> bool:
    """Exact match of two numbers by value ("18.00" == "18"); False if either is not a number.

    >>> numbers_equal("18.00", "18"), numbers_equal("1,000", "1000"), numbers_equal(None, "3")
    (True, True, False)
    """
    if prediction is None:
        return False
    try:
        return float(prediction.replace(",", "")) == float(reference.replace(",", ""))
    except ValueError:
        return False


def gsm_reference(answer: str) -> str:
    """The gold number of a GSM8K answer: the text after '####', commas removed.

    >>> gsm_reference("Natalia sold 48/2 = <<48/2=24>>24 clips.\\n#### 1,024")
    '1024'
    """
    return _THOUSANDS.sub(r"\1\2", answer.split("####")[-1].strip())


def answer_after_phrase(text: str) -> str:
    """BBH: the text after the first "the answer is" up to the end of that line (a final
    period dropped), else the whole output's first non-empty line.

    >>> answer_after_phrase("Let's think. So the answer is (B).\\n\\nQ: next")
    '(B)'
    >>> answer_after_phrase("So the answer is 3.5.")
    '3.5'
    >>> answer_after_phrase("  valid\\nmore")
    'valid'
    """
    match = _ANSWER_IS.search(text)
    if match:
        rest = text[match.end():]
        line = rest.split("\n", 1)[0]
    else:
        stripped = text.strip()
        line = stripped.split("\n", 1)[0] if stripped else ""
    line = line.strip()
    if line.startswith(":"):
        line = line[1:].strip()
    if line.endswith("."):
        line = line[:-1].rstrip()
    return line


def normalize_bbh(text: str) -> str:
    """Case-fold and collapse whitespace, keep punctuation (Dyck answers are punctuation).

    >>> normalize_bbh("  ) ]  }")
    ') ] }'
    """
    return " ".join(text.lower().split())


def bbh_match(prediction: str, target: str) -> bool:
    """Exact match after `normalize_bbh`; for option targets "(X)", "X" and "(X) text" match too.

    >>> bbh_match("(A)", "(A)"), bbh_match("a", "(A)"), bbh_match("(A) 12/14/1937", "(A)"), bbh_match("(B)", "(A)")
    (True, True, True, False)
    >>> bbh_match("True", "True"), bbh_match("valid", "invalid")
    (True, False)
    """
    pred, gold = normalize_bbh(prediction), normalize_bbh(target)
    if pred == gold:
        return True
    option = _OPTION.match(target.strip())
    if option:
        letter = option.group(1).lower()
        return pred == letter or pred.startswith(f"({letter})")
    return False


def choice_letter(text: str, letters: str = "ABCD") -> str | None:
    """The option letter a generated answer picks: the first standalone letter among
    `letters` (as "B", "(B)", "B." or "B)"), after an "answer is" phrase if there is one.

    >>> choice_letter(" B. Paris"), choice_letter("The answer is (C)"), choice_letter("I think A")
    ('B', 'C', 'A')
    >>> choice_letter("All of them") is None
    True
    """
    match = _ANSWER_IS.search(text)
    segment = text[match.end():] if match else text
    found = re.search(rf"(?<![A-Za-z])\(?([{letters}])(?:[).:,]|\s|$)", segment)
    return found.group(1) if found else None
