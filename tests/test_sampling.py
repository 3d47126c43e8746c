"""Planning a job's requests: which prompt carries which sample indices (cases found by mutation testing,
tests/MUTATION.md). Scenario samples spread evenly over the templates; each index is planned once."""

from culturealign.dataset import Question
from culturealign.sampling import plan
from culturealign.spec import CountrySpec, StyleKind, StyleSpec

US = CountrySpec(label="US", name="the United States", keys=["United States"])
QUESTIONS = [Question(q, 1, f"Is {q} {{good}}?", ("Yes", "No"), "GAS", {"United States": (0.5, 0.5)}) for q in ("a", "b")]
TEMPLATES = ["First: {question}", "Second: {question}", "Third: {question}"]


def test_options_styles_ask_one_prompt_per_question_for_every_sample():
    style = StyleSpec(name="classification", kind=StyleKind.options, instruction="Answer with a number.")
    planned = plan(QUESTIONS, US, style, TEMPLATES, 4)
    assert [(p.question.id, p.prompt.variant, p.sample_indices) for p in planned] == [
        ("a", "options", (0, 1, 2, 3)), ("b", "options", (0, 1, 2, 3))]  # fmt: skip
    content = planned[0].prompt.messages[-1]["content"]
    assert "the United States" in content and "Is a {good}?" in content and content.endswith("Answer with a number.")


def test_scenario_samples_spread_over_the_templates():
    style = StyleSpec(name="scenarios", kind=StyleKind.scenarios)
    planned = plan(QUESTIONS[:1], US, style, TEMPLATES, 7)
    assert [(p.prompt.variant, p.sample_indices) for p in planned] == [
        ("scenario_1", (0, 3, 6)), ("scenario_2", (1, 4)), ("scenario_3", (2, 5))]  # fmt: skip
    assert all(p.question is QUESTIONS[0] for p in planned)
    texts = [p.prompt.messages[-1]["content"] for p in planned]
    assert all("the United States" in t for t in texts)
    assert [t.splitlines()[-1] for t in texts] == ["First: Is a {good}?", "Second: Is a {good}?", "Third: Is a {good}?"]
    # fewer samples than templates: only the templates that get a sample are asked
    assert [(p.prompt.variant, p.sample_indices) for p in plan(QUESTIONS[:1], US, style, TEMPLATES, 2)] == [
        ("scenario_1", (0,)), ("scenario_2", (1,))]  # fmt: skip
