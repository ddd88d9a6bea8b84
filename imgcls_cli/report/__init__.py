"""The HTML report of a run: one self-contained page (report.html in a train or eval run directory,
sweep_report.html in a sweep folder), written with the standard library and opened from file://.

page.py writes a run's page (write_run_report, write_report_safely), sweep.py a sweep's, rebuild.py is
`imgcls report PATH`. The engine imports page.py alone; this package's __init__ imports nothing.
"""
