"""Placeholder replaced below."""
def write_report(targets, results, path):
    pass
