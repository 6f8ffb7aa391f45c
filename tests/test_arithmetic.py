"""Arithmetic captchas: the answer a reading computes to, or why it has none."""

import random

import pytest

from kcaptcha.reading import arithmetic


@pytest.mark.parametrize("text, value", [
    ("3+8=?", 11), ("20-13=?", 7), ("4×7=?", 28), ("0×9=", 0), ("12+5", 17), ("2+3×4=?", 14), ("9-2-3=?", 4),
    ("6*7?", 42), ("8÷4=?", 2), ("3-8=?", -5),
])
def test_a_reading_answers_with_multiplication_first(text, value):
    assert arithmetic.answer(text) == (value, None)


@pytest.mark.parametrize("text, reason", [
    ("3+=?", "is not an arithmetic expression"), ("=?", "is not"), ("38", "is not"), ("", "is not"),
    ("3+8=?1", "is not"), ("+3+8=?", "is not"), ("7÷2=?", "no whole answer"), ("7÷0=?", "no whole answer"),
])
def test_a_reading_that_does_not_parse_has_no_answer_and_says_why(text, reason):
    value, why = arithmetic.answer(text)
    assert value is None and reason in why and repr(text) in why


def test_drawn_expressions_fit_the_charset_and_lengths_and_answer():
    rng = random.Random(0)
    drawn = [arithmetic.draw(rng) for _ in range(2000)]
    assert {c for text in drawn for c in text} == set(arithmetic.CHARSET)
    assert {len(text) for text in drawn} == set(range(arithmetic.MIN_LENGTH, arithmetic.MAX_LENGTH + 1))
    assert all(arithmetic.answer(text)[0] >= 0 for text in drawn)


def test_arithmetic_models_are_told_by_their_charset():
    assert arithmetic.is_arithmetic(arithmetic.CHARSET)
    assert not arithmetic.is_arithmetic("0123456789abcdefghijklmnopqrstuvwxyz")
    assert not arithmetic.is_arithmetic("0123456789-")  # a dash of plain codes
