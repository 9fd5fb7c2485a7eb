"""``llm-gym compare``: the method registry, presets, runs, backends, report and statistics."""
