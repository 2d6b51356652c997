"""rich renderables for the terminal (tables and live lines, no logic)."""
