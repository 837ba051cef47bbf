"""Checks an upload must pass: limits, the filename policy, the first bytes, the structure walk,
the probe in its child and the malware scan (``pipeline.FileValidator`` runs them in order).

Nothing is imported here: the probe's warm server imports ``validation.probe`` (and so this
package) in a process every probe child is forked from, and it should hold only PyAV; settings
and pydantic there were 23 MiB of its 55 (issue 17)."""
