"""Notifications to people (issue 17): the rows the store queued, sent through Apprise with retries.

:mod:`vmond.notify.deliver` wraps Apprise (synchronous; run in a thread); :mod:`vmond.notify.sender` is the
background service that takes due rows, sends them off the event loop and records the outcome through the seam.
"""
