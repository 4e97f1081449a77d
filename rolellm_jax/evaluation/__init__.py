"""Evaluation: Rouge-L, scoring, the benchmark run, the GPT judge."""
