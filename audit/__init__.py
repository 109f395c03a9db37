"""Append-only, hash-chained audit log; alert rules; chain verification."""
