"""Configuration, read and validated before any model loads: the run's options (``run.py``), thresholds files,
question banks, model cards, safetensors headers, and the YAML/JSON-Schema helpers they share."""
