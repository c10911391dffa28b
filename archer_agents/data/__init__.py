"""Episodes as data: the schema, the JSONL episode logs, and statistics over them."""
