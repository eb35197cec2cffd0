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
every step); integer arguments to calls and filters (``center(10**9)``) are capped at ``MAX_INT_ARGUMENT``.

Sizes are checked *before* an operation allocates (issue 18, row 7: ``join``, ``*``, ``translate``,
``replace``, ``format`` once reached 458 MB before a check after the fact refused them). The budget is
``MAX_OUTPUT_CHARS`` plus 8 x the prompt's own size, in characters. The rule, operation by operation:

* **Anything turned into text** (an output ``{{ x }}``, a ``~`` concatenation, the text a macro, a ``set``
  block or a ``filter`` block collects, every argument of a call or filter, which may print it) is *weighed*
  first: :func:`_measure` estimates the length of ``str(x)`` by walking lists, dicts and namespaces, and stops
  as soon as the budget is passed. So ``{{ [s] * 99999 }}`` or a list literal holding a long string 10,000
  times is refused before ``str()`` builds it.
* **Operations whose result is a product of their operands** are estimated from the operands: ``*``
  (length x count), ``str.join`` and ``|join`` (the parts plus separators), ``translate`` (length x the longest
  replacement), ``replace`` (occurrences x the new text), ``%``, ``|format``, ``str.format``/``format_map``
  (every field may print the widest argument, plus its width and precision), ``ljust``/``center``/``zfill``/
  ``expandtabs`` widths, ``indent``, ``wordwrap``, ``tojson`` indentation, ``urlize`` targets, ``sum`` of lists.
* **Operations bounded by a small factor** of their (already weighed) inputs (``upper``, ``escape``, ``tojson``
  without indentation, ...) run, and their result is measured before it is used.
* **Sums over the render**: everything output (at the top, and into macros and blocks, which collect it in
  lists joined only at their end) at most ``OUTPUT_FACTOR`` x the budget; every value operations build, kept or
  not, at most ``CREATED_FACTOR`` x the budget in bytes (``sys.getsizeof``: a list item costs its pointer), since
  a list literal can keep many results that are each within the budget.
  An iterator (``map``, ``select``) is weighed item by item as it is consumed; a text becomes a list of its
  characters only up to ``MAX_INT_ARGUMENT`` items (each item is an object of ~60 bytes).
* Filters are never evaluated while a template compiles (constant folding would build their results with no
  budget at all), and ``pprint`` and ``lipsum`` are not offered: no chat template uses them, and their output
  size (pprint aligns nested items under long keys) cannot be estimated cheaply.

