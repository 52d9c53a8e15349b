"""The bundled tiny coder: its build and its progress display."""
