"""Prompts and their rendering, below the engines: the model-neutral ``Prompt`` (prompt.py) and how it becomes
the exact text a model sees (prompt_format.py: the GGUF's chat template in a bounded Jinja sandbox, or plain
text for base models).

Why a package of its own: rendering is needed by the engines (every request), by modelfiles (a chat template
must render before a run starts), by config (a chat_template override must compile) and by tasks and analysis.
Inside engine/ it made modelfiles import engine while engine imports modelfiles; here it depends on nothing of
medbench_local but ``errors`` (tests/test_layering.py keeps it so).
"""

from .prompt import Prompt

__all__ = ["Prompt"]
