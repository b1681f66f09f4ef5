"""LLM judges: prompt builders and robust parsers over the one LLM client.

Each judge module exposes `build_prompt(...) -> messages` and `parse(text, ...) -> verdict
| ParseFailure` as plain functions (prompt texts live in `resources/prompts/judges/`), so
data generation (`drover generate feedback|rank`) and evaluation (`drover judge`) share
them. Keep this package import-light: no torch, no HTTP clients at import time.
"""