Any breach, and any exception a template raises, is one TemplateRenderError; :func:`render_for_model` names the
model in it.
"""

from __future__ import annotations

import functools
import inspect
import re
import string
import sys
import time
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any

from jinja2 import nodes, pass_context, pass_environment, pass_eval_context
from jinja2.defaults import DEFAULT_FILTERS
from jinja2.filters import make_attrgetter
from jinja2.runtime import Undefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from .prompt import Prompt

MAX_TEMPLATE_CHARS = 256 * 1024       # real chat templates are under 20 KB
MAX_RENDER_STEPS = 250_000            # loop iterations + calls + filters per render; a real template needs hundreds
MAX_RENDER_SECONDS = 10.0             # wall-clock backstop for steps that are individually slow
MAX_OUTPUT_CHARS = 1024 * 1024        # plus 8 x the size of the prompt's texts
OUTPUT_FACTOR = 4                     # all output of a render, macros and blocks included: 4 x the limit
CREATED_FACTOR = 8                    # all values a render builds, kept or not: 8 x the limit
MAX_INT_ARGUMENT = 100_000            # widths, counts and repeats passed to calls and filters (= Jinja's MAX_RANGE)
_WIDE_FORMAT = re.compile(r"\d{6,}")  # a %- or {}-format width/precision of 100000 or more
_FIELD_SLACK = 320                    # what one format field may add besides its value: '%f' % 1e308 is 316 chars
_WITHHELD = ("pprint",)               # filters not offered (see the module docstring)


class TemplateRenderError(Exception):
    pass


class TemplateLimitError(TemplateRenderError):
    """A rendering bound was crossed (steps, time, size): the template is refused, not retried."""


# ------------------------------------------------------------------------------------ weighing values


def _quoted_length(text: str) -> int:
    """An upper bound of ``len(repr(text))``, as a string inside a list or dict prints; without building it.

    Printable text only gains quotes and backslashes; newlines, tabs and carriage returns become two
    characters; any other invisible character at most ten (``\\U000e0001``)."""
    extra = 2 + text.count("\\") + text.count("'")
    if text.isprintable():
        return len(text) + extra
    bare = text.replace("\n", "").replace("\t", "").replace("\r", "")
    if bare.isprintable():
        return 2 * len(text) - len(bare) + extra
    return 10 * len(text) + extra


def _measure(value: Any, limit: int) -> tuple[int, int, int]:
    """How ``str(value)`` would come out, estimated without building it: (characters, indentation units,
    largest integer). Indentation units are the sum of every nested item's depth (what ``tojson(indent=n)``
    multiplies by ``n``); the largest integer is what a ``{:{}}`` or ``%*s`` width could take from the value.

    The walk stops as soon as the characters pass ``limit``: every item visited adds at least one character,
    so weighing costs at most ``limit`` steps, whatever the value (a list holding itself included)."""
    if isinstance(value, str):
        return len(value), 0, 0
    if isinstance(value, Undefined):
        return 0, 0, 0
    chars = indent = largest = 0
    pending: list[tuple[Iterator[Any], int]] = []
    item, depth = value, 0
    while True:
        if isinstance(item, str):
            chars += _quoted_length(item) + (8 if isinstance(item, Markup) else 0)
        elif isinstance(item, (bytes, bytearray)):
            chars += 4 * len(item) + 3
        elif isinstance(item, bool) or item is None:
            chars += 5
        elif isinstance(item, int):
            chars += item.bit_length() * 31 // 100 + 2
            largest = max(largest, abs(item))
        elif isinstance(item, float):
            chars += 24
        elif isinstance(item, range):
            chars += 40
        elif isinstance(item, Undefined):
            chars += 9
        elif isinstance(item, Mapping):
            chars += 2 + (0 if type(item) is dict else len(type(item).__name__) + 2)
            pending.append((iter(_pairs(item)), depth + 1))
        elif isinstance(item, Namespace):
            chars += 13
            pending.append((iter(_pairs(item._Namespace__attrs)), depth + 1))  # type: ignore[attr-defined]
        elif isinstance(item, (list, tuple, set, frozenset, KeysView, ValuesView, ItemsView)):
            chars += 2 + (0 if type(item) in (list, tuple) else len(type(item).__name__) + 2)
            pending.append((iter(item), depth + 1))
        else:
            chars += 80  # functions, macros, loop contexts, cyclers, generators: a short fixed repr
        indent += depth
        if chars > limit:
            break
        while pending:
            iterator, depth = pending[-1]
            item = next(iterator, _END)
            if item is not _END:
                chars += 2  # the separator
                break
            pending.pop()
        else:
            break
    return chars, indent, largest


_END = object()


def _pairs(mapping: Mapping[Any, Any]) -> Iterator[Any]:
    for key, val in mapping.items():
        yield key
        yield val


_EMPTY_SIZES = {kind: sys.getsizeof(kind()) for kind in (str, bytes, list, tuple, dict)}


class RenderBudget:
    """What one render may still spend; raises TemplateRenderError when a limit is crossed."""

    def __init__(self, input_chars: int = 0) -> None:
        self.max_chars = MAX_OUTPUT_CHARS + 8 * input_chars
        self.emitted = 0  # characters output so far, at the top and into macros and blocks together
        self.created = 0  # bytes of every value operations built, kept or not
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
        """Measure a result that has been built (by an operation bounded by a small factor of its inputs), and
        count it: all values a render builds together, kept or not, are bounded too, since a list literal or a
        namespace can keep many results that are each within the limit."""
        if isinstance(value, (str, bytes, list, tuple, dict)):
            if len(value) > self.max_chars:
                raise TemplateLimitError(f"chat template builds a value of {len(value):,} characters/items, beyond "
                                          f"the limit of {self.max_chars:,}")
            # bytes beyond an empty value of the type: a list item costs its pointer, a wide character 4 bytes;
            # the fixed header of each object is left to the step limit, which bounds how many are made
            empty = next(size for kind, size in _EMPTY_SIZES.items() if isinstance(value, kind))
            self.created += max(sys.getsizeof(value) - empty, 0)
            if self.created > CREATED_FACTOR * self.max_chars:
                raise TemplateLimitError(f"chat template builds more than {CREATED_FACTOR * self.max_chars:,} bytes "
                                          f"of values in all ({CREATED_FACTOR} x the limit, counting every value "
                                          "it makes)")
        return value

    def planned(self, length: int, what: str) -> None:
        """Refuse an operation whose result would be ``length`` long, before it allocates."""
        if length > self.max_chars:
            raise TemplateLimitError(f"chat template asks for {what} of {length:,} characters/items, beyond the "
                                      f"limit of {self.max_chars:,}")

    def emit(self, value: Any) -> None:
        """An output value, weighed before it becomes text; all output of a render together is bounded too,
        since macros and ``set`` blocks collect theirs in lists that are joined only at their end."""
        chars = self.weigh(value)
        self.planned(chars, "an output value")
        self.emitted += chars
        if self.emitted > OUTPUT_FACTOR * self.max_chars:
            raise TemplateLimitError(f"chat template outputs more than {OUTPUT_FACTOR} x {self.max_chars:,} "
                                      "characters (the limit, counting what macros and blocks collect)")

    def weigh(self, value: Any) -> int:
        """The estimated length of ``str(value)`` (see :func:`_measure`); above the limit, the limit + 1."""
        return min(_measure(value, self.max_chars)[0], self.max_chars + 1)

    def shape(self, value: Any) -> tuple[int, int, int]:
        return _measure(value, self.max_chars)

    def printable(self, values: Iterable[Any], what: str) -> None:
        """Refuse values whose printed form alone would pass the limit (they may be turned into text)."""
        for value in values:
            self.planned(self.weigh(value), what)

    def drained(self, iterator: Iterable[Any], what: str) -> list[Any]:
        """An iterator (what ``map``, ``select``, ``batch`` return) as a list, weighed item by item as it is
        consumed: its items may be new values (``map('center', 99999)``), and a list of them may be kept."""
        items: list[Any] = []
        total = 0
        for item in iterator:
            total += self.weigh(item) + 2
            self.planned(total, what)
            items.append(item)
        return items

    def arguments(self, args: Iterable[Any]) -> None:
        for value in args:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
                raise TemplateLimitError(f"chat template passes {value:,} to a call or filter (at most "
                                          f"{MAX_INT_ARGUMENT:,} allowed)")

    def format_string(self, text: Any) -> None:
        if isinstance(text, bytes):
            text = text.decode("latin-1")
        if isinstance(text, str) and _WIDE_FORMAT.search(text):
            raise TemplateLimitError("chat template uses a format width or precision of 100000 or more")


# ------------------------------------------------------------------------------------ estimates, one per product


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)


def _printf_size(budget: RenderBudget, text: str | bytes, operand: Any) -> int:
    """The length ``text % operand`` can reach: each directive prints a value (each tuple item once; a mapping's
    items or a single value, any number of times) padded to its width and precision."""
    budget.format_string(text)
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    directives = [m for m in _PRINTF.finditer(text) if m.group(3) != "%"]
    if isinstance(operand, tuple):
        shapes = [budget.shape(value) for value in operand]
        values = sum(chars for chars, _, _ in shapes)
    else:
        shapes = [budget.shape(operand)]
        values = len(directives) * shapes[0][0]
    largest = max([largest for _, _, largest in shapes] + [0])
    total = len(text) + values
    for match in directives:
        width, precision = ((largest if group == "*" else int(group or 0)) for group in match.group(1, 2))
        total += width + precision + _FIELD_SLACK
        if total > budget.max_chars:
            break
    return total


def _str_format_size(budget: RenderBudget, text: str, values: list[Any]) -> int:
    """The length ``text.format(...)`` can reach: every field may print the widest argument (or a part of it),
    padded to the width and precision its spec gives, nested ``{}`` widths taken from the largest integer."""
    budget.format_string(text)
    shapes = [budget.shape(value) for value in values]
    widest = max([chars for chars, _, _ in shapes] + [0])
    largest = max([largest for _, _, largest in shapes] + [0])
    total = len(text)
    try:
        fields = [spec for _, name, spec, _ in string.Formatter().parse(text) if name is not None]
    except ValueError:
        return total  # the call itself raises the same error
    for spec in fields:
        spec = spec or ""
        total += widest + _FIELD_SLACK + sum(int(n) for n in re.findall(r"\d+", spec)) + spec.count("{") * largest
        if total > budget.max_chars:
            break
    return total


def _replace_size(text: str | bytes, old: str | bytes, new: str | bytes) -> int:
    occurrences = len(text) + 1 if len(old) == 0 else text.count(old)  # type: ignore[arg-type]
    return len(text) + occurrences * max(len(new) - len(old), 0)


def _translate_size(text: str | bytes, table: Any) -> int:
    if isinstance(table, Mapping):
        values: Iterable[Any] = table.values()
    elif isinstance(table, (str, bytes, list, tuple)):
        values = table
    else:
        return len(text)  # a range or something not subscriptable: at most one character per character
    longest = max((len(v) if isinstance(v, (str, bytes)) else 1 for v in values), default=1)
    return len(text) * max(longest, 1)


def _listed(value: Any) -> Any:
    """What a join or sum consumes, as a sequence that can be measured and then used (a dict: its keys).
    Iterators were drained, weighed, before (:meth:`RenderBudget.drained`)."""
    return value if isinstance(value, (str, bytes, list, tuple)) else list(value)


def _join_size(budget: RenderBudget, separator_chars: int, parts: Any) -> int:
    if isinstance(parts, (str, bytes)):
        return len(parts) + max(len(parts) - 1, 0) * separator_chars
    total = max(len(parts) - 1, 0) * separator_chars
    for part in parts:
        total += len(part) if isinstance(part, (str, bytes)) else budget.weigh(part)
        if total > budget.max_chars:
            break
    return total


_PADDING = {"ljust", "rjust", "center", "zfill"}


def _text_method(budget: RenderBudget, owner: str | bytes, method: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Estimate a str/bytes method's result before it runs; returns the arguments to call it with (a join's
    iterable as a list)."""
    first = args[0] if args else None
    if method in _PADDING and isinstance(first, int):
        budget.planned(max(len(owner), first), f"str.{method}")
    elif method == "expandtabs":
        size = first if isinstance(first, int) else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            budget.planned(len(owner) + tabs * max(size, 0),
                           "str.expandtabs")
    elif method == "replace" and len(args) >= 2 and all(isinstance(a, type(owner)) for a in args[:2]):
        budget.planned(_replace_size(owner, args[0], args[1]), "a replacement")
    elif method == "join" and args:
        parts = _listed(first)
        budget.planned(_join_size(budget, len(owner), parts), "str.join")
        return (parts, *args[1:])
    elif method == "translate" and args:
        budget.planned(_translate_size(owner, first), "str.translate")
    elif method in ("format", "format_map") and isinstance(owner, str):  # Jinja before 3.1.5 calls them here
        values = [*args, *kwargs.values()] if method == "format" else [first]
        budget.planned(_str_format_size(budget, owner, values), f"str.{method}")
    return args


