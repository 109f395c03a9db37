"""GlobalPlatform host side: secure channels (SCP03, SCP02) and card content management commands."""
