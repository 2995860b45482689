"""What a run shows: the terminal summary (``text.py``), the evidence record (``evidence.py``) and its HTML page
(``html.py``)."""
