"""User-facing surfaces: the CLI (and, from the app issue on, the Streamlit app)."""
