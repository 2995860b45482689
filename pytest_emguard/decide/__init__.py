"""From records to decisions: paired statistics (``stats.py``), the group-sequential design of ``--em-sequential`` (``sequential.py``), the gate
over every item (``gate.py``) and the persona verdict over the self-knowledge tasks (``verdict.py``)."""
