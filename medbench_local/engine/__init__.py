"""Engines turn a request into tokens. ``base`` holds the vocabulary, ``llama`` the llama.cpp adapter."""

from .base import Engine, Generation, GenerateRequest, Prompt

__all__ = ["Engine", "Generation", "GenerateRequest", "Prompt"]
