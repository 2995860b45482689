"""From records to decisions: paired statistics (``stats.py``), confidence sequences (``sequential.py``), the gate
over every item (``gate.py``) and the persona verdict over the self-knowledge tasks (``verdict.py``)."""
