"""Tasks: the task contract and registry (`base`), one module per task, and what they share."""
