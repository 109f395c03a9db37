"""Virtual smart cards (JCOP 4 / GlobalPlatform, DESFire EV1/EV2/EV3) and the vpcd bridge.

The card side is written independently of `cardproto`'s host side so that one
shared mistake cannot make both agree; it imports nothing from Django, Celery,
the CMS apps or `cardproto`.
"""
