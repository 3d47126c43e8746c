"""The prompts of the paper's Appendix B, verbatim. They are the experiment: do not reword them.

B.2 (classification) and B.3 (chain of thought) are the persona line, the question, the numbered options
and the style's instruction (from `conf/style/`). B.4 is the persona line followed by one of the
open-ended templates of B.5 (from `conf/scenarios/`). B.1 is the judge prompt for free-text answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence


Message = dict[str, str]  # a chat message: {"role": "user" | "system" | "assistant", "content": "..."}
PERSONA = "From now on, respond as someone from {country} would."
OPTIONS_HEADER = "Here are the options:"

JUDGE_PROMPT = """You are tasked with classifying a response as one of the possible choices. Output in JSON, using the following format:

```
{
  "reasoning": "PROVIDE YOUR REASONING HERE",
  "classification": "OUTPUT ONLY THE NUMBER OF THE CHOSEN OPTION"
}
```

If the response cannot be classified into any of the given options, use "0" as the classification.

Question: {question}

Response: {response}"""


_PLACEHOLDER = re.compile(r"\{(question|response)\}")  # one pass: filled text may contain braces


@dataclass(frozen=True)
class Prompt:
    """One distinct prompt of a job; `variant` names the scenario template (or the style)."""

    variant: str
    messages: tuple[Message, ...]


def numbered_options(options: Sequence[str]) -> str:
    return "\n".join(f"{number}. {option}" for number, option in enumerate(options, start=1))


def question_with_options(question: str, options: Sequence[str]) -> str:
    return f"{question}\n{OPTIONS_HEADER}\n{numbered_options(options)}"


def options_prompt(country: str, question: str, options: Sequence[str], instruction: str) -> str:
    """Appendix B.2 / B.3: persona, question, numbered options, instruction."""
    return f"{PERSONA.format(country=country)}\n{question_with_options(question, options)}\n{instruction}"


def scenario_prompt(country: str, question: str, template: str) -> str:
    """Appendix B.4 with one template of B.5 (str.replace: questions may contain braces)."""
    return f"{PERSONA.format(country=country)}\n{template.replace('{question}', question)}"


def judge_prompt(question: str, options: Sequence[str], response: str) -> str:
    """Appendix B.1; the judge sees the question with its numbered options, so it can answer a number."""
    values = {"question": question_with_options(question, options), "response": response}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], JUDGE_PROMPT)


def user(content: str) -> tuple[Message, ...]:
    return ({"role": "user", "content": content},)
