"""Reporting: the sweep report, and the plotting and HTML helpers every page shares."""
