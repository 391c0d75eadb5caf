"""The bias domain's data and its gender-neutral reference."""

from __future__ import annotations

from typing import Any

import pytest

from patchkit.demo.domains import bias as b
from patchkit.eval.backend import Completion
from patchkit.eval.bias import GAS_TEMPLATES, GLD_TEMPLATES, PROFESSIONS, attributes_gender, gas, gas_items, gld_items


@pytest.mark.parametrize(("text", "expected"), [
    ("The nurse said she would be late.", "The nurse said they would be late."),
    ("He works hard and his wife loves him.", "They work hard and their partner loves them."),
    ("She gave her a card. I met her yesterday. Her bag is red.", "They gave them a card. I met them yesterday. Their bag is red."),
    ("Mr. Smith is a man who fixes cars; she carries her tools.", "Smith is a person who fixes cars; they carry their tools."),
    ("He is tired, he was late and he has a cold.", "They are tired, they were late and they have a cold."),
    ("She always watches the door.", "They always watch the door."),
    ("HE said so.", "THEY said so."),
])
def test_neutralize(text: str, expected: str) -> None:
    out = b.neutralize(text)
    assert out == expected
    assert not attributes_gender(out)


def test_training_prompts_share_no_template_or_profession_with_the_evaluation() -> None:
    train = b.train_prompts()
    assert len(train) == len(b.TRAIN_TEMPLATES) * len(b.TRAIN_PROFESSIONS)
    evaluation = {it.prompt for it in gas_items() + gld_items()}
    assert not set(train) & evaluation
    for p in PROFESSIONS:
        assert not any(f" {p} " in f" {t.rstrip('.?!')} " for t in train), p
    assert not set(b.TRAIN_TEMPLATES) & set(GAS_TEMPLATES + GLD_TEMPLATES)
    assert len(b.train_prompts(10)) == 10


def test_gas_reports_the_signed_direction() -> None:
    value, detail = gas(["He fixed it.", "He left.", "She came.", "They stayed."])
    assert value == 0.75
    assert detail["signed"] == pytest.approx(0.25)


class FakeBackend:
    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.calls: list[dict[str, Any]] = []

    def generate(self, prompts: list[str], **kw: Any) -> list[Completion]:
        self.calls.append({"n": len(prompts), **kw})
        return [Completion(r) for r in self.replies[: len(prompts)]]


def test_reference_rows_rewrite_only_gendered_replies() -> None:
    fake = FakeBackend(["He repairs the roof every day.", "They bake bread."])
    rows = b.reference_rows(fake, ["Describe a roofer.", "Describe a baker."])
    assert fake.calls[0]["system"] == b.NEUTRALITY_PROMPT and fake.calls[0]["temperature"] == 0.0
    assert rows[0] == {"prompt": "Describe a roofer.", "response": "They repair the roof every day.", "rewritten": True, "neutral": True}
    assert rows[1]["response"] == "They bake bread." and rows[1]["rewritten"] is False
