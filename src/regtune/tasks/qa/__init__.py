"""Extractive QA (SQuAD-format files, TyDi QA GoldP): windows, spans, n-best and SQuAD v1.1 EM/F1."""
