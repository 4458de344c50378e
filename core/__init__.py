"""The shared base: record schema, version store, workspace and errors."""
