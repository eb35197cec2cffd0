"""Render a model-neutral Prompt to the exact text a model sees.

Why we render ourselves (instead of letting llama-cpp-python's chat handler do it): the rendered string is
stored with every generation, so a reader can see precisely what the model was asked, and its hash is part of
the evaluation identity. Chat models use the Jinja chat template embedded in their GGUF (or an override from
models.toml); templates that reject a system role get the system text merged into the first user turn, as the
CLUE reference does. Base models get plain text: system, then turns separated by blank lines.

Why bounded: a chat template is code from outside (a downloaded GGUF, a models.toml override). Jinja's sandbox
stops it from touching Python internals, but not from looping for hours or building gigabyte strings. Every
render therefore runs under a budget (:class:`RenderBudget`): loop iterations, calls and filter applications
count as steps (at most ``MAX_RENDER_STEPS``, and at most ``MAX_RENDER_SECONDS`` of wall-clock time, checked at
every step); the output and every intermediate string or list are capped at ``MAX_OUTPUT_CHARS`` plus 8 × the
prompt's own size; integer arguments to calls and filters (``center(10**9)``) are capped at
``MAX_INT_ARGUMENT``; operations that multiply sizes (``'x' * n``, ``replace``, ``%``/``format`` widths) are
checked *before* they allocate. Any breach, and any exception a template raises, is one TemplateRenderError.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import nodes, pass_environment
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .prompt import Prompt

MAX_TEMPLATE_CHARS = 256 * 1024       # real chat templates are under 20 KB
MAX_RENDER_STEPS = 250_000            # loop iterations + calls + filters per render; a real template needs hundreds
MAX_RENDER_SECONDS = 10.0             # wall-clock backstop for steps that are individually slow
MAX_OUTPUT_CHARS = 1024 * 1024        # plus 8 x the size of the prompt's texts
MAX_INT_ARGUMENT = 100_000            # widths, counts and repeats passed to calls and filters (= Jinja's MAX_RANGE)
_WIDE_FORMAT = re.compile(r"\d{6,}")  # a %- or {}-format width/precision of 100000 or more


class TemplateRenderError(Exception):
    pass


class TemplateLimitError(TemplateRenderError):
    """A rendering bound was crossed (steps, time, size): the template is refused, not retried."""


class RenderBudget:
    """What one render may still spend; raises TemplateRenderError when a limit is crossed."""

    def __init__(self, input_chars: int = 0) -> None:
        self.max_chars = MAX_OUTPUT_CHARS + 8 * input_chars
        self.steps = 0
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def step(self, count: int = 1) -> None:
        self.steps += count
        if self.steps > MAX_RENDER_STEPS:
            raise TemplateLimitError(f"chat template exceeds the rendering budget ({MAX_RENDER_STEPS:,} loop "
                                      "iterations and calls): a runaway loop or recursion")
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"chat template exceeds the rendering time limit ({MAX_RENDER_SECONDS:g} s)")

    def size(self, value: Any) -> Any:
        if isinstance(value, (str, list, tuple, dict)) and len(value) > self.max_chars:
            raise TemplateLimitError(f"chat template builds a value of {len(value):,} characters/items, beyond "
                                      f"the limit of {self.max_chars:,}")
        return value

    def planned(self, length: int, what: str) -> None:
        """Refuse an operation whose result would be ``length`` long, before it allocates."""
        if length > self.max_chars:
            raise TemplateLimitError(f"chat template asks for {what} of {length:,} characters/items, beyond the "
                                      f"limit of {self.max_chars:,}")

    def arguments(self, args: Iterable[Any]) -> None:
        for value in args:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
                raise TemplateLimitError(f"chat template passes {value:,} to a call or filter (at most "
                                          f"{MAX_INT_ARGUMENT:,} allowed)")

    def format_string(self, text: Any) -> None:
        if isinstance(text, str) and _WIDE_FORMAT.search(text):
            raise TemplateLimitError("chat template uses a format width or precision of 100000 or more")


# ------------------------------------------------------------------------------------ the bounded environment
# The AST transformer routes every {% for %} iterable and every ``~`` concatenation through these two functions.
# They are referenced by import name, so a template cannot shadow them with {% set %}.


@pass_environment
def _counted_iteration(environment: _BoundedEnvironment, iterable: Any) -> Iterator[Any]:
    budget = environment.budget
    for value in iterable:
        budget.step()
        yield value


@pass_environment
def _sized(environment: _BoundedEnvironment, value: Any) -> Any:
    return environment.budget.size(value)


class _GuardLoopsAndConcatenation(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _call(f"{__name__}._counted_iteration", node.iter, node.iter.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _call(f"{__name__}._sized", node, node.lineno)


def _call(import_name: str, argument: nodes.Expr, lineno: int) -> nodes.Call:
    return nodes.Call(nodes.ImportedName(import_name, lineno=lineno), [argument], [], None, None, lineno=lineno)


_STRING_AMPLIFIERS = {"ljust", "rjust", "center", "zfill"}


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus the budget: every call, filter, loop step and size-changing operator
    is counted and checked (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, budget: RenderBudget) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True)
        self.budget = budget  # replaced before each render of a compiled template
        self.globals["raise_exception"] = _raise
        self.globals.pop("lipsum", None)  # lipsum(n, min, max) generates n x max words: no template needs it
        self.filters = {name: self._guard_filter(name, fn) for name, fn in self.filters.items()}

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        return _GuardLoopsAndConcatenation().visit(tree)

    def _guard_filter(self, name: str, fn: Any) -> Any:
        environment = self

        @functools.wraps(fn)  # keeps jinja's pass_context/pass_environment markers
        def guarded(*args: Any, **kwargs: Any) -> Any:
            budget = environment.budget
            budget.step()
            budget.arguments([*args, *kwargs.values()])
            strings = [a for a in args if isinstance(a, str)]
            numbers = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
            if name == "format" and strings:
                budget.format_string(strings[0])
            elif name == "replace" and len(strings) >= 3:
                _check_replace(budget, strings[0], strings[1], strings[2])
            elif name == "indent" and strings:
                width = kwargs.get("width", numbers[0] if numbers else 4)
                if isinstance(width, str):
                    budget.planned(len(strings[0]) * (1 + len(width)), "an indented text")
                elif isinstance(width, int):
                    budget.planned(len(strings[0]) + (strings[0].count("\n") + 1) * abs(width), "an indented text")
            elif name == "wordwrap" and strings:
                width = kwargs.get("width", numbers[0] if numbers else 79)
                wrap = kwargs.get("wrapstring", strings[1] if len(strings) > 1 else "\n")
                if isinstance(width, int) and isinstance(wrap, str):
                    lines = len(strings[0]) // max(width, 1) + 1
                    budget.planned(len(strings[0]) + lines * len(wrap), "a wrapped text")
            return budget.size(fn(*args, **kwargs))

        return guarded

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (jinja's signature)
        budget = __self.budget
        budget.step()
        budget.arguments([*args, *kwargs.values()])
        owner, method = getattr(__obj, "__self__", None), getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if method in _STRING_AMPLIFIERS and args and isinstance(args[0], int):
                budget.planned(max(len(owner), args[0]), f"str.{method}")
            elif method == "expandtabs":
                size = args[0] if args and isinstance(args[0], int) else 8
                budget.planned(len(owner) + owner.count("\t") * max(size, 0), "str.expandtabs")
            elif method == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
                _check_replace(budget, owner, args[0], args[1])
            elif method == "join" and isinstance(args[0] if args else None, (list, tuple)):
                parts = args[0]
                budget.planned(len(owner) * len(parts) + sum(len(p) for p in parts if isinstance(p, str)),
                               "str.join")
        return budget.size(SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:  # str.format / format_map, however it is reached
            self.budget.format_string(value.__self__)
        return wrapped

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = self.budget
        budget.step()
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
                    budget.planned(len(sequence) * max(count, 0), "a repeated value")
            if isinstance(left, int) and isinstance(right, int) and \
                    abs(left).bit_length() + abs(right).bit_length() > 64 * 1024:
                raise TemplateLimitError("chat template computes a product with a result too large to hold")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and \
                    right * max(abs(left).bit_length(), 1) > 64 * 1024:
                raise TemplateLimitError("chat template computes a power with a result too large to hold")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                budget.planned(len(left) + len(right), "a concatenation")
        elif operator == "%" and isinstance(left, str):
            budget.format_string(left)
        return budget.size(super().call_binop(context, operator, left, right))


def _check_replace(budget: RenderBudget, text: str, old: str, new: str) -> None:
    occurrences = len(text) + 1 if old == "" else text.count(old)
    budget.planned(len(text) + occurrences * max(len(new) - len(old), 0), "a replacement")


def _raise(message: str) -> None:
    raise TemplateRenderError(message)


# ------------------------------------------------------------------------------------ public functions


def compile_chat_template(template: str, budget: RenderBudget | None = None) -> Any:
    """The compiled template, or TemplateRenderError with the reason (size, syntax and its line)."""
    if not isinstance(template, str):
        raise TemplateRenderError("chat template is not text")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateRenderError(f"chat template has {len(template):,} characters, more than the "
                                  f"{MAX_TEMPLATE_CHARS:,} allowed")
    env = _BoundedEnvironment(budget or RenderBudget())
    try:
        return env.from_string(template)
    except Exception as exc:  # noqa: BLE001 - syntax errors, and whatever else a hostile template provokes
        where = f" (template line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise TemplateRenderError(f"chat template does not compile: {_reason(exc)}{where}") from None


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


def _prompt_chars(prompt: Prompt, bos_token: str, eos_token: str) -> int:
    shots = sum(len(user) + len(assistant) + len(prompt.answer_prefix) for user, assistant in prompt.shots)
    return len(prompt.system) + len(prompt.user) + shots + len(bos_token) + len(eos_token)


def render_chat(template: str, prompt: Prompt, *, bos_token: str = "", eos_token: str = "") -> str:
    """Render with the model's chat template, add the generation prompt, then the answer prefix."""
    compiled = compile_chat_template(template)
    last_error: Exception | None = None
    for with_system in (True, False):
        budget = RenderBudget(_prompt_chars(prompt, bos_token, eos_token))
        compiled.environment.budget = budget
        try:
            return _render_bounded(compiled, budget, messages=_messages(prompt, with_system),
                                   add_generation_prompt=True, bos_token=bos_token,
                                   eos_token=eos_token) + prompt.answer_prefix
        except TemplateLimitError:
            raise  # a bound was hit: trying again without a system role would only spend it twice
        except Exception as exc:  # noqa: BLE001 - a template is untrusted code: any failure is one line
            last_error = exc
        if not prompt.system:
            break
    raise TemplateRenderError(f"chat template failed to render: {_reason(last_error)}")


