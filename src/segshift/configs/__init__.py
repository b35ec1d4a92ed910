"""Packaged YAML defaults: ``base.yaml`` and one ``methods/<name>.yaml`` per method."""
