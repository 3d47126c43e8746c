"""Tracked runs -> what people read: Table 1, paired differences, reference points, figures, the judge audit.

Reads MLflow runs written by culturealign.tracking (by their params, metrics and artifacts only), so it
works on any store that holds them, local or remote. Nothing here sends a model request.
"""
