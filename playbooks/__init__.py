"""Playbooks: YAML data and Jinja2 templates for the lifecycle phases."""
