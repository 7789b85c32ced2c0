"""Digit Lab's Streamlit dashboard: a thin UI over `core` (see app.py for the router)."""
