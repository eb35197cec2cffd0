"""Render a model-neutral Prompt to the exact text a model sees.

Why we render ourselves (instead of letting llama-cpp-python's chat handler do it): the rendered string is
stored with every generation, so a reader can see precisely what the model was asked, and its hash is part of
the evaluation identity. Chat models use the Jinja chat template embedded in their GGUF (or an override from
models.toml); templates that reject a system role get the system text merged into the first user turn, as the
CLUE reference does. Base models get plain text: system, then turns separated by blank lines.
"""

from __future__ import annotations

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .base import Prompt


class TemplateRenderError(Exception):
    pass


def _raise(message: str) -> None:
    raise TemplateRenderError(message)


def _messages(prompt: Prompt, with_system: bool) -> list[dict[str, str]]:
    turns: list[tuple[str, str]] = []
    for user, assistant in prompt.shots:
        turns += [("user", user), ("assistant", prompt.answer_prefix + assistant)]
    turns.append(("user", prompt.user))
    messages = [{"role": role, "content": content} for role, content in turns]
    if prompt.system:
        if with_system:
            messages.insert(0, {"role": "system", "content": prompt.system})
        else:
            messages[0] = {"role": "user", "content": prompt.system + "\n\n" + messages[0]["content"]}
    return messages


def render_chat(template: str, prompt: Prompt, *, bos_token: str = "", eos_token: str = "") -> str:
    """Render with the model's chat template, add the generation prompt, then the answer prefix."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    try:
        compiled = env.from_string(template)
    except TemplateError as exc:
        raise TemplateRenderError(f"chat template does not compile: {exc}") from None
    last_error: Exception | None = None
    for with_system in (True, False):
        try:
            text = compiled.render(messages=_messages(prompt, with_system), add_generation_prompt=True,
                                   bos_token=bos_token, eos_token=eos_token)
            return text + prompt.answer_prefix
        except (TemplateError, TemplateRenderError, TypeError) as exc:
            last_error = exc
            if not prompt.system:
                break
    raise TemplateRenderError(f"chat template failed to render: {last_error}")


def render_base(prompt: Prompt) -> str:
    """Plain-text prompt for base (non-chat) models: blocks separated by blank lines, then the prefix."""
    blocks = [prompt.system] if prompt.system else []
    for user, assistant in prompt.shots:
        blocks += [user, prompt.answer_prefix + assistant]
    blocks.append(prompt.user)
    return "\n\n".join(blocks) + "\n\n" + prompt.answer_prefix
