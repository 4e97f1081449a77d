"""The Hub release: build, card, verify, publish."""
