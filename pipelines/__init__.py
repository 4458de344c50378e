"""Pipelines that bring records in (import) or take them out (export); generators land here too."""
