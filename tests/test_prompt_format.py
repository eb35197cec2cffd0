"""Prompt rendering: chat templates (with and without a system role) and plain-text base prompts."""

from __future__ import annotations

import pytest

from medbench_local.prompting import Prompt
from medbench_local.prompting.prompt_format import TemplateRenderError, render_base, render_chat

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


# Hostile chat templates (issue 10, class 8): each is stopped by the render budget with one line, quickly and
# without building the huge value; a template is code from outside (a GGUF, a models.toml override).
HOSTILE_TEMPLATES = [
    ("nested loops", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "exceeds the rendering budget"),
    ("macro recursion fan-out", "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}"
                                "{{ f(60) }}", "exceeds the rendering (budget|time)"),
    ("endless macro recursion", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion too deep"),
    ("endless recursive loop", "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "recursion too deep"),
    ("repeated string", "{{ 'x' * 1000000000 }}", "asks for a repeated value"),
    ("repeated list", "{{ ([1] * 1000000000)|length }}", "asks for a repeated value"),
    ("doubling by ~", "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                      "{% endfor %}", "asks for a ~ concatenation"),
    ("doubling by +", "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
                      "{% endfor %}", "asks for a concatenation"),
    ("output growing", "{% for i in range(100000) %}{{ 'x'.ljust(99999) }}{% endfor %}", "asks for an output"),
    ("padding filter", "{{ 'x'|center(1000000000) }}", "passes 1,000,000,000"),
    ("padding method", "{{ 'x'.ljust(1000000000) }}", "passes 1,000,000,000"),
    ("range beyond the sandbox", "{{ range(10**9)|list }}", "passes 1,000,000,000"),
    ("% width", "{{ '%999999999s' % 'x' }}", "format width"),
    ("format width", "{{ '{:>999999999}'.format(1) }}", "format width"),
    ("format filter width", "{{ '%999999999s'|format('x') }}", "format width"),
    ("replace amplification", "{% set s = 'a'.ljust(90000, 'a') %}{{ s.replace('a', s) }}", "a replacement"),
    ("replace filter amplification", "{% set s = 'a'.ljust(90000, 'a') %}{{ s|replace('a', s) }}", "a replacement"),
    ("indent amplification", "{% set s = '\n'.join(['a'] * 90000) %}{{ s|indent(99999) }}", "an indented text"),
    ("wordwrap amplification", "{% set s = 'a'.ljust(90000, 'a') %}{{ s|wordwrap(1, true, 'x'.ljust(90000)) }}",
     "a wrapped text"),
    ("join amplification", "{{ 'x'.ljust(90000).join(['a'] * 90000) }}", "str.join"),
    ("huge power", "{{ 2 ** 1000000 }}", "a power"),
    ("squaring", "{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
     "a product"),
    ("lipsum", "{{ lipsum(100000, false, 100000, 100000) }}", "'lipsum' is undefined"),
    ("python internals", "{{ ''.__class__.__mro__ }}", "unsafe"),
]


@pytest.mark.parametrize("template, expected", [(t, e) for _, t, e in HOSTILE_TEMPLATES],
                         ids=[name for name, _, _ in HOSTILE_TEMPLATES])
def test_hostile_templates_fail_in_one_line_within_the_budget(template: str, expected: str) -> None:
    import tracemalloc

    measure = "budget" not in expected and "recursion" not in expected  # tracing slows the step-bound cases 4x
    if measure:
        tracemalloc.start()
    try:
        with pytest.raises(TemplateRenderError, match=expected) as caught:
            render_chat(template, PROMPT)
        peak = tracemalloc.get_traced_memory()[1] if measure else 0
    finally:
        tracemalloc.stop()
    assert "\n" not in str(caught.value)
    assert peak < 64 * 1024 * 1024, f"{peak:,} bytes allocated"


def test_a_template_override_is_compiled_when_models_toml_is_read(tmp_path) -> None:
    from medbench_local.config import load_config
    from medbench_local.errors import ConfigError

    path = tmp_path / "models.toml"
    path.write_text('[models.m]\nrole = "general"\npath = "m.gguf"\nchat_template = "{% if %}"\n')
    with pytest.raises(ConfigError, match=r"models.toml:4: models.m.chat_template: chat template does not compile"):
        load_config(path)


def test_loop_helpers_keep_their_meaning_under_the_budget() -> None:
    template = ("{% for m in messages %}{{ loop.index }}/{{ loop.length }}{{ '|' if not loop.last }}"
                "{% else %}none{% endfor %}{% for x in [] %}{% else %}-empty{% endfor %}")
    assert render_chat(template, PROMPT) == "1/4|2/4|3/4|4/4-emptyAnswer: "