def _render_bounded(compiled: Any, budget: RenderBudget, **context: Any) -> str:
    """Render chunk by chunk so that an oversized output is stopped as it grows, not after."""
    parts: list[str] = []
    total = 0
    for chunk in compiled.generate(**context):
        total += len(chunk)
        budget.planned(total, "an output")
        parts.append(chunk)
    return "".join(parts)


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, RecursionError):
        return "recursion too deep"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:300] or type(exc).__name__


def render_base(prompt: Prompt) -> str:
    """Plain-text prompt for base (non-chat) models: blocks separated by blank lines, then the prefix."""
    blocks = [prompt.system] if prompt.system else []
    for user, assistant in prompt.shots:
        blocks += [user, prompt.answer_prefix + assistant]
    blocks.append(prompt.user)
    return "\n\n".join(blocks) + "\n\n" + prompt.answer_prefix


def render_for_model(model_id: str, template: str | None, prompt: Prompt, *, bos_token: str = "",
                     eos_token: str = "") -> str:
    """What every engine sends: the chat template's rendering, or plain text for a model without one; a
    template that fails is one UserError naming the model. Shared so that a served model sees exactly the text
    the in-process model sees."""
    if template is None:
        return render_base(prompt)
    from ..errors import UserError

    try:
        return render_chat(template, prompt, bos_token=bos_token, eos_token=eos_token)
    except TemplateRenderError as exc:
        raise UserError(f"model '{model_id}': {exc}") from None
