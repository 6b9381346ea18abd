"""Floor 1 of `pipeline`: pure helpers (untrusted text, redaction, riding out a database outage,
usage and pricing, JSON lines). They may import the standard library and Django's settings and database
layer, never `pipeline.models` or anything above it."""