def _filter_check(budget: RenderBudget, name: str, environment: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Estimate a filter's result from its (named) arguments before it runs; returns the arguments to call it
    with (a join's or sum's iterable as a list, an attribute already looked up)."""
    if name == "join":
        parts = _listed(params["value"])
        if params.get("attribute") is not None:
            parts = list(map(make_attrgetter(environment, params["attribute"]), parts))
            params["attribute"] = None
        params["value"] = parts
        budget.planned(_join_size(budget, budget.weigh(params.get("d", "")), parts), "a joined text")
    elif name == "replace":
        text, old, new = (str(params.get(key, "")) for key in ("s", "old", "new"))
        budget.planned(_replace_size(text, old, new), "a replacement")
    elif name == "format":
        operand = params.get("kwargs") or tuple(params.get("args", ()))
        budget.planned(_printf_size(budget, str(params["value"]), operand), "a formatted text")
    elif name == "indent":
        text, width = str(params["s"]), params.get("width", 4)
        pad = len(width) if isinstance(width, str) else abs(width) if isinstance(width, int) else 0
        budget.planned(len(text) + (text.count("\n") + 1) * pad, "an indented text")
    elif name == "wordwrap":
        text, width, wrap = str(params["s"]), params.get("width", 79), params.get("wrapstring")
        if isinstance(width, int):
            wrap_chars = len(wrap) if isinstance(wrap, str) else 2
            budget.planned(len(text) + (len(text) // max(width, 1) + 1) * wrap_chars, "a wrapped text")
    elif name == "tojson":
        indent = params.get("indent")
        pad = len(indent) if isinstance(indent, str) else abs(indent) if isinstance(indent, int) else 0
        chars, units, _ = budget.shape(params["value"])  # every item, and every closing bracket, on its own line
        budget.planned(chars + 2 * units * pad, "an indented JSON text")
    elif name == "urlize":
        text = str(params["value"])
        extra = sum(len(str(params.get(key) or "")) for key in ("target", "rel"))
        budget.planned(len(text) + (len(text) // 2 + 1) * extra, "a text with links")
    elif name == "sum":
        items = _listed(params["iterable"])
        if params.get("attribute") is not None:
            items = list(map(make_attrgetter(environment, params["attribute"]), items))
            params["attribute"] = None
        params["iterable"] = items
        start = params.get("start", 0)
        sizes = [len(item) for item in items if isinstance(item, (list, tuple))]
        if sizes or isinstance(start, (list, tuple)):
            total = sum(sizes) + (len(start) if isinstance(start, (list, tuple)) else 0)
            budget.planned(total, "a sum of lists")
            budget.planned(len(items) * total // 8, "the copying of a sum of lists")  # sum() copies every prefix
    return params


# ------------------------------------------------------------------------------------ the bounded environment
# The AST transformer routes every {% for %} iterable and every ``~`` concatenation through these two functions.
# They are referenced by import name, so a template cannot shadow them with {% set %}.


@pass_environment
def _counted_iteration(environment: _BoundedEnvironment, iterable: Any) -> Iterator[Any]:
    """Every loop step counted; the values of an iterator (not of a list: those exist already) weighed as they
    come, since ``loop.length`` keeps them all."""
    budget = environment.budget
    weighed, total = isinstance(iterable, Iterator), 0
    for value in iterable:
        budget.step()
        if weighed:
            total += budget.weigh(value) + 2
            budget.planned(total, "the values of a loop")
        yield value


@pass_eval_context
def _joined(eval_ctx: Any, parts: tuple[Any, ...]) -> str:
    """``a ~ b ~ c``: weighed before it is joined, then joined as Jinja joins it."""
    budget = eval_ctx.environment.budget
    total = 0
    for part in parts:
        total += budget.weigh(part)
        budget.planned(total, "a ~ concatenation")
    return budget.size(markup_join(parts) if eval_ctx.volatile or eval_ctx.autoescape else str_join(parts))


@pass_environment
def _checked_output(environment: _BoundedEnvironment, value: Any) -> Any:
    """Jinja's ``finalize``: every ``{{ value }}`` is weighed before it is turned into text."""
    environment.budget.emit(value)
    return value


_INTERNAL = (_counted_iteration, _joined)


class _GuardLoopsAndConcatenation(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _call(f"{__name__}._counted_iteration", node.iter, node.iter.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        parts = nodes.Tuple(node.nodes, "load", lineno=node.lineno)
        return _call(f"{__name__}._joined", parts, node.lineno)


def _call(import_name: str, argument: nodes.Node, lineno: int) -> nodes.Call:
    return nodes.Call(nodes.ImportedName(import_name, lineno=lineno), [argument], [], None, None, lineno=lineno)


def _guard_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` behind the budget. The guard takes Jinja's context and hands ``fn`` what it asked for: being
    context-dependent, no filter is evaluated at compile time, where no budget applies."""
    passed = getattr(getattr(fn, "jinja_pass_arg", None), "name", None)
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - every Jinja filter has one
        signature = None

    def guarded(context: Any, *args: Any, **kwargs: Any) -> Any:
        environment = context.environment
        budget = environment.budget
        budget.step()
        what = f"the input of the filter '{name}'"
        args = tuple(budget.drained(a, what) if isinstance(a, Iterator) else a for a in args)
        kwargs = {k: budget.drained(v, what) if isinstance(v, Iterator) else v for k, v in kwargs.items()}
        budget.arguments([*args, *kwargs.values()])
        budget.printable([*args, *kwargs.values()], what)
        if name in _ITEMIZING and args and isinstance(args[0], (str, bytes)) and len(args[0]) > MAX_INT_ARGUMENT:
            raise TemplateLimitError(f"chat template turns a text of {len(args[0]):,} characters into a list "
                                      f"with the filter '{name}' (at most {MAX_INT_ARGUMENT:,} items)")
        extra = {"context": (context,), "eval_context": (context.eval_ctx,),
                 "environment": (environment,)}.get(passed or "", ())
        if signature is not None and name in _ESTIMATED_FILTERS:
            bound = signature.bind(*extra, *args, **kwargs)
            params = _filter_check(budget, name, environment, dict(bound.arguments))
            bound.arguments.update(params)
            return budget.size(fn(*bound.args, **bound.kwargs))
        return budget.size(fn(*extra, *args, **kwargs))

    guarded = functools.wraps(fn)(guarded)
    guarded.__dict__.pop("jinja_pass_arg", None)
    return pass_context(guarded)


@functools.lru_cache(maxsize=1)
def _guarded_filters() -> dict[str, Callable[..., Any]]:
    """Jinja's filters behind the budget, built once: a guard finds the budget through its context, so the same
    guards serve every environment (one is made per compiled template)."""
    return {name: _guard_filter(name, fn) for name, fn in DEFAULT_FILTERS.items() if name not in _WITHHELD}


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus the budget: every call, filter, loop step, operator and output is
    counted and checked (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, budget: RenderBudget) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, finalize=_checked_output)
        self.budget = budget  # replaced before each render of a compiled template
        self.globals["raise_exception"] = _raise
        self.globals.pop("lipsum", None)  # lipsum(n, min, max) generates n x max words: no template needs it
        self.filters = dict(_guarded_filters())
        self.concat = self._concat  # type: ignore[assignment]  # the text of macros and blocks, joined

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        return _GuardLoopsAndConcatenation().visit(tree)

    def _concat(self, parts: Iterable[str]) -> str:
        """What a macro, a ``set`` block, a ``filter`` block or a call block collected, measured before it is
        joined into one string (each part was weighed when it was output; their sum was not)."""
        parts = parts if isinstance(parts, list) else list(parts)
        total = 0
        for part in parts:
            total += len(part) if isinstance(part, str) else self.budget.weigh(part)
        self.budget.planned(total, "a block's text")
        return self.budget.size("".join(parts))


    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = __self.budget
        budget.step()
        if not any(__obj is internal for internal in _INTERNAL):
            args = tuple(budget.drained(a, "an argument") if isinstance(a, Iterator) else a for a in args)
            kwargs = {k: budget.drained(v, "an argument") if isinstance(v, Iterator) else v for k, v in kwargs.items()}
            values = [*args, *kwargs.values()]
            budget.arguments(values)
            budget.printable(values, "an argument")
            owner, method = getattr(__obj, "__self__", None), getattr(__obj, "__name__", "")
            if isinstance(owner, (str, bytes)):
                args = _text_method(budget, owner, method, args, kwargs)
        return budget.size(SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text, is_map = value.__self__, value.__name__ == "format_map"  # str.format / format_map, however reached
        environment = self

        @functools.wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> Any:
            values = list(args[:1]) if is_map else [*args, *kwargs.values()]
            environment.budget.planned(_str_format_size(environment.budget, text, values), f"str.{value.__name__}")
            return wrapped(*args, **kwargs)

        return checked

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = self.budget
        budget.step()
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, (str, bytes, list, tuple)) and isinstance(count, int):
                    budget.planned(len(sequence) * max(count, 0), "a repeated value")
            if isinstance(left, int) and isinstance(right, int) and \
                    abs(left).bit_length() + abs(right).bit_length() > 64 * 1024:
                raise TemplateLimitError("chat template computes a product with a result too large to hold")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and \
                    right * max(abs(left).bit_length(), 1) > 64 * 1024:
                raise TemplateLimitError("chat template computes a power with a result too large to hold")
        elif operator == "+":
            if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
                budget.planned(len(left) + len(right), "a concatenation")
        elif operator == "%" and isinstance(left, (str, bytes)):
            budget.planned(_printf_size(budget, left, right), "a %-formatted text")
        return budget.size(super().call_binop(context, operator, left, right))


# Filters that make one item of every character of a text: an item is a string object of ~50-80 bytes where the
# character took 1-4, so a text becomes a list only up to the size of a range().
_ITEMIZING = frozenset({"list", "sort", "batch", "slice", "unique", "map", "select", "reject", "selectattr",
                        "rejectattr", "groupby"})
_ESTIMATED_FILTERS = frozenset({"join", "replace", "format", "indent", "wordwrap", "tojson", "urlize", "sum"})


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
    except Exception as exc:
        line = getattr(exc, "lineno", None)
        where = f" (template line {line})" if line else ""
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
        except Exception as exc:
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
