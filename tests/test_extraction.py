"""From raw text to an option: the strict classification rule and the judge's JSON."""

import pytest

from culturealign.extraction import parse_judge_output, parse_option_number


@pytest.mark.parametrize(
    "text, expected",
    [("1", 1), ("2", 2), (" 2\n", 2), ("\t1 ", 1), ("3", None), ("0", None), ("1.", None), ("Option 1", None),
     ("1. Yes", None), ("12", None), ("", None), ("١", None), ("I cannot answer that.", None)],
)
def test_classification_answer_must_be_exactly_an_option_number(text, expected):
    assert parse_option_number(text, 2) == expected


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
