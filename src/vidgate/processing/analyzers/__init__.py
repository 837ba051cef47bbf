"""One analyzer per concern; each works on plain arrays or an open container."""
