"""Prompt rendering: chat templates (with and without a system role) and plain-text base prompts."""

from __future__ import annotations

import pytest

from medbench_local.engine.base import Prompt
from medbench_local.engine.prompt_format import TemplateRenderError, render_base, render_chat

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NO_SYSTEM = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
             "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
             "{% else %}{{ raise_exception('no system role') }}{% endif %}{% endfor %}")

PROMPT = Prompt(system="Be brief.", user="Q2?", shots=(("Q1?", "yes"),), answer_prefix="Answer: ")


def test_chat_template_with_system_role() -> None:
    text = render_chat(CHATML, PROMPT)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ1?<|im_end|>\n"
                    "<|im_start|>assistant\nAnswer: yes<|im_end|>\n<|im_start|>user\nQ2?<|im_end|>\n"
                    "<|im_start|>assistant\nAnswer: ")


def test_template_without_system_role_gets_system_merged_into_first_user_turn() -> None:
    text = render_chat(NO_SYSTEM, PROMPT, bos_token="<s>", eos_token="</s>")
    assert text == "<s>[INST] Be brief.\n\nQ1? [/INST]Answer: yes</s>[INST] Q2? [/INST]Answer: "


def test_broken_template_is_a_clear_error() -> None:
    with pytest.raises(TemplateRenderError, match="does not compile"):
        render_chat("{% for %}", PROMPT)
    with pytest.raises(TemplateRenderError, match="failed to render"):
        render_chat("{{ raise_exception('never') }}", PROMPT)


def test_templates_run_sandboxed() -> None:
    with pytest.raises(TemplateRenderError):
        render_chat("{{ ''.__class__.__mro__[1].__subclasses__() }}", PROMPT)


def test_base_prompt_is_plain_text_blocks() -> None:
    assert render_base(PROMPT) == "Be brief.\n\nQ1?\n\nAnswer: yes\n\nQ2?\n\nAnswer: "
    assert render_base(Prompt(system="", user="Q")) == "Q\n\n"
