"""Tracking: where runs are written (`store`, MLflow) and the names they are written under (`names`).

A leaf: it imports only the spec and the errors. The application layer decides what to log and when;
the report reads runs back through the same names.
"""
