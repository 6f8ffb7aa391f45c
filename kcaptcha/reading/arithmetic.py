"""Arithmetic captchas (`3+8=?`): the expressions `bin/generate --style=arithmetic` draws, and the answer to a
reading.

A model reads the drawn expression as its text (labels are the expression, `?` included); the answer is
computed from that reading, multiplication before addition and subtraction, as the site would. A reading
that is not an expression has no answer, and says why.
"""

import re
from typing import Optional, Tuple

CHARSET = "0123456789+-×=?"  # the characters the drawn expressions use, in id order
MIN_LENGTH, MAX_LENGTH = 5, 7  # "3+8=?" .. "20-13=?"
OPERATORS = "+-×÷*"  # read; "×" is the one drawn, "*" and "÷" are what other sites draw
_EXPRESSION = re.compile(r"^(\d+(?:[" + re.escape(OPERATORS) + r"]\d+)+)(=\??|\?)?$")


def draw(rng) -> str:
    """A random expression as drawn: `a+b=?` or `a-b=?` (a, b from 0 to 20, never negative) or `a×b=?` (0 to 9)."""
    operator = rng.choice("+-×")
    if operator == "×":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
    else:
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        if operator == "-" and b > a:
            a, b = b, a
    return f"{a}{operator}{b}=?"


def is_arithmetic(charset: str) -> bool:
    """True for a model that reads expressions: its charset has digits and an operator other than '-' alone
    (a '-' is also the dash of plain codes)."""
    return any(c.isdigit() for c in charset) and any(c in charset for c in OPERATORS if c != "-")


def answer(text: str) -> Tuple[Optional[int], Optional[str]]:
    """(the value of the expression `text` reads, None), or (None, why there is none).

    Whole numbers only: a division that leaves a remainder has no answer.
    """
    match = _EXPRESSION.match(text)
    if not match:
        return None, (f"{text!r} is not an arithmetic expression (numbers joined by {' '.join(OPERATORS)}, "
                      "then '=' or '=?')")
    terms = re.split(r"([" + re.escape(OPERATORS) + r"])", match.group(1))
    numbers, operators = [int(t) for t in terms[0::2]], terms[1::2]
    summands, signs = [numbers[0]], []  # multiplication and division first
    for operator, number in zip(operators, numbers[1:]):
        if operator in "×*":
            summands[-1] *= number
        elif operator == "÷":
            if number == 0 or summands[-1] % number:
                return None, f"{text!r} divides {summands[-1]} by {number}, which has no whole answer"
            summands[-1] //= number
        else:
            signs.append(operator)
            summands.append(number)
    value = summands[0]
    for sign, number in zip(signs, summands[1:]):
        value = value + number if sign == "+" else value - number
    return value, None
