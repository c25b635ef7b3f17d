"""Documents: files and folders ingested as records (`magray ingest`) and kept in step.

``walk`` finds the files, ``markdown`` splits them into sections, ``sources`` keeps each
record's file and lines, ``sync`` brings the memory in step with the files.
"""
