"""Answer extraction from free-form model outputs (GSM, BBH, multiple-choice letters).

Protocol: the defaults are open-instruct's Tülu-1-era evaluation (allenai/open-instruct,
commit cd06c6fb0, July 2023): `eval/gsm/run_eval.py` and `eval/bbh/run_eval.py`, main(),
post-processing of `outputs`, scored with Hugging Face `evaluate`'s `exact_match` with
`ignore_case=True, ignore_punctuation=True` (`reference_exact_match` here). The
alternatives (`value_*`, `lenient_*`) are drover's improvements; the tasks use them only
behind a named setting (`match=value` for GSM, `match=lenient` for BBH), recorded in the
result's settings. Each function documents its contract with doctests; the tests add
hand-derived tricky outputs with the verdict the reference code gives.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

# open-instruct's GSM number pattern: the sign belongs to the decimal alternative only, so
# "-21" yields "21" but "-2.5" yields "-2.5".
_REFERENCE_NUMBER = re.compile(r"[-+]?\d*\.\d+|\d+")
_ONE_COMMA = re.compile(r"(\d),(\d)")
_SO_THE_ANSWER_IS = re.compile(r"So the answer is (.*?)\.")
_PUNCTUATION = str.maketrans("", "", string.punctuation)

_NUMBER = re.compile(r"-?\d*\.?\d+")
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+(?![\d,])")
_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_OPTION = re.compile(r"^\(([A-Z])\)$")


def reference_exact_match(prediction: str, reference: str) -> bool:
    """`evaluate`'s exact_match(ignore_case=True, ignore_punctuation=True) for one pair:
    lower-case, delete every `string.punctuation` character, compare exactly (whitespace
    is kept, so "a  b" != "a b").

    >>> reference_exact_match("(B)", "(b)"), reference_exact_match("12.5", "125"), reference_exact_match("B ", "B")
    (True, True, False)
    """
    return prediction.lower().translate(_PUNCTUATION) == reference.lower().translate(_PUNCTUATION)


# --- GSM ------------------------------------------------------------------------------------
def gsm_reference(answer: str) -> str:
    """The gold of a GSM8K answer as open-instruct reads it: the text after '####',
    stripped, with one pass of `(\\d),(\\d) -> \\1\\2`.

    >>> gsm_reference("Natalia sold 48/2 = <<48/2=24>>24 clips.\\n#### 1,024")
    '1024'
    """
    return _ONE_COMMA.sub(r"\1\2", answer.split("####")[1].strip())


def gsm_prediction(output: str) -> str:
    """open-instruct's GSM prediction: one pass of comma removal between digits, then the
    last match of `[-+]?\\d*\\.\\d+|\\d+`; the whole output when there is no number.

    >>> gsm_prediction("The values are 1,2,18"), gsm_prediction("so -21"), gsm_prediction("none")
    ('18', '21', 'none')
    """
    output = _ONE_COMMA.sub(r"\1\2", output)
    numbers = _REFERENCE_NUMBER.findall(output)
    return numbers[-1] if numbers else output


def gsm_reference_correct(prediction: str, reference: str) -> bool:
    """The reference verdict: exact match after case folding and punctuation removal, so
    "12.00" != "12" but ".80" == "80" and "12.5" == "125".

    >>> gsm_reference_correct("12.00", "12"), gsm_reference_correct(".80", "80")
    (False, True)
    """
    return reference_exact_match(prediction, reference)


def last_number(text: str) -> str | None:
    """drover's value extraction (`match=value`): the last number in `text`, as written,
    with commas removed only inside proper thousands groups ("1,234,567"); a minus sign
    counts unless it is glued to a preceding word or digit ("COVID-19", "3-4"). None if
    there is no number.

    >>> last_number("She paid $1,234.50 in total.")
    '1234.50'
    >>> last_number("The answer is -7."), last_number("pages 3-4"), last_number("The values are 1,2,18")
    ('-7', '4', '18')
    >>> last_number("no digits") is None
    True
    """
    text = _GROUPED.sub(lambda m: m.group(0).replace(",", ""), text)
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


# GSM `match` setting -> (extract a prediction from an output, is it correct for the gold string):
# the one table the GSM benchmark and the `gsm-match` reward both read, so a response scores the
# same in training and in evaluation.
GSM_MATCHERS: dict[str, tuple[Callable[[str], str | None], Callable[[str | None, str], bool]]] = {
    "exact": (gsm_prediction, gsm_reference_correct),  # open-instruct (the default)
    "value": (last_number, numbers_equal),             # drover: signed numbers compared by value
}


# --- BBH ------------------------------------------------------------------------------------
def bbh_prediction(output: str) -> str:
    """open-instruct's BBH prediction (CoT and direct alike): the output stripped and cut at
    its first blank line; then the text between the first (case-sensitive) "So the answer
    is " and the next period on that line, stripped; else that whole first paragraph.

    >>> bbh_prediction("Let's think. So the answer is (B).\\n\\nQ: next")
    '(B)'
    >>> bbh_prediction("So the answer is 3.5."), bbh_prediction("  valid\\nmore")
    ('3', 'valid\\nmore')
    """
    paragraph = output.strip().split("\n\n")[0].strip()
    found = _SO_THE_ANSWER_IS.search(paragraph)
    return found.group(1).strip() if found else paragraph


def bbh_reference_correct(prediction: str, target: str) -> bool:
    """The reference verdict: exact match ignoring case and punctuation ("(B)" == "b").

    >>> bbh_reference_correct("b", "(B)"), bbh_reference_correct("(B) or (C)", "(B)")
    (True, False)
    """
    return reference_exact_match(prediction, target)


def lenient_bbh_prediction(output: str) -> str:
    """drover's lenient extraction (`match=lenient`): the text after the first "the answer
    is" (any case) up to the end of that line, a leading ":" and a final period dropped;
    else the output's first non-empty line.

    >>> lenient_bbh_prediction("So the answer is 3.5."), lenient_bbh_prediction("  valid\\nmore")
    ('3.5', 'valid')
    """
    match = _ANSWER_IS.search(output)
    if match:
        line = output[match.end():].split("\n", 1)[0]
    else:
        stripped = output.strip()
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


def lenient_bbh_correct(prediction: str, target: str) -> bool:
    """Exact match after `normalize_bbh`; for option targets "(X)", also "X" and "(X) text".

    >>> lenient_bbh_correct("a", "(A)"), lenient_bbh_correct("(A) 12/14/1937", "(A)"), lenient_bbh_correct("(B)", "(A)")
    (True, True, False)
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
