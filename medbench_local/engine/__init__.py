"""Engines turn a request into tokens. ``base`` holds the vocabulary, ``llama`` the llama.cpp adapter."""

from .base import ContinuationScore, Engine, GenerateRequest, Generation, LoglikelihoodRequest, Loglikelihoods, Prompt

__all__ = ["ContinuationScore", "Engine", "Generation", "GenerateRequest", "LoglikelihoodRequest", "Loglikelihoods",
           "Prompt"]
