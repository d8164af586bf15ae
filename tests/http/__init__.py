"""Tests of the HTTP service (`interlock serve`)."""
