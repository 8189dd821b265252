"""Sentence and sentence-pair classification: TSV/CSV/JSONL reader, labels, accuracy and macro-F1."""
