"""Generative QA with causal LMs: prompt, answer tokens, greedy decoding, official EM/F1."""
