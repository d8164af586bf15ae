"""The HTTP decision service (`interlock serve`): FastAPI over the embedded engine."""
