"""Repair strategies behind one interface, and the check-and-fix loop."""
