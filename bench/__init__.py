"""Benchmark of the CDS service against a floor (a Flask app that only parses the body).

``make bench`` (``python -m bench``): see bench/run.py and the README, "Performance".
"""
