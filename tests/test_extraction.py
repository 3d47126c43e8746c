"""From raw text to an option: the strict classification rule and the judge's JSON."""

import pytest

from culturealign.extraction import parse_judge_output, parse_option_number
from culturealign.spec import ClassificationRule

LEADING = ClassificationRule.leading


@pytest.mark.parametrize(
    "text, expected",
    [("1", 1), ("2", 2), (" 2\n", 2), ("\t1 ", 1), ("3", None), ("0", None), ("1.", None), ("Option 1", None),
     ("1. Yes", None), ("12", None), ("", None), ("١", None), ("I cannot answer that.", None)],
)
def test_classification_answer_must_be_exactly_an_option_number(text, expected):
    assert parse_option_number(text, 2) == expected


@pytest.mark.parametrize(
    "text, truncated, expected",
    [("2. Dis", True, 2), ("1. Yes", False, 1), ("2", False, 2), (" 1)", True, 1), ("1\n\nBecause", True, 1),
     ("12", False, None), ("3. Maybe", False, None), ("0", False, None), ("Option 1", False, None),
     ("1", True, None),  # cut right after the digit: it may have gone on as "10"
     ("12", True, None), ("", False, None), ("١. Yes", False, None), ("9" * 5000, False, None)],
)
def test_leading_rule_takes_an_option_number_that_starts_the_answer(text, truncated, expected):
    assert parse_option_number(text, 2, truncated, LEADING) == expected


def test_strict_rule_refuses_what_leading_accepts():
    assert parse_option_number("2. Dis", 2, True) is None and parse_option_number("1. Yes", 2) is None
    assert parse_option_number("9" * 5000, 2) is None  # no int() of a huge digit string


def test_answer_cut_by_the_token_limit_is_unclassifiable():
    assert parse_option_number("1", 2, truncated=False) == 1
    assert parse_option_number("1\n\n", 2, truncated=True) is None  # "1\n\nBecause ..." seen through max_tokens


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"reasoning": "r", "classification": "2"}', 2),
        ('```json\n{\n  "reasoning": "pro {x}",\n  "classification": "1"\n}\n```', 1),
        ('Sure! Here it is: {"reasoning": "r", "classification": 2} Hope that helps.', 2),
        ('{"reasoning": "r", "classification": "0"}', None),
        ('{"reasoning": "r", "classification": "3"}', None),
        ('{"reasoning": "r", "classification": "one"}', None),
        ('{"reasoning": "unescaped "quotes" here", "classification": "2"}', 2),  # invalid JSON, field recovered
        ("I think the answer is 1", None),
        ("", None),
        ('{"reasoning": "r"}', None),
    ],
)
def test_judge_output_parsing(text, expected):
    assert parse_judge_output(text, 2) == expected
